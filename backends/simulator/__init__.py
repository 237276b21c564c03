"""The GPU-NDP timing simulator: replay a schedule on a target and report what happened.

`simulate(schedule, target)` maps the schedule's resources onto the target's, gets every op's
uncontended duration from the cost model (vectorised), replays the DAG with `engine.run_fast`
(falling back to the event loop `engine.run_exact` when flows share a link) and computes the
report (`SimResult`, in `result.py`). The rules are in docs/simulator.md.
"""

from __future__ import annotations

import numpy as np

from ndpc.backends.cost import CostModel
from ndpc.backends.schedule import OpKind, Schedule
from ndpc.backends.simulator.engine import Prepared, run_exact, run_fast
from ndpc.backends.simulator.metrics import compute_result
from ndpc.backends.simulator.result import SIM_VERSION, SimResult
from ndpc.backends.target import Target, resource_specs
from ndpc.ir.core import Location
from ndpc.ir.diagnostics import NdpcError


def prepare(schedule: Schedule, target: Target, cost: CostModel | None = None) -> Prepared:
    """Per-op arrays in target resource numbering, with uncontended durations from `cost`."""
    cost = cost or CostModel(target)
    specs = resource_specs(target)
    index = {s.name: i for i, s in enumerate(specs)}
    where = Location(schedule.source, name=schedule.source)  # schedule-vs-target errors name it
    missing = [name for name in schedule.resources if name not in index]
    used = np.bincount(schedule.resource, minlength=len(schedule.resources))
    for name in missing:
        if used[schedule.resources.index(name)]:
            raise NdpcError(f"schedule uses resource '{name}' that target '{target.name}' lacks "
                            f"(target has {', '.join(index)})", where)  # fmt: skip
    remap = np.array([index.get(name, 0) for name in schedule.resources], dtype=np.int64)
    res = remap[schedule.resource] if len(schedule) else np.zeros(0, np.int64)
    kind = schedule.kind
    is_link_op = (
        np.array([s.kind == "link" for s in specs], dtype=bool)[res]
        if len(res)
        else np.zeros(0, bool)
    )
    bad = np.flatnonzero(
        is_link_op & (kind != OpKind.TRANSFER) & (kind != OpKind.PREFETCH) & (kind != OpKind.SYNC)
    )
    if len(bad):
        i = int(bad[0])
        raise NdpcError(
            f"op {i}: {OpKind(int(kind[i])).name} cannot run on link '{specs[res[i]].name}'",
            where,
        )
    bad = np.flatnonzero(~is_link_op & ((kind == OpKind.TRANSFER) | (kind == OpKind.PREFETCH)))
    if len(bad):
        i = int(bad[0])
        raise NdpcError(
            f"op {i}: {OpKind(int(kind[i])).name} must run on a link, not '{specs[res[i]].name}'",
            where,
        )
    unit = schedule.unit.astype(np.int64)
    if len(unit) and unit.max() >= target.ndp_units:
        i = int(np.argmax(unit >= target.ndp_units))
        raise NdpcError(
            f"op {i}: unit {int(unit[i])} but target '{target.name}' has {target.ndp_units} NDP units",
            where,
        )
    res2 = np.full(len(res), -1, dtype=np.int64)
    if target.exclusive_host_access and len(res):
        host = np.isin(res, [index["pcie.h2d"], index["pcie.d2h"]]) & (unit >= 0)
        res2[host] = index["ndp0"] + unit[host]
    dur = cost.op_times(schedule)
    _release_waits(schedule, dur)
    setup = cost.op_setups(schedule)
    cap = np.zeros(len(res))
    for r, spec in enumerate(specs):
        if spec.kind != "link":
            continue
        sel = res == r
        cap[sel] = np.where(
            unit[sel] >= 0, cost.link_bandwidth(spec.name, 0), cost.link_bandwidth(spec.name)
        )
    return Prepared(
        res=res,
        res2=res2,
        dur=dur,
        setup=setup,
        nbytes=schedule.link_bytes.astype(np.float64),
        cap=cap,
        is_sync=kind == OpKind.SYNC,
        prio=(kind == OpKind.PREFETCH).astype(np.int8),
        dep_ptr=schedule.dep_ptr,
        dep_idx=schedule.dep_idx,
        slots=[s.slots for s in specs],
        shared=[s.kind == "link" and s.slots > 1 for s in specs],
        bandwidth=[s.bandwidth_Bps for s in specs],
    )


def _release_waits(schedule: Schedule, dur: np.ndarray) -> None:
    """A serving schedule's arrivals: each listed SYNC op lasts until its release time (it has no
    dependencies, so it ends exactly then; the request's first work waits for it)."""
    serving = schedule.meta.get("serving")
    release = serving.get("release") if isinstance(serving, dict) else None
    for item in release or ():
        try:
            op, t = int(item[0]), float(item[1])
        except (TypeError, ValueError, IndexError, OverflowError):
            op, t = -1, -1.0
        if not 0 <= op < len(schedule) or schedule.kind[op] != OpKind.SYNC or not 0 <= t < 1e12:
            raise NdpcError(f"meta.serving.release: {item!r} is not [a SYNC op id, a time >= 0]")
        dur[op] = t


def replay(schedule: Schedule, target: Target, cost: CostModel | None = None,
           engine: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:  # fmt: skip
    """Start and end time of every op, and the engine that produced them ("fast"/"exact")."""
    p = prepare(schedule, target, cost)
    if engine in ("auto", "fast"):
        times = run_fast(p)
        if times is not None:
            return times[0], times[1], "fast"
        if engine == "fast":
            raise NdpcError("flows overlap on a shared link: the fast engine is not exact here")
    start, end = run_exact(p)
    return start, end, "exact"


def simulate(schedule: Schedule, target: Target, cost: CostModel | None = None,
             engine: str = "auto") -> SimResult:  # fmt: skip
    """Replay `schedule` on `target` and compute the full report."""
    cost = cost or CostModel(target)
    start, end, used = replay(schedule, target, cost, engine)
    return compute_result(schedule, target, cost, start, end, used)


__all__ = ["SIM_VERSION", "SimResult", "prepare", "replay", "simulate"]
