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

from typing import Any

import numpy as np

from backends.cost import CostModel
from backends.schedule import Schedule
from backends.target import Target, resource_specs


def critical_path(schedule: Schedule, weights: np.ndarray) -> float:
    """Longest dependency chain with per-op `weights`.

    Ops with exactly one dependency form chains hanging off "root" ops (none or several
    dependencies); pointer jumping (numpy) sums each op's chain weight down from its root, and a
    Python pass over the roots only (in id order) takes the maxima.
    """
    n = len(schedule)
    if n == 0:
        return 0.0
    w = np.asarray(weights, dtype=np.float64)
    ptr, idx = schedule.dep_ptr, schedule.dep_idx
    single = np.diff(ptr) == 1
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
    # a root's dependencies that hang off the same root only matter through their largest offset
    owner = np.repeat(np.arange(len(roots)), np.diff(ptr)[roots])
    entries = _root_entries(ptr, roots)
    key = owner * n + anc[idx[entries]]
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = (
        np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
        if len(key)
        else np.zeros(0, np.int64)
    )
    best = np.maximum.reduceat(off[idx[entries]][order], first) if len(key) else np.zeros(0)
    group_owner = key[first] // n
    rptr = np.concatenate([[0], np.cumsum(np.bincount(group_owner, minlength=len(roots)))]).tolist()
    dep_root = (key[first] % n).tolist()
    dep_off = best.tolist()
    wr = w[roots].tolist()
    cp = [0.0] * n
    for k, (i, wi) in enumerate(zip(roots.tolist(), wr, strict=True)):
        a, b = rptr[k], rptr[k + 1]
        if b == a + 1:
            cp[i] = wi + cp[dep_root[a]] + dep_off[a]
        elif b == a + 2:
            t = cp[dep_root[a]] + dep_off[a]
            u = cp[dep_root[a + 1]] + dep_off[a + 1]
            cp[i] = wi + (u if u > t else t)
        elif a == b:
            cp[i] = wi
        else:
            cp[i] = wi + max([cp[r] + o for r, o in zip(dep_root[a:b], dep_off[a:b], strict=True)])
    return float((np.asarray(cp)[anc] + off).max())


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
    """The plain one-pass version (tests compare the two)."""
    ptr, dep = schedule.dep_lists()
    w = weights.tolist()
    fin = [0.0] * len(w)
    for i in range(len(w)):
        a, b = ptr[i], ptr[i + 1]
        fin[i] = w[i] + (max([fin[j] for j in dep[a:b]]) if b > a else 0.0)
    return max(fin, default=0.0)


def resource_floors(
    schedule: Schedule, target: Target, minima: np.ndarray, shares: np.ndarray
) -> dict[str, float]:
    """Per target resource: the least time it must be busy (see module docstring); `minima` and
    `shares` come from `CostModel.min_times` and `CostModel.link_shares`."""
    specs = resource_specs(target)
    index = {s.name: i for i, s in enumerate(specs)}
    floors = {s.name: 0.0 for s in specs}
    sres = np.array([index.get(name, -1) for name in schedule.resources], dtype=np.int64)
    res = sres[schedule.resource] if len(schedule) else np.zeros(0, np.int64)
    for r, spec in enumerate(specs):
        sel = res == r
        if spec.kind == "link":
            floors[spec.name] = float(shares[sel].sum())
        else:
            floors[spec.name] = float(minima[sel].sum())
    if target.exclusive_host_access:
        # host transfers to a unit hold it: they add to that unit's floor
        host = np.isin(res, [index["pcie.h2d"], index["pcie.d2h"]]) & (schedule.unit >= 0)
        for u in range(target.ndp_units):
            floors[f"ndp{u}"] += float(minima[host & (schedule.unit == u)].sum())
    return floors


def lower_bound(
    schedule: Schedule, target: Target, cost: CostModel | None = None
) -> dict[str, Any]:
    """`bound_s` and its parts: critical path, per-resource floors, aggregate and per-step floors."""
    cost = cost or CostModel(target)
    minima = cost.min_times(schedule)
    shares = cost.link_shares(schedule)
    floors = resource_floors(schedule, target, minima, shares)
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
        "steps": step_floors(schedule, target, cost, minima, shares),
    }


def step_floors(schedule: Schedule, target: Target, cost: CostModel, minima: np.ndarray,
                shares: np.ndarray) -> dict[str, list]:  # fmt: skip
    """Per token step: (request, token, phase), the largest per-resource floor of its ops
    (`floor_s`), the resource setting it (`binding`) and its kernel bytes over all memories'
    summed bandwidth (`aggregate_s`)."""
    tagged, _, starts, inverse, first = schedule.steps()
    if len(tagged) == 0:
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
    res = sres[schedule.resource[tagged]]
    link = np.array([s.kind == "link" for s in specs])[res]
    work = np.where(link, shares[tagged], minima[tagged])
    R = len(specs)
    per = np.bincount(inverse * R + res, weights=work, minlength=len(starts) * R).reshape(
        len(starts), R
    )
    return {
        "request": schedule.request[first].tolist(),
        "token": schedule.token[first].tolist(),
        "phase": schedule.phase[first].tolist(),
        "floor_s": per.max(axis=1).tolist(),
        "binding": [specs[r].name for r in per.argmax(axis=1).tolist()],
        "aggregate_s": (
            cost.memory_floor(
                np.bincount(inverse, weights=schedule.mem_bytes[tagged], minlength=len(starts))
            )
        ).tolist(),
    }
