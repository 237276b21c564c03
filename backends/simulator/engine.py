"""The replay engines: turn a schedule and per-op durations into start/end times.

Semantics (docs/simulator.md):
- an op starts when all its dependencies have finished and its resource admits it;
- each resource admits its ops in schedule (id) order, FIFO, at most `slots` at once;
- on a link with `slots > 1`, admitted flows share its bandwidth max-min fairly (equal shares,
  capped by each flow's own cap; rates recomputed whenever a flow starts or ends its data phase);
  a flow first spends its set-up latency without using bandwidth;
- on such a link, demand flows come before prefetch flows (`prio` 1): a link admits the oldest
  ready demand flow first, and prefetch flows only get the bandwidth demand flows leave (a
  runtime issues prefetches on a low-priority stream);
- an op with a second resource (a host transfer to/from an NDP unit whose target excludes host
  access during NDP compute) must be admitted by both and holds both until it ends;
- SYNC ops occupy no resource and take no time, except a release wait (an arrival in a serving
  schedule, `meta.serving.release`), which lasts until its release time.

`run_fast` is one pass in id order with flat Python lists (O(ops + deps)). It is exact whenever no
flow on a multi-slot link becomes ready while another flow holds that link, because then no flows
ever overlap and fair sharing never applies; otherwise it returns None and `run_exact`, a
time-ordered event loop implementing the full rule, takes over.
"""

from __future__ import annotations

import heapq
from array import array
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ndpc.backends.bounds import neighbour_prune, use_compiled
from ndpc.backends.schedule import OpKind, Reason


@dataclass
class Prepared:
    """What the engines read (built by simulator.prepare). Per op: the schedule's own columns
    (no copies) and the uncontended durations; an op's target resource, second resource,
    set-up latency and flow cap follow from its resource, unit and reason through per-resource
    tables. The per-op forms of those (`res`, `res2`, `setup`, `cap`, ...) are computed on first
    use, for the pure-Python engines only."""

    kind: np.ndarray  # uint8 OpKind (schedule column)
    sres: np.ndarray  # resource index in the schedule's numbering (schedule column)
    unit: np.ndarray  # int16 NDP unit or -1 (schedule column)
    reason: np.ndarray  # uint8 Reason (schedule column)
    nbytes: np.ndarray  # float64 link bytes (schedule column)
    dur: np.ndarray  # uncontended duration (s)
    dep_ptr: np.ndarray
    dep_idx: np.ndarray
    remap: np.ndarray  # int64 per schedule resource: its index in the target (0 when unused)
    slots: list[int]  # per resource
    shared: list[bool]  # per resource: a multi-slot link (fair sharing applies)
    bandwidth: list[float]  # per resource (B/s)
    link_setup: np.ndarray  # per resource: a transfer's set-up latency (s), 0 for devices
    cap_tab: np.ndarray  # per resource: a flow's bandwidth cap without / with an NDP unit (B/s)
    host: np.ndarray  # per resource: a host link whose copies to/from an NDP unit hold the unit
    ndp0: int  # index of resource ndp0 (-1: none)
    hs_res: int  # pcie.h2d when partial-sum reads add the host sync (`CostModel.op_setups`)
    host_sync: float  # that sync (s)

    @cached_property
    def res(self) -> np.ndarray:
        """int64 target resource per op."""
        return self.remap[self.sres] if len(self.sres) else np.zeros(0, np.int64)

    @cached_property
    def res2(self) -> np.ndarray:
        """int64 second resource per op (the NDP unit a host copy also holds) or -1."""
        out = np.full(len(self.res), -1, dtype=np.int64)
        sel = self.host[self.res] & (self.unit >= 0) if len(self.res) else np.zeros(0, bool)
        out[sel] = self.ndp0 + self.unit[sel].astype(np.int64)
        return out

    @cached_property
    def is_sync(self) -> np.ndarray:
        return self.kind == OpKind.SYNC

    @cached_property
    def prio(self) -> np.ndarray:
        """int8: 0 demand, 1 prefetch (only shared links look at it)."""
        return (self.kind == OpKind.PREFETCH).astype(np.int8)

    @cached_property
    def setup(self) -> np.ndarray:
        """Link set-up latency per op (s), 0 for kernels and SYNC ops."""
        out = self.link_setup[self.res]
        out += np.where(self._host_synced(), self.host_sync, 0.0)  # as CostModel.op_setups
        out[self.is_sync] = 0.0
        return out

    def _host_synced(self) -> np.ndarray:
        return (self.res == self.hs_res) & (self.reason == Reason.PARTIAL_SUM) & (self.unit >= 0)

    @cached_property
    def cap(self) -> np.ndarray:
        """Flow bandwidth cap per op (B/s), 0 for kernels."""
        return self.cap_tab[self.res, (self.unit >= 0).astype(np.int64)]


