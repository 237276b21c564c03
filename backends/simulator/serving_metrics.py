"""Per-request serving figures from a timeline (schedules emitted by the serving loop).

Each iteration of `meta.serving.batches` covers a contiguous op range; it ends when its last
foreground op (token >= 0; background prefetches and evictions excluded) ends and starts when
its first foreground op starts. A request's first token is out when the iteration holding the
last chunk of its prompt ends, each further token when its decode iteration ends. Figures:
queueing delay (first iteration's start - arrival), TTFT (first token - arrival), TPOT (mean
gap between its later tokens, as vLLM's benchmark defines it), inter-token latencies (every
gap), end to end (last token - arrival). Throughput: output tokens / (last token - first
arrival). Goodput (`summary` with an SLO): the requests meeting it, per second and as tokens/s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ndpc.backends.schedule import Schedule
from ndpc.ir.diagnostics import NdpcError

PERCENTILES = (50, 90, 99)


def request_figures(schedule: Schedule, start: np.ndarray, end: np.ndarray) -> dict[str, Any]:
    """{"requests": [per-request dict], "itl": [every inter-token latency]} for a serving
    schedule (see the module docstring). A malformed `meta.serving` (a hand-edited file) is an
    NdpcError naming the field."""
    try:
        return _request_figures(schedule, start, end)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise NdpcError(
            f"invalid schedule: meta.serving is malformed ({type(err).__name__}: "
            f"{err}); it is written by the serving loop, docs/schedule.md"
        ) from None


def _request_figures(schedule: Schedule, start: np.ndarray, end: np.ndarray) -> dict[str, Any]:
    serving = schedule.meta["serving"]
    batches = serving["batches"]
    fg = schedule.token >= 0
    b_end = np.zeros(len(batches))
    b_start = np.zeros(len(batches))
    for k, row in enumerate(batches):
        lo, hi = int(row[1]), int(row[2])
        if not 0 <= lo < hi <= len(schedule):
            raise ValueError(f"batches[{k}] covers ops [{lo}, {hi}) of {len(schedule)}")
        mine = fg[lo:hi]
        b_end[k] = float(end[lo:hi][mine].max()) if mine.any() else float(end[lo:hi].max())
        b_start[k] = float(start[lo:hi][mine].min()) if mine.any() else float(start[lo:hi].min())
    first_batch: dict[int, int] = {}
    first_token: dict[int, float] = {}
    tokens: dict[int, list[float]] = {}
    for k, row in enumerate(batches):
        for req, phase, _first, _n in row[5]:
            first_batch.setdefault(req, k)
            if phase == 0:
                first_token[req] = b_end[k]  # the last prompt chunk's iteration wins
            else:
                tokens.setdefault(req, []).append(b_end[k])
    out, itl = [], []
    for rid, arrival, prompt, _decode in serving["requests"]:
        times = tokens.get(rid, [])
        if rid not in first_batch:
            raise ValueError(f"request {rid} is in no iteration")
        if prompt > 0:
            ft = first_token[rid]
        else:
            ft, times = times[0], times[1:]
        gaps = np.diff(np.concatenate([[ft], times])) if times else np.zeros(0)
        itl.extend(gaps.tolist())
        last = times[-1] if times else ft
        out.append({
            "request": int(rid),
            "arrival_s": float(arrival),
            "prompt_tokens": int(prompt),
            "output_tokens": int(len(times) + 1),
            "queue_s": float(max(0.0, b_start[first_batch[rid]] - arrival)),
            "ttft_s": float(ft - arrival),
            "tpot_s": float(gaps.mean()) if len(gaps) else 0.0,
            "e2e_s": float(last - arrival),
            "finish_s": float(last),
        })  # fmt: skip
    return {"requests": out, "itl": itl}


def _pcts(values, name: str) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    out = {f"{name}_p{p}_s": float(np.percentile(arr, p)) if len(arr) else 0.0 for p in PERCENTILES}
    out[f"{name}_mean_s"] = float(arr.mean()) if len(arr) else 0.0
    return out


def summary(figures: dict[str, Any], slo_ttft_s: float | None = None,
            slo_tpot_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Aggregates over requests: percentiles of TTFT, TPOT, ITL, e2e and queueing, throughput
    and (with an SLO) goodput. Keys end in _s (seconds), _tok_s or _req_s (per second)."""
    reqs = figures["requests"]
    out: dict[str, Any] = {"requests_served": len(reqs)}
    for key in ("ttft", "tpot", "e2e", "queue"):
        out.update(_pcts([r[f"{key}_s"] for r in reqs], key))
    out.update(_pcts(figures["itl"], "itl"))
    begin = min((r["arrival_s"] for r in reqs), default=0.0)
    finish = max((r["finish_s"] for r in reqs), default=0.0)
    span = finish - begin
    tokens = sum(r["output_tokens"] for r in reqs)
    out["makespan_s"] = span
    out["output_tokens"] = tokens
    out["throughput_tok_s"] = tokens / span if span > 0 else 0.0
    out["throughput_req_s"] = len(reqs) / span if span > 0 else 0.0
    if slo_ttft_s is not None or slo_tpot_s is not None:
        good = [
            r for r in reqs
            if (slo_ttft_s is None or r["ttft_s"] <= slo_ttft_s)
            and (slo_tpot_s is None or r["tpot_s"] <= slo_tpot_s)
        ]  # fmt: skip
        out["slo"] = {"ttft_s": slo_ttft_s, "tpot_s": slo_tpot_s}
        out["slo_attained"] = len(good) / len(reqs) if reqs else 0.0
        out["goodput_req_s"] = len(good) / span if span > 0 else 0.0
        out["goodput_tok_s"] = sum(r["output_tokens"] for r in good) / span if span > 0 else 0.0
    return out
