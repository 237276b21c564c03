"""Serving studies: latency against offered load per policy, batch-size scans, prefetch budget
under load. `load_cases` makes the runs (one trace per arrival rate, same seed otherwise),
`load_plot` draws TTFT/TPOT p99 and throughput against the arrival rate, one line per policy.
Driven by bench/serving_study.py, which writes docs/results/serving/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ndpc.backends.serving import ServingConfig
from ndpc.compiler import zoo
from ndpc.compiler.experiments.optimum import SERVING_KEYS
from ndpc.compiler.experiments.plots import _legend_outside, _pyplot, _save
from ndpc.compiler.experiments.runner import Case
from ndpc.traces.format import save_trace
from ndpc.traces.generate import arrival_times, generate_trace


def serving_trace(model: str, requests: int, prompt: int, output: int, rate: float, seed: int,
                  path: Path, arrival: str = "poisson") -> str:  # fmt: skip
    """Write a serving trace (`requests` of `prompt` + `output` tokens arriving at `rate`/s)."""
    cfg = zoo.get_model(model)
    trace = generate_trace(cfg.moe_layers, cfg.experts, cfg.top_k, prompt + output - 1, prompt,
                           seed, requests=requests, model=cfg.name,
                           shared_experts=cfg.shared_experts)  # fmt: skip
    meta = replace(trace.meta, arrivals=arrival_times(requests, rate, seed, arrival),
                   params={**trace.meta.params, "arrival_rate": rate, "arrival": arrival})  # fmt: skip
    save_trace(replace(trace, meta=meta), path)
    return str(path)


def load_cases(model: str, policies: Sequence[str], rates: Sequence[float], traces: dict[float, str],
               config: ServingConfig, overrides: Sequence[str] = (),
               slo: tuple[float | None, float | None] = (None, None)) -> list[Case]:  # fmt: skip
    """One case per (rate, policy)."""
    return [
        Case(model, "rtx5080-ndp", traces[rate], policy, tuple(overrides), serving=config, slo=slo,
             tags={"arrival_rate": rate, "max_batch": config.max_batch})
        for rate in rates
        for policy in policies
    ]  # fmt: skip


def serving_row(row: dict[str, Any]) -> dict[str, Any]:
    """The serving figures of one result row, flat (no per-request list)."""
    out = {k: row.get(k) for k in ("name", "model", "arrival_rate", "max_batch", "budget_gib", "memory")
           if k in row}  # fmt: skip
    if "error" in row:
        return {**out, "error": row["error"]}
    sv = row["serving"]
    out.update({k: v for k, v in sv.items() if k != "requests"})
    out["gpu_busy"], out["ndp_busy"] = row["gpu_busy"], row["ndp_busy"]
    out["host_link_bytes"] = row["host_link_bytes"]
    for key in (*SERVING_KEYS, "gap_to_optimum"):  # docs/optimum.md §7
        if key in row:
            out[key] = row[key]
    out["emit"] = row.get("emit", {})
    return out


def load_plot(rows: Sequence[dict[str, Any]], title: str, path: str | Path,
              x: str = "arrival_rate", xlabel: str = "offered load (requests/s)") -> None:  # fmt: skip
    """Three panels against `x`: TTFT p99, TPOT p99 and throughput, one line per policy."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("ttft_p99_s", "TTFT p99 (s)"), ("tpot_p99_s", "TPOT p99 (s)"),
              ("throughput_tok_s", "throughput (output tokens/s)"))  # fmt: skip
    names = list(dict.fromkeys(r["name"] for r in rows))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name in names:
            pts = sorted((r[x], r[key]) for r in rows if r["name"] == name and key in r)
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        if key != "throughput_tok_s":
            ax.set_yscale("log")
    axes[0].set_title(title, fontsize=10, loc="left")
    _legend_outside(axes[-1])
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
