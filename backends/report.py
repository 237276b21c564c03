"""Human-readable and JSON forms of a simulation report (`SimResult`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.3f} GB"


def finite(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None (strict JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def json_text(data: Any, indent: int | None = 1) -> str:
    """Strict, deterministic JSON (sorted keys, no NaN/Infinity) of plain data."""
    return json.dumps(finite(data), indent=indent, sort_keys=True, allow_nan=False)


def check_json(report) -> dict[str, Any]:
    """The independent checker's verdict (a `CheckReport`) as plain data."""
    return {
        "ok": report.ok,
        "violations": sum(report.counts.values()),
        "counts": {rule: n for rule, n in report.counts.items() if n},
        "examples": {rule: list(msgs) for rule, msgs in report.violations.items() if msgs},
    }


def report_doc(result, meta: Mapping[str, Any], check=None, *, include_steps: bool = True,
               optimum: Mapping[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """The one JSON shape of `ndpc run --json` and `ndpc simulate --json / -o` (docs/simulator.md):
    `schedule` (the schedule header's meta), `result` (`SimResult.to_json()`), `check` (the
    checker's verdict, null when it did not run) and `optimum` (the problem-level bound and the
    gap to it, docs/optimum.md; null in `simulate`, which has no model or trace to bound)."""
    data: dict[str, Any] = result.to_json()
    if not include_steps:
        data["bound"] = {k: v for k, v in data["bound"].items() if k != "steps"}
    return {
        "schedule": {k: meta[k] for k in sorted(meta)},
        "result": data,
        "check": None if check is None else check_json(check),
        "optimum": None if optimum is None else {k: optimum[k] for k in sorted(optimum)},
    }


def report_json(result, *, include_steps: bool = True) -> str:
    """Deterministic strict JSON text of `result.to_json()` (sorted keys)."""
    data: dict[str, Any] = result.to_json()
    if not include_steps:
        data["bound"] = {k: v for k, v in data["bound"].items() if k != "steps"}
    return json_text(data)


def report_text(result) -> str:
    """A short table of the headline numbers, utilisation and the bound."""
    r = result
    lines = [
        f"target {r.target}: {r.ops} ops, {r.requests} request(s), {r.decode_tokens} decode tokens (engine: {r.engine})",
        f"  time to first token   {_ms(r.ttft_s)}",
        f"  time per output token mean {_ms(r.tpot_mean_s)}  p50 {_ms(r.tpot_p50_s)}  p99 {_ms(r.tpot_p99_s)}",
        f"  end to end            {_ms(r.e2e_s)}",
        f"  own-work bound        {_ms(r.bound_s)}  (binding: {r.bound['binding_resource']}; "
        f"critical path {_ms(r.bound['critical_path_s'])})",
        f"  packing efficiency    {r.efficiency:.3f}  (own-work bound / end to end: how well the "
        "schedule packs its own work, not its distance to the best schedule)",
        "  busy:",
    ]
    for name, frac in r.busy.items():
        extra = f"  {_gb(r.link_bytes[name])} moved" if name in r.link_bytes else ""
        lines.append(f"    {name:10s} {frac * 100:6.2f} %  ({_ms(r.busy_s[name])}){extra}")
    if r.ndp_busy_s:
        lines.append(f"  NDP busy std across units: {r.ndp_busy_std * 100:.2f} % points")
    lines.append(
        f"  prefetch: {r.prefetch_hits} hits, {r.prefetch_misses} misses, {_gb(r.prefetch_wasted_bytes)} wasted"
    )
    e = getattr(r, "energy", None)
    if e:
        per = e["energy_per_token_j"]
        lines.append(
            f"  energy                {e['energy_j']:.3f} J ({e['dynamic_j']:.3f} dynamic, {e['static_j']:.3f} static); "
            + (f"{per:.4f} J/token, {e['tokens_per_j']:.3f} tokens/J" if per else "no tokens")
        )
    return "\n".join(lines)


def report_steps(result, limit: int = 20) -> str:
    """A table of token steps: duration, physical floor and the resource setting the floor.

    Shows the first `limit` steps and the slowest `limit` decode steps (all when there are few).
    """
    st = result.bound["steps"]
    n = len(st["token"])
    rows = list(range(min(limit, n)))
    decode = [i for i in range(n) if st["phase"][i] == 1]
    slow = sorted(decode, key=lambda i: (-st["time_s"][i], i))[:limit]
    chosen = sorted(set(rows) | set(slow))
    lines = [
        f"{'request':>7} {'token':>6} {'phase':7} {'time':>11} {'floor':>11} {'floor/time':>10}  binding"
    ]
    for i in chosen:
        took, floor = st["time_s"][i], st["floor_s"][i]
        ratio = f"{floor / took:10.3f}" if took > 0 else f"{'-':>10}"
        phase = "prefill" if st["phase"][i] == 0 else "decode"
        lines.append(
            f"{st['request'][i]:>7} {st['token'][i]:>6} {phase:7} {_ms(took):>11} {_ms(floor):>11} {ratio}  {st['binding'][i]}"
        )
    if len(chosen) < n:
        lines.append(f"({n - len(chosen)} more steps in the JSON report: bound.steps)")
    return "\n".join(lines)
