"""The physical lower bound of a schedule's run, and per-step floors.

Every op needs at least its physical minimum time (`CostModel.min_times`: peak FLOP/s and peak
bandwidth only, no launch or set-up overhead, no efficiency factor). Two facts then bound the
end-to-end time of *any* replay that obeys the dependencies and the resources' capacities:

1. critical path: an op starts after all its dependencies end, so the end time is at least the
   longest dependency chain weighted by physical minima;
2. resource floors: a memory or link cannot move more than its bandwidth, so the end time is at
   least (bytes it must move) / (its bandwidth) for every memory and link, and at least the sum of
   its ops' minima for every one-at-a-time device.

`bound_s = max(critical path, max over resources of their floor)`. The aggregate floor (all memory
bytes / all memory bandwidth together) is the bound a perfect placement of the same bytes could
reach; it is reported but is never larger than the per-resource floors. Per-step floors (one
token step = the ops tagged with one (request, token)) are reported too: for each step, the
largest per-resource floor of that step's bytes.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ndpc.backends.cost import CostModel
from ndpc.backends.schedule import Schedule
from ndpc.backends.target import Target, resource_specs

# Below this many ops the pure-Python/numpy loops are used unless numba is already imported:
# importing numba costs ~0.3 s CPU, more than the compiled loops save on a small schedule.
COMPILE_MIN_OPS = 50_000


def use_compiled(n: int, compiled: bool | None = None) -> bool:
    """Whether the compiled (numba) loops run for a schedule of n ops (`compiled` forces it)."""
    if compiled is not None:
        return compiled
    return n >= COMPILE_MIN_OPS or "numba" in sys.modules


def critical_path(schedule: Schedule, weights: np.ndarray) -> float:
    """Longest dependency chain with per-op `weights` (see `critical_path_csr`)."""
    return critical_path_csr(schedule.dep_ptr, schedule.dep_idx, weights)


def critical_path_csr(
    dep_ptr: np.ndarray, dep_idx: np.ndarray, weights: np.ndarray, compiled: bool | None = None
) -> float:
    """Longest dependency chain of a dependency CSR with per-op `weights`: one compiled (numba)
    pass in id order, fin[i] = w[i] + max(fin[d] for d in deps(i)), the textbook recursion in the
    same order of operations, so bit-identical to `_critical_path_reference` (tested). Small
    schedules (`use_compiled`) take `_critical_path_roots` instead."""
    if len(dep_ptr) <= 1:
        return 0.0
    if not use_compiled(len(dep_ptr) - 1, compiled):
        return _critical_path_roots(dep_ptr, dep_idx, weights)
    from ndpc.backends.simulator.kernels import (
        critical_path_kernel,
    )  # lazy: numba, see engine.run_fast

    # the index arrays go in as they are (a schedule's dep_idx is int32: no int64 copy of it)
    return float(critical_path_kernel(dep_ptr, dep_idx, np.asarray(weights, dtype=np.float64)))


def _critical_path_roots(dep_ptr: np.ndarray, dep_idx: np.ndarray, weights: np.ndarray) -> float:
    """Longest dependency chain, numpy + a Python pass over roots (the pre-numba version, kept
    as a second reference: it may differ from the recursion in the last bit, because chain
    weights are summed below their root first).

    Ops with exactly one dependency form short chains hanging off "root" ops (none or several
    dependencies); pointer jumping (numpy) gives every op its root `anc` and the weight `off` of
    its chain below the root, so fin[i] = cp[anc[i]] + off[i]. A Python pass over the roots only
    (in id order) computes cp[root] = w[root] + max over its dependencies d of
    (cp[anc[d]] + off[d]). Of two neighbouring dependencies of a root with the same `anc`, the one
    with the smaller `off` cannot give the larger sum (float addition is monotone), so it is
    dropped first (`neighbour_prune`); the result is exactly the maximum over all of them.
    """
    n = len(dep_ptr) - 1
    if n <= 0:
        return 0.0
    w = np.asarray(weights, dtype=np.float64)
    ptr, idx = dep_ptr, dep_idx
    deg = np.diff(ptr)
    single = deg == 1
    ids = np.arange(n)
    anc = ids.copy()
    anc[single] = idx[ptr[:-1][single]]
    off = np.where(single, w, 0.0)
    while True:  # off[i] = weight of i's chain below its root; anc[i] -> the root
        nxt = anc[anc]
        if np.array_equal(nxt, anc):
            break
        off = off + np.where(anc != ids, off[anc], 0.0)
        anc = nxt
    roots = np.flatnonzero(~single)
    counts = deg[roots]
    entries = _root_entries(ptr, roots)
    owner = np.repeat(np.arange(len(roots)), counts)
    dep = idx[entries]
    dep_root = anc[dep]
    dep_off = off[dep]
    keep = np.ones(len(dep), dtype=bool)
    neighbour_prune(owner, dep_root, dep_off, keep)
    kept = np.flatnonzero(keep)
    rptr = np.zeros(len(roots) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner[kept], minlength=len(roots)), out=rptr[1:])
    rid = np.zeros(n, dtype=np.int64)
    rid[roots] = np.arange(len(roots))  # op id -> root index
    dr = rid[dep_root[kept]].tolist()
    do = dep_off[kept].tolist()
    rp = rptr.tolist()
    cp: list[float] = []  # per root index
    app = cp.append
    for wi, a, b in zip(w[roots].tolist(), rp, rp[1:], strict=False):
        if b == a + 1:
            app(wi + cp[dr[a]] + do[a])
        elif b == a + 2:
            t = cp[dr[a]] + do[a]
            u = cp[dr[a + 1]] + do[a + 1]
            app(wi + (u if u > t else t))
        elif a == b:
            app(wi)
        else:
            app(wi + max([cp[r] + o for r, o in zip(dr[a:b], do[a:b], strict=True)]))
    # fin[i] = cp[anc[i]] + off[i], monotone in off[i]: per root only its largest offset matters
    top = np.zeros(len(roots))
    np.maximum.at(top, rid[anc], off)
    return float((np.asarray(cp) + top).max())


def neighbour_prune(owner: np.ndarray, group: np.ndarray, value: np.ndarray,
                    keep: np.ndarray) -> None:  # fmt: skip
    """Among kept entries next to each other in one owner's list (`owner` non-decreasing) with
    the same `group`, drop the one with the smaller `value` (on a tie the earlier one), in place.

    Only neighbours are compared (no sort). A dropped entry always has a kept entry of its group
    with a value at least as large (dominance points to a strictly larger value, or on a tie to
    the later entry, so it ends at a kept one): each group's maximum survives."""
    if len(keep) < 2:
        return
    if keep.all():  # no gathers needed
        o, g, v = owner, group, value
    else:
        idx = np.flatnonzero(keep)
        o, g, v = owner[idx], group[idx], value[idx]
    same = (o[1:] == o[:-1]) & (g[1:] == g[:-1])
    v0, v1 = v[:-1], v[1:]
    drop = np.zeros(len(o), dtype=bool)
    drop[:-1] |= same & (v1 >= v0)  # the next one is at least as large
    drop[1:] |= same & (v0 > v1)  # the previous one is larger
    if o is owner:
        keep[drop] = False
    else:
        keep[idx[drop]] = False


