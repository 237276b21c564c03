"""Run (model, target, units, policy) cases: compile, simulate, check, and reduce to one row.

A `Case` names everything one run needs; `run_case` returns a plain dict (a *row*) with the
figures `ndpc compare` and `ndpc reproduce` report, or an `error` when the case cannot run (e.g.
the experts do not fit the NDP units). `run_cases` runs many, in worker processes, in order.
Rows carry no wall-clock figures, so the same cases give byte-identical JSON.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndpc.backends.check import check_timeline
from ndpc.backends.report import check_json
from ndpc.backends.simulator import simulate
from ndpc.backends.simulator.serving_metrics import summary
from ndpc.compiler.cliutil import TIMELINE_OPS, output_file, write_timeline_file
from ndpc.compiler.commands.compile import compile_schedule
from ndpc.compiler.experiments.optimum import attach_optimum, serving_optimum
from ndpc.compiler.passes.fiddler_profile import ORACLE_CALIB
from ndpc.compiler.policies import get_policy
from ndpc.ir.attrs import DispatchRule
from ndpc.ir.diagnostics import NdpcError

BASELINE = "monde"  # the paper's main baseline: every speedup is relative to it
HOST_LINKS = ("pcie.h2d", "pcie.d2h")


@dataclass(frozen=True)
class Case:
    """One run: a model on a target (with `--set` overrides) over a trace with one policy."""

    model: str
    target: str
    trace: str
    policy: str
    overrides: tuple[str, ...] = ()
    calib: str = ""  # Fiddler's calibration trace / popularity file
    pipeline: str = ""  # explicit pipeline instead of the policy's (sweeps)
    label: str = ""  # the row's name (default: the policy)
    timeline: str = ""  # write a Chrome-trace timeline here
    timeline_name: str = ""  # how messages name it (default: `timeline`; differs for a temporary)
    check: bool = False  # re-verify the timeline with the independent checker
    serving: Any = None  # a ServingConfig (None: batch 1 unless the trace has arrivals)
    slo: tuple[float | None, float | None] = (None, None)  # (TTFT, TPOT) seconds, for goodput
    tags: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return self.label or self.policy


def pipeline_for(case: Case) -> tuple[str, bool]:
    """The pipeline text of `case` and whether it is an oracle (Fiddler gets its calibration)."""

    spec = get_policy(case.policy)
    text = case.pipeline or spec.pipeline
    if f"calib={ORACLE_CALIB}" in text:
        if any(c in case.trace for c in " {},"):
            raise NdpcError(f"trace path must not contain spaces, braces or commas: {case.trace}")
        text = text.replace(f"calib={ORACLE_CALIB}", f"calib={case.trace}")
    if "fiddler-profile" in text and "calib=" not in text:
        if not case.calib:
            raise NdpcError("fiddler needs a calibration trace (--calib-trace FILE)")
        if any(c in case.calib for c in " {},"):
            raise NdpcError(
                f"calibration path must not contain spaces, braces or commas: {case.calib}"
            )
        text = text.replace("fiddler-profile", f"fiddler-profile{{calib={case.calib}}}", 1)
    return text, spec.oracle


def run_case(case: Case) -> dict[str, Any]:
    """Compile + simulate `case`; a row of figures (or `error` with the reason)."""
    return {**case_columns(case), **compute_case(case)}


def case_columns(case: Case) -> dict[str, Any]:
    """The columns of a row that name the case (what `compute_case` does not compute)."""
    return {"name": case.name, "policy": case.policy, "model": case.model,
            "target": case.target, "overrides": list(case.overrides), **case.tags}  # fmt: skip


def compute_case(case: Case) -> dict[str, Any]:
    """The computed figures of `case`, or `error` with the first line of the reason."""
    try:
        return _run(case)
    except (NdpcError, ValueError, OSError) as err:
        message = err.render() if isinstance(err, NdpcError) else str(err)
        return {"error": message.splitlines()[0]}


def _run(case: Case) -> dict[str, Any]:

    text, oracle = pipeline_for(case)
    compiled = compile_schedule(case.model, case.target, case.trace, None, text, case.overrides,
                                serving=case.serving)  # fmt: skip
    result = simulate(compiled.schedule, compiled.target, compiled.cost)
    out = figures(result, compiled.schedule.meta)
    if result.serving is not None:
        report = summary({"requests": result.serving["requests"], "itl": []}, *case.slo)
        out["serving"] = {k: v for k, v in report.items() if not k.startswith("itl_")}
        out["serving"]["requests"] = result.serving["requests"]
        table = compiled.schedule.meta["serving"]["batches"]
        out["serving"]["kv_peak_bytes"] = max(row[3] for row in table)
        out["serving"]["expert_budget_min_bytes"] = min(row[4] for row in table)
        out["serving"]["batch_max"] = max(len(row[5]) for row in table)
        out.update(serving_optimum(case.model, case.target, case.trace, tuple(case.overrides),
                                   compiled.schedule.meta["serving"], report["makespan_s"]))  # fmt: skip
    out.update(pipeline=text, oracle=oracle, units=int(compiled.target.ndp_units))
    if case.check:
        report = check_timeline(compiled.schedule, compiled.target, result.start, result.end,
                                compiled.cost)  # fmt: skip
        out["check"] = check_json(report)
    if case.timeline:
        _timeline(case, compiled, result)
    return out


def figures(result, meta: dict[str, Any]) -> dict[str, Any]:
    """The reported figures of one simulation."""
    ndp = [v for k, v in sorted(result.busy.items()) if k.startswith("ndp") and k[3:].isdigit()]
    pf = meta.get("prefetcher", "none")
    seen = result.prefetch_hits + result.prefetch_misses
    return {
        "ttft_s": result.ttft_s,
        "tpot_s": result.tpot_mean_s,
        "tpot_p99_s": result.tpot_p99_s,
        "e2e_s": result.e2e_s,
        "gpu_busy": result.busy.get("gpu", 0.0),
        "cpu_busy": result.busy.get("cpu", 0.0),
        "ndp_busy": sum(ndp) / len(ndp) if ndp else 0.0,
        "ndp_busy_std": result.ndp_busy_std,
        "host_link_bytes": sum(result.link_bytes.get(k, 0.0) for k in HOST_LINKS),
        "link_bytes": dict(sorted(result.link_bytes.items())),
        "prefetcher": pf,
        "prefetch_hit_rate": result.prefetch_hits / seen if pf != "none" and seen else None,
        "gpu_expert_budget_bytes": meta.get("gpu_expert_budget_bytes"),
        "emit": dict(sorted((meta.get("emit") or {}).items())),  # the emitter's op counters
        "bound_s": result.bound_s,
        "bound_efficiency": result.efficiency,
        "ops": result.ops,
        **energy_figures(result.energy),
    }


def energy_figures(energy: dict[str, Any] | None) -> dict[str, Any]:
    """The energy columns of a row (None when the target has no energy model)."""
    e = energy or {}
    return {"energy_j": e.get("energy_j"), "energy_per_token_j": e.get("energy_per_token_j"),
            "tokens_per_j": e.get("tokens_per_j")}  # fmt: skip


def _timeline(case: Case, compiled, result) -> None:
    with output_file(case.timeline) as tmp:
        write_timeline_file(tmp, case.timeline_name or case.timeline, compiled.schedule, result,
                            compiled.target.name, TIMELINE_OPS, compiled.target)  # fmt: skip


def add_speedups(rows: list[dict[str, Any]], keys: Sequence[str], baseline: str = BASELINE) -> None:
    """Set `speedup_vs_monde` = baseline e2e / row e2e within each group of equal `keys`."""
    base: dict[tuple, float] = {}
    for row in rows:
        if row["policy"] == baseline and row["name"] == baseline and "e2e_s" in row:
            base[tuple(row.get(k) for k in keys)] = row["e2e_s"]
    for row in rows:
        ref = base.get(tuple(row.get(k) for k in keys))
        ok = ref is not None and "e2e_s" in row and row["e2e_s"] > 0
        row["speedup_vs_monde"] = ref / row["e2e_s"] if ok else None


def run_cases(
    cases: Iterable[Case], jobs: int = 1, progress: Callable[[int], None] | None = None
) -> list[dict[str, Any]]:
    """Run every case (in `jobs` worker processes when > 1); rows in the order of `cases`."""
    cases = list(cases)
    rows = _run_all(cases, jobs, progress)
    attach_optimum(rows, cases)  # the problem's lower bound and each row's gap to it
    return rows


def _run_all(cases: list[Case], jobs: int, progress: Callable[[int], None] | None):
    if jobs <= 1 or len(cases) <= 1:
        rows = []
        for case in cases:
            rows.append(run_case(case))
            if progress:
                progress(1)
        return rows
    _preload()
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    rows = []
    with ctx.Pool(min(jobs, len(cases))) as pool:
        for row in pool.imap(run_case, cases, chunksize=1):
            rows.append(row)
            if progress:
                progress(1)
    return rows


def _preload() -> None:
    """Import everything a run needs before forking, so workers share one loaded copy."""

    for name in ("ndpc.backends.emit", "ndpc.backends.simulator", "ndpc.backends.check", "ndpc.backends.timeline",
                 "ndpc.compiler.commands.compile", "ndpc.compiler.frontend", "ndpc.traces.format"):  # fmt: skip
        importlib.import_module(name)
    for rule in DispatchRule:
        # a rule without a policy fails in its own case, with its own message
        with contextlib.suppress(ImportError):
            importlib.import_module(f"ndpc.backends.policies.{rule.value}")


def default_jobs() -> int:
    """Worker processes: the CPU count (at least 1)."""

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def ensure_dir(path: str | Path) -> Path:
    """`path` as a directory that exists."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out