def _csr(owner: np.ndarray, idx: np.ndarray, keep: np.ndarray, n: int):
    kept = np.flatnonzero(keep)
    qptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner[kept], minlength=n), out=qptr[1:])
    return qptr, idx[kept]


def prune_deps(p: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """The dependencies `run_fast` must look at (CSR), a subset with the same maxima.

    While `run_fast` succeeds, the ends of the ops that hold a resource are non-decreasing in id
    order: each starts at or after the resource's free time, the end of its previous holder.
    Hence, for op i:
    - a non-SYNC dependency whose first resource is i's own (first or second) ended no later than
      that resource became free, and i waits for the free time anyway: dropped (not for SYNC ops,
      which wait for no resource, nor for flows on shared links, whose overlap test compares the
      dependencies' end with the free time);
    - of two neighbouring non-SYNC dependencies on the same first resource, the smaller id cannot
      end later: dropped (`bounds.neighbour_prune`).
    The maximum over the kept dependencies, with the free times, is exactly the value over all of
    them, so the replay's times are bit-identical (tested). On emitted schedules every op keeps at
    most one dependency, and `run_fast` then takes its single-dependency loop.
    """
    n = len(p.res)
    ptr, idx = p.dep_ptr, p.dep_idx
    if len(idx) == 0:
        return ptr, idx
    owner = np.repeat(np.arange(n, dtype=np.int32), np.diff(ptr))
    R = len(p.slots)
    res = p.res.astype(np.int16)
    res2 = p.res2.astype(np.int16)
    sync_dep = p.is_sync[idx]
    dres = res[idx]
    shared = np.asarray(p.shared, dtype=bool)
    prunable = (~p.is_sync & ~shared[p.res])[owner]
    keep = ~(prunable & ~sync_dep & ((dres == res[owner]) | (dres == res2[owner])))
    group = dres.astype(np.int32)
    syncs = np.flatnonzero(sync_dep)
    group[syncs] = R + syncs  # SYNC dependencies: never merged
    neighbour_prune(owner, group, idx, keep)
    return _csr(owner, idx, keep, n)


def run_fast(p: Prepared, compiled: bool | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact single pass when no flows overlap on a shared link; None when they would.

    The pass is compiled (`kernels.replay_kernel`, numba) over all dependencies, reading the
    schedule's columns in place; it is the same arithmetic in the same order as
    `run_fast_python` (tested bit-identical: the dependencies that pass prunes cannot set a
    start). Small schedules (`bounds.use_compiled`) take `run_fast_python` instead."""
    if not use_compiled(len(p.kind), compiled):
        return run_fast_python(p)
    from ndpc.backends.simulator.kernels import (
        replay_kernel,
    )  # lazy: numba loads only when compiled code runs

    ok, start, end = replay_kernel(p.dep_ptr, p.dep_idx, _kernel_ops(p), _kernel_tables(p))
    return (start, end) if ok else None


def _kernel_ops(p: Prepared) -> tuple:
    """The per-op arrays the compiled engines read (no copies of the schedule's columns)."""
    return (p.kind, p.sres, p.unit, p.reason, p.nbytes, p.dur)


def _kernel_tables(p: Prepared) -> tuple:
    """The per-resource tables the compiled engines read."""
    return (
        np.asarray(p.remap, dtype=np.int64),
        np.asarray(p.slots, dtype=np.int64),
        np.asarray(p.shared, dtype=np.bool_),
        np.asarray(p.bandwidth, dtype=np.float64),
        np.asarray(p.link_setup, dtype=np.float64),
        np.asarray(p.cap_tab, dtype=np.float64).reshape(-1, 2),
        np.asarray(p.host, dtype=np.bool_),
        int(p.ndp0),
        int(p.hs_res),
        float(p.host_sync),
    )


def run_fast_python(p: Prepared) -> tuple[np.ndarray, np.ndarray] | None:
    """`run_fast` in pure Python (the reference the compiled pass is tested against).

    Dependencies are first pruned (`prune_deps`) to those that can set an op's start; when each
    op keeps at most one (the usual case) a loop with one dependency index per op runs."""
    n = len(p.kind)
    special = p.is_sync | (p.res2 >= 0)
    shared = np.asarray(p.shared, dtype=bool)
    if shared.any():
        special |= shared[p.res]
    qptr, qidx = prune_deps(p)
    special_l = special.tolist()
    deg = np.diff(qptr)
    if n and deg.max() <= 1:
        # at most one dependency each: one index per op, n = "none" (end[n] stays 0.0)
        one = np.full(n, n, dtype=np.int64)
        one[deg == 1] = qidx
        one_l = one.tolist()
        res_l = p.res.tolist()
        res2_l = p.res2.tolist()
        dur_l = p.dur.tolist()
        sync_l = p.is_sync.tolist()
        shared_l = list(p.shared)
        free = [0.0] * len(p.slots)
        start = [0.0] * n
        end = [0.0] * (n + 1)
        for i in range(n):
            t = end[one_l[i]]
            r = res_l[i]
            if special_l[i]:
                if sync_l[i]:
                    start[i] = t
                    end[i] = t + dur_l[i]
                    continue
                if shared_l[r] and t < free[r]:
                    return None
                f = free[r]
                if f > t:
                    t = f
                r2 = res2_l[i]
                e = t + dur_l[i]
                if r2 >= 0:
                    f = free[r2]
                    if f > t:
                        t = f
                        e = t + dur_l[i]
                    free[r2] = e
            else:
                f = free[r]
                if f > t:
                    t = f
                e = t + dur_l[i]
            start[i] = t
            end[i] = e
            free[r] = e
        del end[n]
        return np.asarray(start), np.asarray(end)
    return _run_fast_general(p, qptr.tolist(), qidx.tolist(), special_l)


def _run_fast_general(
    p: Prepared, ptr: list[int], dep: list[int], special_l: list[bool]
) -> tuple[np.ndarray, np.ndarray] | None:
    """`run_fast` with any number of (pruned) dependencies per op."""
    n = len(p.res)
    res_l = p.res.tolist()
    res2_l = p.res2.tolist()
    dur_l = p.dur.tolist()
    sync_l = p.is_sync.tolist()
    shared_l = list(p.shared)
    start = [0.0] * n
    end = [0.0] * n
    free = [0.0] * len(p.slots)
    a = 0
    for i in range(n):
        b = ptr[i + 1]
        if b == a + 1:
            t = end[dep[a]]
        elif b == a:
            t = 0.0
        elif b == a + 2:
            t = end[dep[a]]
            u = end[dep[a + 1]]
            if u > t:
                t = u
        else:
            t = max([end[j] for j in dep[a:b]])
        a = b
        r = res_l[i]
        if special_l[i]:
            if sync_l[i]:
                start[i] = t
                end[i] = t + dur_l[i]
                continue
            if shared_l[r] and t < free[r]:
                return None  # this flow would overlap the previous one: fair sharing applies
            f = free[r]
            if f > t:
                t = f
            r2 = res2_l[i]
            if r2 >= 0:
                f = free[r2]
                if f > t:
                    t = f
                e = t + dur_l[i]
                free[r2] = e
            else:
                e = t + dur_l[i]
        else:
            f = free[r]
            if f > t:
                t = f
            e = t + dur_l[i]
        start[i] = t
        end[i] = e
        free[r] = e
    return np.asarray(start), np.asarray(end)


_DONE, _DATA_START, _FLOW_DONE = 0, 1, 2


def _ints(a: np.ndarray) -> array:
    """A numpy column as a typed int64 array (same values, 8 bytes an item)."""
    return array("q", np.ascontiguousarray(a, dtype=np.int64).tobytes())


def _floats(a: np.ndarray) -> array:
    """A numpy column as a typed float64 array (the same doubles, 8 bytes an item)."""
    return array("d", np.ascontiguousarray(a, dtype=np.float64).tobytes())


def run_exact(p: Prepared, compiled: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered event loop with FIFO admission, slots, demand-before-prefetch priority and
    max-min fair link sharing. Compiled (`kernels.exact_kernel`, numba: the same decisions in
    the same order as `run_exact_python`, tested bit-identical); it holds no Python object per
    op, only the start and end times and the dependants CSR (about 24 bytes an op plus 4 per
    dependency, besides the durations). Small schedules (`bounds.use_compiled`) take
    `run_exact_python`."""
    if not use_compiled(len(p.kind), compiled) or len(p.dep_idx) >= 2**31:
        return run_exact_python(p)
    from ndpc.backends.simulator.kernels import exact_kernel  # lazy: numba

    return exact_kernel(p.dep_ptr, p.dep_idx, _kernel_ops(p), _kernel_tables(p))


def run_exact_python(p: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """The event loop in pure Python (the reference `exact_kernel` is tested against)."""
    n = len(p.res)
    R = len(p.slots)
    # Per-op columns as typed arrays (8 bytes an item), not lists: a list of Python floats costs
    # ~32 bytes an item, and this loop holds ~16 columns of n items (the serving runs' peak RSS).
    res, res2 = _ints(p.res), _ints(p.res2)
    dur, setup, nbytes, cap = _floats(p.dur), _floats(p.setup), _floats(p.nbytes), _floats(p.cap)
    is_sync = _ints(p.is_sync)
    slots, shared, bw = list(p.slots), list(p.shared), list(p.bandwidth)
    prio = _ints(p.prio)
    owner = np.repeat(np.arange(n), np.diff(p.dep_ptr))
    order = np.argsort(p.dep_idx, kind="stable")
    users = _ints(owner[order])
    del owner, order
    users_ptr = _ints(np.concatenate([[0], np.cumsum(np.bincount(p.dep_idx, minlength=n))]))
    waiting = _ints(np.diff(p.dep_ptr))

    def cls(op: int, r: int) -> int:
        """The admission class of `op` at resource `r`: its priority on a shared link it flows
        on, else 0 (one FIFO queue)."""
        return prio[op] if shared[r] and res[op] == r else 0

    # queues[r][c]: the ops of class c waiting for resource r, in id order (the classes share
    # the resource's slots; class 0 is admitted first)
    queues: list[tuple[array, array]] = [(array("q"), array("q")) for _ in range(R)]
    for i in range(n):
        if not is_sync[i]:
            queues[res[i]][cls(i, res[i])].append(i)
            if res2[i] >= 0:
                queues[res2[i]][0].append(i)
    head = [[0, 0] for _ in range(R)]
    active = [0] * R
    ready = bytearray(n)
    start = _floats(np.zeros(n))
    end = _floats(np.zeros(n))
    heap: list[tuple] = []
    seq = 0
    flows: list[dict[int, float]] = [{} for _ in range(R)]  # op -> remaining bytes
    rates: list[dict[int, float]] = [{} for _ in range(R)]
    last = [0.0] * R
    gen = _ints(np.zeros(n, np.int64))

    def push(t: float, what: int, op: int, g: int = 0) -> None:
        nonlocal seq
        heapq.heappush(heap, (t, seq, what, op, g))
        seq += 1

    def at_head(op: int, r: int) -> bool:
        c = cls(op, r)
        q = queues[r][c]
        h = head[r][c]
        return h < len(q) and q[h] == op

    def try_start(r: int, now: float) -> None:
        for c in (0, 1):
            q = queues[r][c]
            while head[r][c] < len(q) and active[r] < slots[r]:
                op = q[head[r][c]]
                if not ready[op]:
                    break
                if res2[op] >= 0:
                    other = res2[op] if res[op] == r else res[op]
                    c2 = cls(op, other)
                    if not at_head(op, other) or active[other] >= slots[other]:
                        break
                    head[other][c2] += 1
                    active[other] += 1
                head[r][c] += 1
                active[r] += 1
                start[op] = now
                if shared[res[op]]:
                    push(now + setup[op], _DATA_START, op)
                else:
                    push(now + dur[op], _DONE, op)

    def advance(r: int, now: float) -> None:
        dt = now - last[r]
        if dt > 0:
            fl, rt = flows[r], rates[r]
            for op in fl:
                fl[op] -= rt[op] * dt
        last[r] = now

    def reshare(r: int, now: float) -> None:
        fl = flows[r]
        k = len(fl)
        if not k:
            return
        rt = rates[r] = {}
        share = bw[r] / k
        if all(cap[o] >= share and not prio[o] for o in fl):  # common case: equal shares
            for op, left in fl.items():
                rt[op] = share
                gen[op] += 1
                push(now + max(left, 0.0) / share, _FLOW_DONE, op, gen[op])
            return
        left = bw[r]
        for group in ([o for o in fl if not prio[o]], [o for o in fl if prio[o]]):
            k = len(group)
            for op in sorted(group, key=lambda o: (cap[o], o)):  # max-min: capped flows first
                rate = min(cap[op], left / k) if left > 0 else 0.0
                rt[op] = rate
                left -= rate
                k -= 1
                gen[op] += 1
                if rate > 0:  # a starved prefetch flow waits for the next reshare
                    push(now + max(fl[op], 0.0) / rate, _FLOW_DONE, op, gen[op])

    def release(r: int, touched: list[int]) -> None:
        active[r] -= 1
        touched.append(r)

    def complete(op0: int, now: float) -> None:
        work = [op0]
        touched: list[int] = []
        while work:
            op = work.pop()
            end[op] = now
            if not is_sync[op]:
                release(res[op], touched)
                if res2[op] >= 0:
                    release(res2[op], touched)
            for u in users[users_ptr[op] : users_ptr[op + 1]]:
                left = waiting[u] - 1
                waiting[u] = left
                if left == 0:
                    ready[u] = True
                    if is_sync[u]:
                        start[u] = now
                        if dur[u] > 0:  # a release wait: done later
                            push(now + dur[u], _DONE, u)
                        else:
                            work.append(u)
                    elif at_head(u, res[u]):  # only a queue's head can start
                        touched.append(res[u])
                    elif res2[u] >= 0 and at_head(u, res2[u]):
                        touched.append(res2[u])
        if len(touched) == 1:
            try_start(touched[0], now)
        else:
            for r in sorted(set(touched)):
                try_start(r, now)

    initial = [i for i in range(n) if waiting[i] == 0]
    for i in initial:
        ready[i] = True
    for i in initial:
        if is_sync[i]:
            if dur[i] > 0:  # a release wait (docs/simulator.md): ends at its release time
                push(dur[i], _DONE, i)
            else:
                complete(i, 0.0)
    for r in range(R):
        try_start(r, 0.0)
    while heap:
        now, _, what, op, g = heapq.heappop(heap)
        if what == _DONE:
            complete(op, now)
        elif what == _DATA_START:
            r = res[op]
            advance(r, now)
            flows[r][op] = nbytes[op]
            reshare(r, now)
        elif g == gen[op]:
            r = res[op]
            advance(r, now)
            del flows[r][op]
            reshare(r, now)
            complete(op, now)
    return np.frombuffer(start, np.float64).copy(), np.frombuffer(end, np.float64).copy()
