"""Compiled (numba) hot loops of the simulator: the critical path, the fast replay's pass, the
exact event engine and the serving clock.

Each is the same arithmetic, in the same order, as its pure-Python reference
(`bounds._critical_path_reference`, `engine.run_fast_python`, `engine.run_exact_python`,
`serving.IterationClock._advance_python`), so their results are bit-identical to them
(tests/backends/test_simulator.py and test_serving.py compare them on random schedules).
`cache=True`: the machine code is cached next to this file (__pycache__), so only the first call
after an edit pays the compile.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_DONE, _DATA_START, _FLOW_DONE = 0, 1, 2  # event kinds, as engine.run_exact_python
_SYNC, _PREFETCH, _PARTIAL_SUM = 6, 5, 11  # OpKind.SYNC, OpKind.PREFETCH, Reason.PARTIAL_SUM


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
def replay_kernel(dep_ptr, dep_idx, ops, tabs):  # pragma: no cover - compiled
    """`engine.run_fast`'s pass over all dependencies (`ops`, `tabs`: as `exact_kernel`);
    returns (ok, start, end). ok is False when a flow on a shared link would overlap the
    previous one (fair sharing applies)."""
    kind, sres, unit, reason, nbytes, dur = ops
    remap, slots, shared, bw, link_setup, cap_tab, host, ndp0, hs_res, host_sync = tabs
    n = len(kind)
    start = np.zeros(n, dtype=np.float64)
    end = np.zeros(n, dtype=np.float64)
    free = np.zeros(max(len(slots), 1), dtype=np.float64)
    for i in range(n):
        a = dep_ptr[i]
        b = dep_ptr[i + 1]
        t = 0.0
        if b > a:
            t = end[dep_idx[a]]
            for k in range(a + 1, b):
                u = end[dep_idx[k]]
                if u > t:
                    t = u
        if kind[i] == _SYNC:  # no resource; lasts its duration (0, or a release wait)
            start[i] = t
            end[i] = t + dur[i]
            continue
        r = remap[sres[i]]
        r2 = _res2(i, r, unit, host, ndp0)
        if shared[r] or r2 >= 0:
            if shared[r] and t < free[r]:
                return False, start, end
            f = free[r]
            if f > t:
                t = f
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


# --- the exact event engine (`engine.run_exact`), compiled ------------------------------------
# Per op it reads the schedule's own columns (kind, resource, unit, reason, link bytes) through
# per-resource tables, and holds only the start and end times and the dependants CSR (int32):
# about 24 bytes an op plus 4 per dependency, besides the durations; no Python object per op.
# A resource's queue is not stored: its head is an op id, moved on by scanning forward for the
# next op of that queue. Events are ordered by (time, sequence number) as in the Python loop.


@njit(cache=True)
def _less(ta, sa, tb, sb):  # pragma: no cover - compiled
    return ta < tb or (ta == tb and sa < sb)


@njit(cache=True)
def _push(ht, hk, st, t, what, op, g):  # pragma: no cover - compiled
    """Push event (t, seq, what, op, g) on the binary heap (ht: times, hk: seq/what/op/g rows,
    st[0]: size, st[1]: next sequence number); returns the heap's arrays (grown when full)."""
    n = st[0]
    if n == len(ht):
        nt = np.empty(2 * n, dtype=np.float64)
        nt[:n] = ht
        nk = np.empty((2 * n, 4), dtype=np.int64)
        nk[:n] = hk
        ht, hk = nt, nk
    seq = st[1]
    st[1] = seq + 1
    pos = n
    while pos > 0:
        par = (pos - 1) >> 1
        if not _less(t, seq, ht[par], hk[par, 0]):
            break
        ht[pos] = ht[par]
        hk[pos, :] = hk[par, :]
        pos = par
    ht[pos] = t
    hk[pos, 0] = seq
    hk[pos, 1] = what
    hk[pos, 2] = op
    hk[pos, 3] = g
    st[0] = n + 1
    return ht, hk


@njit(cache=True)
def _pop(ht, hk, st):  # pragma: no cover - compiled
    """Remove the least event; returns (t, what, op, g)."""
    t, what, op, g = ht[0], hk[0, 1], hk[0, 2], hk[0, 3]
    n = st[0] - 1
    st[0] = n
    if n > 0:
        lt, ls = ht[n], hk[n, 0]
        pos = 0
        while True:
            c = 2 * pos + 1
            if c >= n:
                break
            if c + 1 < n and _less(ht[c + 1], hk[c + 1, 0], ht[c], hk[c, 0]):
                c += 1
            if not _less(ht[c], hk[c, 0], lt, ls):
                break
            ht[pos] = ht[c]
            hk[pos, :] = hk[c, :]
            pos = c
        ht[pos] = lt
        hk[pos, :] = hk[n, :]
    return t, what, op, g


