"""Compiled (numba) hot loops of the simulator: the critical path and the fast replay's pass.

Both are the same arithmetic, in the same order, as their pure-Python references
(`bounds._critical_path_reference`, `engine.run_fast`), so their results are bit-identical to them
(tests/backends/test_simulator.py compares them on random schedules). `cache=True`: the machine code
is cached next to this file (__pycache__), so only the first call after an edit pays the compile.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def critical_path_kernel(dep_ptr, dep_idx, w):  # pragma: no cover - compiled
    """max over ops of fin[i] = w[i] + max(fin[d] for d in deps(i)) (0 without deps); ops in
    topological id order. Same order of operations as the textbook reference."""
    n = len(w)
    fin = np.empty(n, dtype=np.float64)
    best = 0.0
    for i in range(n):
        a = dep_ptr[i]
        b = dep_ptr[i + 1]
        if b > a:
            m = fin[dep_idx[a]]
            for k in range(a + 1, b):
                v = fin[dep_idx[k]]
                if v > m:
                    m = v
            f = w[i] + m
        else:
            f = w[i] + 0.0
        fin[i] = f
        if i == 0 or f > best:
            best = f
    return best


@njit(cache=True)
def replay_kernel(ptr, dep, res, res2, dur, is_sync, special, shared, nres):  # pragma: no cover
    """`engine.run_fast`'s pass over (pruned) dependencies; returns (ok, start, end). ok is False
    when a flow on a shared link would overlap the previous one (fair sharing applies)."""
    n = len(res)
    start = np.zeros(n, dtype=np.float64)
    end = np.zeros(n, dtype=np.float64)
    free = np.zeros(nres, dtype=np.float64)
    for i in range(n):
        a = ptr[i]
        b = ptr[i + 1]
        t = 0.0
        if b > a:
            t = end[dep[a]]
            for k in range(a + 1, b):
                u = end[dep[k]]
                if u > t:
                    t = u
        r = res[i]
        if special[i]:
            if is_sync[i]:  # no resource; lasts its duration (0, or a release wait)
                start[i] = t
                end[i] = t + dur[i]
                continue
            if shared[r] and t < free[r]:
                return False, start, end
            f = free[r]
            if f > t:
                t = f
            r2 = res2[i]
            e = t + dur[i]
            if r2 >= 0:
                f = free[r2]
                if f > t:
                    t = f
                    e = t + dur[i]
                free[r2] = e
        else:
            f = free[r]
            if f > t:
                t = f
            e = t + dur[i]
        start[i] = t
        end[i] = e
        free[r] = e
    return True, start, end


@njit(cache=True)
def clock_kernel(
    end, lo, ptr, dep, tres, sync, unit, dur, release, free, host, ndp0
):  # pragma: no cover
    """`serving.IterationClock.advance`'s loop over ops lo.. (the same arithmetic in the same
    order as its Python reference): writes end[lo + j]; `ptr` holds absolute offsets into `dep`
    less ptr[0]; `release[j]` is op lo + j's release time (0: none); `host[r]`: resource r is a
    host link whose copies to or from an NDP unit also hold the unit."""
    n = len(tres)
    base = ptr[0]
    for j in range(n):
        t = 0.0
        for k in range(ptr[j] - base, ptr[j + 1] - base):
            u = end[dep[k]]
            if u > t:
                t = u
        if sync[j]:
            end[lo + j] = t + release[j]
            continue
        r = tres[j]
        if free[r] > t:
            t = free[r]
        r2 = ndp0 + unit[j] if host[r] and unit[j] >= 0 else -1
        if r2 >= 0 and free[r2] > t:
            t = free[r2]
        e = t + dur[j]
        free[r] = e
        if r2 >= 0:
            free[r2] = e
        end[lo + j] = e