def _root_entries(ptr: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Indices into dep_idx of the roots' dependencies, in root order."""
    counts = np.diff(ptr)[roots]
    starts = ptr[roots]
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    base = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return base + np.arange(total)


def _critical_path_reference(schedule: Schedule, weights: np.ndarray) -> float:
    """The textbook recursion, written independently (tests compare against it)."""
    ptr, dep = schedule.dep_lists()
    w = weights.tolist()
    fin = [0.0] * len(w)
    for i in range(len(w)):
        a, b = ptr[i], ptr[i + 1]
        fin[i] = w[i] + (max([fin[j] for j in dep[a:b]]) if b > a else 0.0)
    return max(fin, default=0.0)


def resource_floors(schedule: Schedule, target: Target, minima: np.ndarray) -> dict[str, float]:
    """Per target resource: the least time it must be busy (see module docstring); `minima`
    come from `CostModel.min_times`; a link's floor is its ops' bytes over its full bandwidth
    (`CostModel.link_shares`, here per link)."""
    specs = resource_specs(target)
    pos = {name: i for i, name in enumerate(schedule.resources)}
    floors = {s.name: 0.0 for s in specs}
    for spec in specs:
        if spec.name not in pos:
            continue
        sel = schedule.resource == pos[spec.name]
        if spec.kind == "link":
            floors[spec.name] = float((schedule.link_bytes[sel] / spec.bandwidth_Bps).sum())
        else:
            floors[spec.name] = float(minima[sel].sum())
    if target.exclusive_host_access:
        # host transfers to a unit hold it: they add to that unit's floor
        host = np.zeros(len(schedule), dtype=bool)
        for name in ("pcie.h2d", "pcie.d2h"):
            if name in pos:
                host |= schedule.resource == pos[name]
        host &= schedule.unit >= 0
        for u in range(target.ndp_units):
            floors[f"ndp{u}"] += float(minima[host & (schedule.unit == u)].sum())
    return floors


def lower_bound(
    schedule: Schedule, target: Target, cost: CostModel | None = None
) -> dict[str, Any]:
    """`bound_s` and its parts: critical path, per-resource floors, aggregate and per-step floors."""
    cost = cost or CostModel(target)
    minima = cost.min_times(schedule)
    floors = resource_floors(schedule, target, minima)
    path = critical_path(schedule, minima)
    aggregate = float(cost.memory_floor(schedule.mem_bytes.sum())) if len(schedule) else 0.0
    binding = max(floors, key=lambda k: floors[k]) if floors else ""
    bound = max(path, max(floors.values(), default=0.0))
    return {
        "bound_s": bound,
        "critical_path_s": path,
        "resource_floor_s": floors,
        "binding_resource": "critical-path" if path >= floors.get(binding, 0.0) else binding,
        "aggregate_memory_floor_s": aggregate,
        "steps": step_floors(schedule, target, cost, minima),
    }


def step_floors(schedule: Schedule, target: Target, cost: CostModel,
                minima: np.ndarray) -> dict[str, list]:  # fmt: skip
    """Per token step: (request, token, phase), the largest per-resource floor of its ops
    (`floor_s`), the resource setting it (`binding`) and its kernel bytes over all memories'
    summed bandwidth (`aggregate_s`). Sums run over the ops in id order (as `np.bincount`
    would), a slice of ops at a time."""
    bounds, step, first = schedule.step_runs()
    if len(first) == 0:
        return {
            "request": [],
            "token": [],
            "phase": [],
            "floor_s": [],
            "binding": [],
            "aggregate_s": [],
        }
    specs = resource_specs(target)
    index = {s.name: i for i, s in enumerate(specs)}
    sres = np.array([index.get(name, 0) for name in schedule.resources], dtype=np.int64)
    link = np.array([s.kind == "link" for s in specs])
    bandwidth = np.array([s.bandwidth_Bps for s in specs])
    R, K = len(specs), len(first)
    per = np.zeros(K * R)
    mem = np.zeros(K)
    chunk = 1 << 20
    for lo in range(0, len(schedule), chunk):
        hi = min(len(schedule), lo + chunk)
        at = step[np.searchsorted(bounds, np.arange(lo, hi), side="right") - 1]
        ids = np.flatnonzero(at >= 0)
        k = at[ids]
        ids += lo
        res = sres[schedule.resource[ids]]
        work = minima[ids]
        on_link = np.flatnonzero(link[res])  # a link op's share: its bytes over the bandwidth
        work[on_link] = schedule.link_bytes[ids[on_link]] / bandwidth[res[on_link]]
        np.add.at(per, k * R + res, work)
        np.add.at(mem, k, schedule.mem_bytes[ids])
    per = per.reshape(K, R)
    return {
        "request": schedule.request[first].tolist(),
        "token": schedule.token[first].tolist(),
        "phase": schedule.phase[first].tolist(),
        "floor_s": per.max(axis=1).tolist(),
        "binding": [specs[r].name for r in per.argmax(axis=1).tolist()],
        "aggregate_s": cost.memory_floor(mem).tolist(),
    }