@njit(cache=True)
def _res2(op, r, unit, host, ndp0):  # pragma: no cover - compiled
    """The op's second resource (the NDP unit a host copy also holds) or -1."""
    u = unit[op]
    return ndp0 + u if host[r] and u >= 0 else -1


@njit(cache=True)
def _cls(op, r, kind, sres, remap, shared):  # pragma: no cover - compiled
    """Admission class of `op` at resource r: 1 for a prefetch flowing on shared link r."""
    if shared[r] and remap[sres[op]] == r and kind[op] == _PREFETCH:
        return 1
    return 0


@njit(cache=True)
def _next(q, ops, tabs, head, left):  # pragma: no cover - compiled
    """Move queue q (resource q // 2, class q % 2) past its head op: to the next op waiting
    there, or to len(ops) when none is left."""
    kind, sres, unit = ops[0], ops[1], ops[2]
    remap, shared, host, ndp0 = tabs[0], tabs[2], tabs[6], tabs[7]
    n = len(kind)
    left[q] -= 1
    if left[q] == 0:
        head[q] = n
        return
    r = q >> 1
    c = q & 1
    i = head[q] + 1
    while True:
        if kind[i] != _SYNC:
            ri = remap[sres[i]]
            if ri == r:
                if (1 if shared[r] and kind[i] == _PREFETCH else 0) == c:
                    break
            elif c == 0 and host[ri] and unit[i] >= 0 and ndp0 + unit[i] == r:
                break
        i += 1
    head[q] = i


@njit(cache=True)
def _cap(op, r, unit, cap_tab):  # pragma: no cover - compiled
    return cap_tab[r, 1] if unit[op] >= 0 else cap_tab[r, 0]


@njit(cache=True)
def _try_start(r, now, ops, tabs, state, ht, hk, st):  # pragma: no cover - compiled
    """Admit the ready heads of resource r's queues (demand first) while it has free slots."""
    kind, sres, unit, reason, nbytes, dur = ops
    remap, slots, shared, bw, link_setup, cap_tab, host, ndp0, hs_res, host_sync = tabs
    head, left, active, start = state
    n = len(kind)
    for c in range(2):
        q = 2 * r + c
        while head[q] < n and active[r] < slots[r]:
            op = head[q]
            if start[op] != 0.0:  # dependencies left (start holds their count until then)
                break
            ro = remap[sres[op]]
            r2 = _res2(op, ro, unit, host, ndp0)
            if r2 >= 0:
                other = r2 if ro == r else ro
                q2 = 2 * other + _cls(op, other, kind, sres, remap, shared)
                if head[q2] != op or active[other] >= slots[other]:
                    break
                _next(q2, ops, tabs, head, left)
                active[other] += 1
            _next(q, ops, tabs, head, left)
            active[r] += 1
            start[op] = now
            if shared[ro]:
                setup = link_setup[ro]
                if ro == hs_res and reason[op] == _PARTIAL_SUM and unit[op] >= 0:
                    setup = setup + host_sync  # as CostModel.op_setups adds it
                ht, hk = _push(ht, hk, st, now + setup, _DATA_START, op, 0)
            else:
                ht, hk = _push(ht, hk, st, now + dur[op], _DONE, op, 0)
    return ht, hk


