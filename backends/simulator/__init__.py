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
    """What the engines read: the schedule's columns as they are, per-op uncontended durations
    from `cost`, and per-resource tables in target resource numbering."""
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
    kind = schedule.kind
    # per-op checks on the schedule's own numbering (bool temporaries only)
    link_s = np.array([specs[r].kind == "link" for r in remap], dtype=bool)
    is_link_op = link_s[schedule.resource] if len(kind) else np.zeros(0, bool)
    bad = np.flatnonzero(
        is_link_op & (kind != OpKind.TRANSFER) & (kind != OpKind.PREFETCH) & (kind != OpKind.SYNC)
    )
    if len(bad):
        i = int(bad[0])
        raise NdpcError(
            f"op {i}: {OpKind(int(kind[i])).name} cannot run on link "
            f"'{specs[remap[schedule.resource[i]]].name}'",
            where,
        )
    bad = np.flatnonzero(~is_link_op & ((kind == OpKind.TRANSFER) | (kind == OpKind.PREFETCH)))
    if len(bad):
        i = int(bad[0])
        raise NdpcError(
            f"op {i}: {OpKind(int(kind[i])).name} must run on a link, not "
            f"'{specs[remap[schedule.resource[i]]].name}'",
            where,
        )
    del is_link_op, bad
    unit = schedule.unit
    if len(unit) and int(unit.max()) >= target.ndp_units:
        i = int(np.argmax(unit >= target.ndp_units))
        raise NdpcError(
            f"op {i}: unit {int(unit[i])} but target '{target.name}' has {target.ndp_units} NDP units",
            where,
        )
    host = np.zeros(len(specs), dtype=bool)
    if target.exclusive_host_access:
        host[[index["pcie.h2d"], index["pcie.d2h"]]] = True
    link_setup = np.zeros(len(specs))
    cap_tab = np.zeros((len(specs), 2))
    for r, spec in enumerate(specs):
        if spec.kind == "link":
            link_setup[r] = cost.link_setup(spec.name)
            cap_tab[r] = (cost.link_bandwidth(spec.name), cost.link_bandwidth(spec.name, 0))
    synced = cost.host_sync > 0 and "pcie.h2d" in schedule.resources
    dur = cost.op_times(schedule)
    _release_waits(schedule, dur)
    return Prepared(
        kind=kind,
        sres=schedule.resource,
        unit=unit,
        reason=schedule.reason,
        nbytes=np.asarray(schedule.link_bytes, dtype=np.float64),
        dur=dur,
        dep_ptr=schedule.dep_ptr,
        dep_idx=schedule.dep_idx,
        remap=remap,
        slots=[s.slots for s in specs],
        shared=[s.kind == "link" and s.slots > 1 for s in specs],
        bandwidth=[s.bandwidth_Bps for s in specs],
        link_setup=link_setup,
        cap_tab=cap_tab,
        host=host,
        ndp0=index.get("ndp0", -1),
        hs_res=index["pcie.h2d"] if synced else -1,
        host_sync=float(cost.host_sync),
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