@njit(cache=True)
def _complete(
    op0, now, ops, tabs, state, users, uptr, end, work, marks, ht, hk, st
):  # pragma: no cover
    """op0 ends at `now`: free its resources, count down its dependants (SYNC ops that become
    ready end at once, on a worklist), then try the touched resources in index order. Returns
    the heap's and the worklist's arrays."""
    kind, sres, unit, reason, nbytes, dur = ops
    remap, slots, shared, bw, link_setup, cap_tab, host, ndp0, hs_res, host_sync = tabs
    head, left, active, start = state
    marks[:] = False
    work[0] = op0
    wn = 1
    while wn > 0:
        wn -= 1
        op = work[wn]
        end[op] = now
        if kind[op] != _SYNC:
            r = remap[sres[op]]
            active[r] -= 1
            marks[r] = True
            r2 = _res2(op, r, unit, host, ndp0)
            if r2 >= 0:
                active[r2] -= 1
                marks[r2] = True
        for k in range(uptr[op], uptr[op + 1]):
            u = users[k]
            start[u] -= 1.0  # one dependency fewer (exact: small whole numbers)
            if start[u] != 0.0:
                continue
            if kind[u] == _SYNC:
                start[u] = now
                if dur[u] > 0:  # a release wait: done later
                    ht, hk = _push(ht, hk, st, now + dur[u], _DONE, u, 0)
                else:
                    if wn == len(work):
                        grown = np.empty(2 * wn, dtype=np.int64)
                        grown[:wn] = work
                        work = grown
                    work[wn] = u
                    wn += 1
                continue
            ru = remap[sres[u]]
            if head[2 * ru + _cls(u, ru, kind, sres, remap, shared)] == u:
                marks[ru] = True
            else:
                r2 = _res2(u, ru, unit, host, ndp0)
                if r2 >= 0 and head[2 * r2] == u:
                    marks[r2] = True
    for r in range(len(marks)):
        if marks[r]:
            ht, hk = _try_start(r, now, ops, tabs, state, ht, hk, st)
    return ht, hk, work


@njit(cache=True)
def _reshare(r, now, ops, tabs, flows, ht, hk, st):  # pragma: no cover - compiled
    """Max-min fair rates of resource r's flows (demand before prefetch; capped flows first),
    and a completion event for each (stale ones are told apart by the flow's generation)."""
    kind, sres, unit, reason, nbytes, dur = ops
    remap, slots, shared, bw, link_setup, cap_tab, host, ndp0, hs_res, host_sync = tabs
    fop, fleft, frate, fgen, fcnt, last, order = flows
    k = fcnt[r]
    if k == 0:
        return ht, hk
    share = bw[r] / k
    equal = True
    for j in range(k):
        o = fop[r, j]
        if not (_cap(o, r, unit, cap_tab) >= share and kind[o] != _PREFETCH):
            equal = False
            break
    if equal:  # common case: equal shares
        for j in range(k):
            frate[r, j] = share
            fgen[r, j] += 1
            left = fleft[r, j]
            ht, hk = _push(ht, hk, st, now + (0.0 if left < 0.0 else left) / share, _FLOW_DONE,
                           fop[r, j], fgen[r, j])  # fmt: skip
        return ht, hk
    left = bw[r]
    for grp in range(2):  # demand flows, then prefetch flows
        m = 0
        for j in range(k):
            if (kind[fop[r, j]] == _PREFETCH) == (grp == 1):
                order[m] = j
                m += 1
        for a in range(1, m):  # insertion sort by (cap, op): capped flows first
            j = order[a]
            cj, oj = _cap(fop[r, j], r, unit, cap_tab), fop[r, j]
            b = a - 1
            while b >= 0:
                ob = fop[r, order[b]]
                cb = _cap(ob, r, unit, cap_tab)
                if cb < cj or (cb == cj and ob < oj):
                    break
                order[b + 1] = order[b]
                b -= 1
            order[b + 1] = j
        kk = m
        for a in range(m):
            j = order[a]
            o = fop[r, j]
            rate = 0.0
            if left > 0:
                lk = left / kk
                c = _cap(o, r, unit, cap_tab)
                rate = lk if lk < c else c
            frate[r, j] = rate
            left -= rate
            kk -= 1
            fgen[r, j] += 1
            if rate > 0:  # a starved prefetch flow waits for the next reshare
                fl = fleft[r, j]
                ht, hk = _push(ht, hk, st, now + (0.0 if fl < 0.0 else fl) / rate, _FLOW_DONE,
                               o, fgen[r, j])  # fmt: skip
    return ht, hk


@njit(cache=True)
def _advance(r, now, flows):  # pragma: no cover - compiled
    fop, fleft, frate, fgen, fcnt, last, order = flows
    dt = now - last[r]
    if dt > 0:
        for j in range(fcnt[r]):
            fleft[r, j] -= frate[r, j] * dt
    last[r] = now


@njit(cache=True)
def exact_kernel(dep_ptr, dep_idx, ops, tabs):  # pragma: no cover - compiled
    """`engine.run_exact_python`'s event loop, the same decisions in the same order; returns
    (start, end). `ops` = (kind, resource, unit, reason, link_bytes, dur) per op (the first five
    are the schedule's columns), `tabs` = (remap, slots, shared, bandwidth, link_setup, cap_tab,
    host, ndp0, hs_res, host_sync): see `engine.run_exact`. Until an op becomes ready its
    `start` holds its count of unfinished dependencies (the Python loop's `waiting`)."""
    kind, sres, unit, reason, nbytes, dur = ops
    remap, slots, shared, bw, link_setup, cap_tab, host, ndp0, hs_res, host_sync = tabs
    n = len(kind)
    R = len(slots)
    # dependants CSR (the users of each op in id order)
    uptr = np.zeros(n + 1, dtype=np.int32)
    for k in range(len(dep_idx)):
        uptr[dep_idx[k] + 1] += 1
    for i in range(n):
        uptr[i + 1] += uptr[i]
    users = np.empty(len(dep_idx), dtype=np.int32)
    for i in range(n):
        for k in range(dep_ptr[i], dep_ptr[i + 1]):
            d = dep_idx[k]
            users[uptr[d]] = i
            uptr[d] += 1
    for i in range(n, 0, -1):  # the fill moved each start to the next op's: shift back
        uptr[i] = uptr[i - 1]
    uptr[0] = 0
    start = np.empty(n, dtype=np.float64)
    for i in range(n):
        start[i] = dep_ptr[i + 1] - dep_ptr[i]
    end = np.zeros(n, dtype=np.float64)
    # queue 2r + c: the ops of class c waiting for resource r, in id order (head: an op id)
    head = np.full(2 * R, n, dtype=np.int64)
    left = np.zeros(2 * R, dtype=np.int64)
    for i in range(n):
        if kind[i] != _SYNC:
            r = remap[sres[i]]
            q = 2 * r + _cls(i, r, kind, sres, remap, shared)
            r2 = _res2(i, r, unit, host, ndp0)
            for qq in (q, 2 * r2):
                if qq >= 0:
                    left[qq] += 1
                    if head[qq] == n:
                        head[qq] = i
    active = np.zeros(R, dtype=np.int64)
    S = max(1, slots.max()) if R else 1
    flows = (np.zeros((R, S), dtype=np.int64), np.zeros((R, S)), np.zeros((R, S)),
             np.zeros((R, S), dtype=np.int64), np.zeros(R, dtype=np.int64), np.zeros(R),
             np.zeros(S, dtype=np.int64))  # fmt: skip
    fop, fleft, frate, fgen, fcnt, last, order = flows
    ht = np.empty(1024, dtype=np.float64)
    hk = np.empty((1024, 4), dtype=np.int64)
    st = np.zeros(2, dtype=np.int64)
    work = np.empty(64, dtype=np.int64)
    marks = np.zeros(R, dtype=np.bool_)
    state = (head, left, active, start)
    for i in range(n):  # SYNC ops without dependencies, in id order
        if dep_ptr[i + 1] == dep_ptr[i] and kind[i] == _SYNC:
            if dur[i] > 0:  # a release wait (docs/simulator.md): ends at its release time
                ht, hk = _push(ht, hk, st, dur[i], _DONE, i, 0)
            else:
                ht, hk, work = _complete(i, 0.0, ops, tabs, state, users, uptr, end, work,
                                         marks, ht, hk, st)  # fmt: skip
    for r in range(R):
        ht, hk = _try_start(r, 0.0, ops, tabs, state, ht, hk, st)
    while st[0] > 0:
        now, what, op, g = _pop(ht, hk, st)
        if what == _DONE:
            ht, hk, work = _complete(op, now, ops, tabs, state, users, uptr, end, work, marks,
                                     ht, hk, st)  # fmt: skip
            continue
        r = remap[sres[op]]
        if what == _DATA_START:
            _advance(r, now, flows)
            j = fcnt[r]
            fop[r, j] = op
            fleft[r, j] = nbytes[op]
            fgen[r, j] = 0
            fcnt[r] = j + 1
            ht, hk = _reshare(r, now, ops, tabs, flows, ht, hk, st)
            continue
        j = 0
        while j < fcnt[r] and fop[r, j] != op:
            j += 1
        if j == fcnt[r] or fgen[r, j] != g:
            continue  # a stale completion (rates changed since)
        _advance(r, now, flows)
        for m in range(j, fcnt[r] - 1):  # remove the flow, keeping the others' order
            fop[r, m] = fop[r, m + 1]
            fleft[r, m] = fleft[r, m + 1]
            frate[r, m] = frate[r, m + 1]
            fgen[r, m] = fgen[r, m + 1]
        fcnt[r] -= 1
        ht, hk = _reshare(r, now, ops, tabs, flows, ht, hk, st)
        ht, hk, work = _complete(op, now, ops, tabs, state, users, uptr, end, work, marks,
                                 ht, hk, st)  # fmt: skip
    return start, end
