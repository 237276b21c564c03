"""One MoE layer's expansion into schedule ops.

`MoeLayerEmitter.emit` turns one `LayerDecision` for a batch's MoE layer (every sequence's tokens
grouped per expert) into kernels, transfers and the combine, appended to the one
`ndpc.backends.schedule.ScheduleBuilder` with the batch's tag. GPU residency and the prefetch
queue belong to `ndpc.backends.gpu_memory.GpuMemory`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from ndpc.backends.cost import CostModel
from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.gpu_memory import GpuMemory
from ndpc.backends.policies.base import LayerDecision, LayerView, Placement, Where
from ndpc.backends.schedule import OpKind, Reason, ScheduleBuilder
from ndpc.ir.attrs import ReduceSite

GPU_KERNEL, NDP_KERNEL, CPU_KERNEL = int(OpKind.GPU_KERNEL), int(OpKind.NDP_KERNEL), int(OpKind.CPU_KERNEL)  # fmt: skip
TRANSFER, REDUCE, PREFETCH, SYNC = int(OpKind.TRANSFER), int(OpKind.REDUCE), int(OpKind.PREFETCH), int(OpKind.SYNC)  # fmt: skip


class _Layer:
    """Per-layer constants, computed once (FfnAttr properties are not free at 1M ops)."""

    def __init__(self, view: LayerView, act_bytes: float) -> None:
        ffn = view.plan.ffn
        self.layer, self.index = view.plan.layer, view.plan.index
        self.times: ExpertTimes | None = None  # set by the emitter when it has a cost model
        self.fpt = float(ffn.flops_per_token())
        self.wbytes = float(ffn.weight_bytes)
        self.d = ffn.d_model
        self.act = ffn.d_model * act_bytes  # bytes of one token's activation
        self.reduce = view.plan.reduce
        self.mask = None  # the layer's row of the resident mask (set by the emitter)


class MoeLayerEmitter:
    """Expands one (step, MoE layer) decision into schedule ops (see docs/schedule.md tags)."""

    def __init__(self, ops: ScheduleBuilder, memory: GpuMemory, placement: Placement,
                 units: int, has_link: bool, act_bytes: float,
                 cost: CostModel | None = None) -> None:  # fmt: skip
        self.ops = ops
        self.cost = cost  # used to order copies among NDP kernels when they exclude each other
        self.exclusive = cost is not None and cost.target.exclusive_host_access
        self.memory = memory
        self.res = memory.res
        self.placement = placement
        self.units = units
        self.has_link = has_link
        self.act_bytes = act_bytes
        idx = ops.index
        self.gpu, self.cpu = idx["gpu"], idx.get("cpu", -1)
        self.h2d, self.d2h, self.link = idx["pcie.h2d"], idx["pcie.d2h"], idx.get("ndplink", -1)
        self.ndp = [idx[f"ndp{u}"] for u in range(units)]
        self.stats = {"gpu_fetch": 0, "ndp_experts": 0, "cpu_experts": 0, "shard_moves": 0}
        self._layers: dict[int, _Layer] = {}
        self._buckets: dict[bytes, list[list[int]]] = {}  # placements -> positions per Where
        self._sorted: dict[tuple[int, ...], tuple[list[int], dict[int, int]]] = {}
        self.tag = 0  # the tag of the batch being emitted (set by `emit`)
        self.add = partial(ops.append, 0)  # append with the batch's tag

    def emit(self, view: LayerView, dec: LayerDecision, router: int, extra: Sequence[int],
             tag: int, lists: tuple[list[int], list[int]] | None = None) -> int:  # fmt: skip
        """Emit the layer's expert work after `router`, tagged `tag`; returns the combine op (the
        layer output). `extra` are other ops the combine waits for (shared experts). `lists`:
        the view's experts and counts as Python lists, when the caller has them."""
        if tag != self.tag:
            self.tag = tag
            self.add = partial(self.ops.append, tag)
        experts, counts = (
            lists if lists is not None else (view.experts.tolist(), view.counts.tolist())
        )
        resident, fetch, ndp, cpu = self._place(dec.where, len(experts))
        lay = self._layers.get(view.plan.index)
        if lay is None:
            lay = self._layers[view.plan.index] = _Layer(view, self.act_bytes)
            lay.mask = self.res.mask[lay.index]
            if self.cost is not None:
                lay.times = ExpertTimes(view.plan.ffn, self.cost, self.act_bytes)
        if self.memory.fetched:
            self.memory.fetched = {}
        parts: list[int] = list(extra)
        if resident:
            self._gpu_resident(lay, experts, counts, resident, router, parts)
        tokens = view.tokens
        if fetch or cpu or dec.moves:
            if fetch and len(fetch) > 1 and lay.times is not None and not dec.serial:
                fetch = self._johnson(lay, experts, counts, fetch)
            if cpu and not fetch:  # no copies: CPU results go first on pcie.h2d
                self._cpu(lay, experts, counts, cpu, router, parts)
            moved = self._moves(lay, dec, router) if dec.moves else {}
            if fetch and ndp and self.exclusive and lay.times is not None and not dec.serial:
                self._fetch_among_ndp(lay, tokens, dec, experts, counts, fetch, ndp, router,
                                      moved, parts)  # fmt: skip
            else:
                if fetch:
                    self._gpu_fetch(lay, dec, experts, counts, fetch, router, parts)
                if ndp:
                    self._ndp(lay, tokens, dec, experts, counts, ndp, router, moved, parts)
            if cpu and fetch:  # CPU results queue on pcie.h2d behind the copies
                # serial: one host thread issues the copies, then runs the CPU experts
                after = (
                    self.memory.fetched[(lay.index, experts[fetch[-1]])][-1]
                    if dec.serial
                    else router
                )
                self._cpu(lay, experts, counts, cpu, after, parts)
        elif ndp:
            self._ndp(lay, tokens, dec, experts, counts, ndp, router, {}, parts)
        ops = self.ops
        rows, pack, deps = ops.writer()
        n = len(parts)
        if n:
            deps.fromlist(parts)
        else:
            deps.append(router)
        rows += pack(REDUCE, self.gpu, tag, lay.layer, -1, -1, -1, COMBINE, n or 1,
                     float(max(n - 1, 0) * tokens * lay.d), (n + 1) * tokens * lay.act, 0.0)  # fmt: skip
        ops.n += 1
        return ops.n - 1

    def clear_caches(self) -> None:
        """Drop the look-up tables `emit` fills (they only save time; emission may go on)."""
        self._buckets.clear()
        self._sorted.clear()

    def _place(self, where, n: int) -> list[list[int]]:
        """The positions of the experts per `Where` value (read-only lists), memoised per
        placement vector while they are short (the usual decode layer repeats a few)."""
        where = np.asarray(where, dtype=np.uint8)
        if len(where) != n:
            raise ValueError(f"policy returned {len(where)} placements for {n} experts")
        key = where.tobytes()
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = [[], [], [], []]
            for i, w in enumerate(where.tolist()):
                buckets[w].append(i)
            if n <= 16 and len(self._buckets) < 4096:
                self._buckets[key] = buckets
        return buckets

    def _gpu_resident(self, lay: _Layer, experts, counts, picks, router: int, parts) -> None:
        mask, ready, gpu, tag = lay.mask, self.res.ready, self.gpu, self.tag
        pending, index, layer = self.memory.pending, lay.index, lay.layer
        fpt, wbytes, act = lay.fpt, lay.wbytes, lay.act
        ops = self.ops
        rows, pack, deps = ops.writer()
        put, one, keep = deps.fromlist, deps.append, parts.append
        n = ops.n
        for i in picks:
            e, c = experts[i], counts[i]
            if not mask[e]:
                raise ValueError(f"policy ran layer {layer} expert {e} on the GPU as resident, "
                                 "but it is not in GPU memory")  # fmt: skip
            key = (index, e)
            if pending and key in pending:
                ops.n = n
                self.memory.flush(index, e, router, tag)
                n = ops.n
            op = ready.get(key, -1)
            if type(op) is int:
                if op >= 0:
                    put([router, op])
                    nd = 2
                else:
                    one(router)
                    nd = 1
            else:  # the per-shard copies
                put([router, *op])
                nd = 1 + len(op)
            rows += pack(GPU_KERNEL, gpu, tag, layer, e, -1, -1, R_RESIDENT, nd, fpt * c,
                         wbytes + 2.0 * c * act, 0.0)  # fmt: skip
            keep(n)
            n += 1
        ops.n = n

    def _gpu_fetch(self, lay: _Layer, dec: LayerDecision, experts, counts, picks, router: int,
                   parts) -> None:  # fmt: skip
        prev = router  # with dec.serial each copy waits for the previous expert's kernel
        for i in picks:
            copies = self._copies(lay, experts[i], [prev])
            self._fetched_kernel(lay, dec, i, experts[i], counts[i], copies, parts)
            if dec.serial:
                prev = parts[-1]

    def _copies(self, lay: _Layer, e: int, deps: list[int]) -> tuple[int, ...]:
        """Copy expert `e`'s weights to the GPU from where they live: one transfer per shard,
        tagged with the NDP unit it reads (the unit's host bandwidth caps it; with exclusive
        host access it blocks the unit's NDP work)."""
        units = self.placement.units(lay.index, e)
        nbytes = lay.wbytes / len(units)
        add, h2d = self.add, self.h2d
        return tuple(add(TRANSFER, h2d, 0.0, 0.0, nbytes, deps, lay.layer, e, s, u, R_FETCH)
                     for s, u in enumerate(units))  # fmt: skip

    def _fetched_kernel(self, lay: _Layer, dec: LayerDecision, i: int, e: int, c: int,
                        copies: Sequence[int], parts: list[int]) -> None:  # fmt: skip
        parts.append(self.add(GPU_KERNEL, self.gpu, lay.fpt * c, lay.wbytes + 2.0 * c * lay.act,
                                  0.0, list(copies), lay.layer, e, -1, -1, R_FETCH))  # fmt: skip
        self.stats["gpu_fetch"] += 1
        self.memory.fetched[(lay.index, e)] = tuple(copies)
        if dec.keep is not None and dec.keep[i]:
            self.res.add(lay.index, e, tuple(copies) if len(copies) > 1 else copies[0])

    def _johnson(self, lay: _Layer, experts, counts, picks: list[int]) -> list[int]:
        """Fetched experts in Johnson's order for the copy -> GPU compute flow shop (the order the
        balance rule's time model assumes); unchanged when all are alike."""
        t, units_of = lay.times, self.placement.units
        fetch = {i: t.fetch(len(units_of(lay.index, experts[i]))) for i in picks}
        gpu = {i: t.gpu(counts[i]) for i in picks}
        if len(set(fetch.values())) <= 1 and len(set(gpu.values())) <= 1:
            return picks
        first = sorted((i for i in picks if fetch[i] <= gpu[i]), key=lambda i: (fetch[i], i))
        last = sorted((i for i in picks if fetch[i] > gpu[i]), key=lambda i: (-gpu[i], i))
        return first + last

    def _fetch_among_ndp(self, lay: _Layer, tokens: int, dec: LayerDecision, experts, counts,
                         fetch: list[int], ndp: list[int], router: int, moved: dict[int, int],
                         parts: list[int]) -> None:  # fmt: skip
        """GPU copies and NDP kernels of one layer when a copy blocks the unit it reads.

        Both a unit and the host link admit ops in schedule order, so the order emitted here is
        the order they run in. It comes from a list schedule on the cost model's uncontended
        times: copies go through the link one after another (an expert's shards in the order
        their units become free); an NDP kernel is slotted in front of the next copy when it
        starts earlier on another unit, or, on the copy's own unit, when it ends before the copy
        could start. GPU kernels follow their expert's last shard copy."""
        t, add, layer = lay.times, self.add, lay.layer
        queues: dict[int, list[tuple]] = {}
        for job in self._ndp_jobs(lay, dec, experts, counts, ndp):
            queues.setdefault(job[0], []).append(job)
        bcast = self._broadcast(lay, tokens, {u: sum(j[3] for j in q) for u, q in queues.items()},
                                router)  # fmt: skip
        t_act = t.act_down(tokens)
        qunit = list(queues)  # queue j's unit; ties go to the first queue listed
        qjobs = list(queues.values())
        qlen = [len(q) for q in qjobs]
        heads = [0] * len(qjobs)
        left = sum(qlen)  # kernels not yet emitted
        free = [0.0] * self.units  # when each unit's last admitted op ends
        link = 0.0
        kernels: dict[int, list[int]] = {}
        routed: dict[int, int] = {}
        pending = [(i, list(enumerate(self.placement.units(lay.index, experts[i])))) for i in fetch]
        done: list[int] = []
        inf = float("inf")
        queues_at = range(len(qjobs))
        ndp_res, h2d = self.ndp, self.h2d
        while pending or left:
            c_start, pick, pick_unit = inf, None, -1
            if pending:
                shards = pending[0][1]
                pick = shards[0]  # the shard whose unit is free first (ties: lower shard)
                key = (free[pick[1]], pick[0])
                for su in shards:
                    k = (free[su[1]], su[0])
                    if k < key:
                        pick, key = su, k
                pick_unit = pick[1]
                c_start = max(link, free[pick_unit])
            best, best_start = -1, inf
            for j in queues_at:
                h = heads[j]
                if h == qlen[j]:
                    continue
                u = qunit[j]
                k_start = max(free[u], t_act)
                if u == pick_unit:
                    fits = k_start + qjobs[j][h][6] <= c_start
                else:
                    fits = k_start < c_start
                if fits and k_start < best_start:
                    best, best_start = j, k_start
            if best >= 0:
                u, s, e, c, flops, mem, dur = qjobs[best][heads[best]]
                heads[best] += 1
                left -= 1
                free[u] = best_start + dur
                deps = [bcast[u], moved[u]] if u in moved else [bcast[u]]
                k = add(NDP_KERNEL, ndp_res[u], flops, mem, 0.0, deps, layer, e, s, u, R_NDP)
                if u in kernels:
                    kernels[u].append(k)
                    routed[u] += c
                else:
                    kernels[u] = [k]
                    routed[u] = c
                continue
            i, shards = pending[0]
            assert pick is not None
            shards.remove(pick)
            e = experts[i]
            deg = len(self.placement.units(lay.index, e))
            link = free[pick_unit] = c_start + t.fetch_shard(deg)
            done.append(add(TRANSFER, h2d, 0.0, 0.0, lay.wbytes / deg, [router], layer, e,
                            pick[0], pick_unit, R_FETCH))  # fmt: skip
            if not shards:
                pending.pop(0)
                self._fetched_kernel(lay, dec, i, e, counts[i], done, parts)
                done = []
        self.stats["ndp_experts"] += len(ndp)
        self._partials(lay, tokens, kernels, routed, parts)

    def _ndp_jobs(self, lay: _Layer, dec: LayerDecision, experts, counts, picks) -> list[tuple]:
        """(unit, shard, expert, tokens, flops, mem bytes, est. time) per NDP kernel, in order."""
        units_of, override, t = self.placement.units, dec.unit, lay.times
        jobs = []
        for i in picks:
            e, c = experts[i], counts[i]
            units = units_of(lay.index, e)
            if override is not None and override[i] >= 0 and len(units) == 1:
                units = (int(override[i]),)
            deg = len(units)
            flops, mem = lay.fpt * c / deg, lay.wbytes / deg + 2.0 * c * lay.act
            dur = t.ndp(c, deg) if t is not None else 0.0
            jobs.extend((u, s, e, c, flops, mem, dur) for s, u in enumerate(units))
        return jobs

    def _cpu(self, lay: _Layer, experts, counts, picks, router: int, parts) -> None:
        if self.cpu < 0:
            raise ValueError("policy chose the host CPU but the target has none")
        add = self.add
        for i in picks:
            e, c = experts[i], counts[i]
            down = add(TRANSFER, self.d2h, 0.0, 0.0, c * lay.act, [router], lay.layer, e, -1, -1,
                       R_CPU)  # fmt: skip
            k = add(CPU_KERNEL, self.cpu, lay.fpt * c, lay.wbytes + 2.0 * c * lay.act, 0.0, [down],
                    lay.layer, e, -1, -1, R_CPU)  # fmt: skip
            parts.append(add(TRANSFER, self.h2d, 0.0, 0.0, c * lay.act, [k], lay.layer, e, -1, -1,
                             R_CPU))  # fmt: skip
            self.stats["cpu_experts"] += 1

    def _moves(self, lay: _Layer, dec: LayerDecision, router: int) -> dict[int, int]:
        """Issue shard moves (re-plans); returns unit -> the last move op writing to it.

        Over the inter-unit link: one transfer tagged with the destination unit. Without one the
        weights go through the host: read from the source unit (`pcie.h2d`, tagged `src`), then
        written to the destination (`pcie.d2h`, tagged `dst`), so each leg is capped by and (with
        exclusive host access) blocks the DIMM it touches."""
        last: dict[int, int] = {}
        add = self.add
        for mv in dec.moves:
            self.placement.apply(mv)
            nbytes = float(mv.nbytes)
            if self.link >= 0:
                last[mv.dst] = add(TRANSFER, self.link, 0.0, 0.0, nbytes, [router], lay.layer,
                                   mv.expert, mv.shard, mv.dst, R_REPLAN)  # fmt: skip
            else:
                up = add(TRANSFER, self.h2d, 0.0, 0.0, nbytes, [router], lay.layer, mv.expert,
                         mv.shard, mv.src, R_REPLAN)  # fmt: skip
                last[mv.dst] = add(TRANSFER, self.d2h, 0.0, 0.0, nbytes, [up], lay.layer,
                                   mv.expert, mv.shard, mv.dst, R_REPLAN)  # fmt: skip
            self.stats["shard_moves"] += 1
        return last

    def _ndp(self, lay: _Layer, tokens: int, dec: LayerDecision, experts, counts, picks,
             router: int, moved: dict[int, int], parts) -> None:  # fmt: skip
        if dec.unit is None and not moved:
            index = lay.index
            first = self.placement.alike(index)  # one look-up for a fully split layer
            if first is None:
                units_of = self.placement.units
                first = units_of(index, experts[picks[0]])
                if not all(units_of(index, experts[i]) == first for i in picks):
                    first = None
            if first is not None:
                self._ndp_alike(lay, tokens, experts, counts, picks, first, router, parts)
                return
        self._ndp_any(lay, tokens, dec, experts, counts, picks, router, moved, parts)

    def _ndp_any(self, lay: _Layer, tokens: int, dec: LayerDecision, experts, counts, picks,
                 router: int, moved: dict[int, int], parts) -> None:  # fmt: skip
        """`_ndp` for any placement (per-expert units, unit overrides, shard moves)."""
        units_of = self.placement.units
        override = dec.unit
        index = lay.index
        routed: dict[int, int] = {}
        shards = []
        for i in picks:
            e, c = experts[i], counts[i]
            units = units_of(index, e)
            if override is not None and override[i] >= 0 and len(units) == 1:
                units = (int(override[i]),)
            shards.append((e, c, units))
            for u in units:
                routed[u] = routed.get(u, 0) + c
        bcast = self._broadcast(lay, tokens, routed, router)
        kernels: dict[int, list[int]] = {u: [] for u in routed}
        fpt, wbytes, act, layer, tag, ndp_res = (
            lay.fpt,
            lay.wbytes,
            lay.act,
            lay.layer,
            self.tag,
            self.ndp,
        )
        ops = self.ops
        rows, pack, deps = ops.writer()
        put, one = deps.fromlist, deps.append
        n = ops.n
        for e, c, units in shards:
            deg = len(units)
            flops, mem = fpt * c / deg, wbytes / deg + 2.0 * c * act
            for s, u in enumerate(units):
                if u in moved:
                    put([bcast[u], moved[u]])
                    nd = 2
                else:
                    one(bcast[u])
                    nd = 1
                rows += pack(NDP_KERNEL, ndp_res[u], tag, layer, e, s, u, R_NDP, nd, flops, mem,
                             0.0)  # fmt: skip
                kernels[u].append(n)
                n += 1
        ops.n = n
        self.stats["ndp_experts"] += len(picks)
        self._partials(lay, tokens, kernels, routed, parts)

    def _ndp_alike(self, lay: _Layer, tokens: int, experts, counts, picks, units: tuple[int, ...],
                   router: int, parts: list[int]) -> None:  # fmt: skip
        """`_ndp` when every expert sits on the same units (fully split layers, the usual case)
        and nothing overrides or moves them: the same ops in the same order, with the per-unit
        bookkeeping done once (every unit gets the same tokens)."""
        ordered = self._sorted.get(units)
        if ordered is None:
            ordered = self._sorted[units] = (sorted(units), {u: s for s, u in enumerate(units)})
        su, shard_of = ordered
        deg = len(units)
        total = 0
        for i in picks:
            total += counts[i]
        layer, tag, act, fpt, wbytes, ndp_res = (
            lay.layer,
            self.tag,
            lay.act,
            lay.fpt,
            lay.wbytes,
            self.ndp,
        )
        nbytes = min(tokens, total) * act
        ops = self.ops
        rows, pack, deps = ops.writer()
        put, one = deps.fromlist, deps.append
        n = ops.n
        d2h = self.d2h
        bcast = [0] * deg  # per shard position: its unit's broadcast
        for u in su:
            one(router)
            rows += pack(TRANSFER, d2h, tag, layer, -1, -1, u, R_BROADCAST, 1, 0.0, 0.0, nbytes)
            bcast[shard_of[u]] = n
            n += 1
        first = n
        for i in picks:
            e, c = experts[i], counts[i]
            flops, mem = fpt * c / deg, wbytes / deg + 2.0 * c * act
            for s, u in enumerate(units):
                one(bcast[s])
                rows += pack(NDP_KERNEL, ndp_res[u], tag, layer, e, s, u, R_NDP, 1, flops, mem,
                             0.0)  # fmt: skip
            n += deg
        end = n
        self.stats["ndp_experts"] += len(picks)
        # unit u's kernels: every deg-th op from its shard position (one per expert)
        if lay.reduce is ReduceSite.GPU or self.link < 0 or deg == 1:
            h2d = self.h2d
            for u in su:
                k = list(range(first + shard_of[u], end, deg))
                put(k)
                rows += pack(TRANSFER, h2d, tag, layer, -1, -1, u, R_PSUM, len(k), 0.0, 0.0, nbytes)
                parts.append(n)
                n += 1
            ops.n = n
            return
        root, link = su[0], self.link
        red_deps = list(range(first + shard_of[root], end, deg))
        for u in su[1:]:
            k = list(range(first + shard_of[u], end, deg))
            put(k)
            rows += pack(TRANSFER, link, tag, layer, -1, -1, u, R_PSUM, len(k), 0.0, 0.0, nbytes)
            red_deps.append(n)
            n += 1
        out = tokens * lay.act
        put(red_deps)
        rows += pack(REDUCE, ndp_res[root], tag, layer, -1, -1, root, R_PSUM, len(red_deps),
                     float((deg - 1) * tokens * lay.d), sum([nbytes] * deg) + out, 0.0)  # fmt: skip
        one(n)
        rows += pack(TRANSFER, self.h2d, tag, layer, -1, -1, root, R_PSUM, 1, 0.0, 0.0, out)
        parts.append(n + 1)
        ops.n = n + 2

    def _broadcast(self, lay: _Layer, tokens: int, routed: dict[int, int], router: int
                   ) -> dict[int, int]:  # fmt: skip
        """The activations each used unit needs, written into its memory over the host channels:
        one transfer per unit (the tokens routed to it, at most all), tagged with the unit (its
        host bandwidth caps it; with exclusive host access it holds the unit). unit -> op."""
        tag, d2h, layer, act = self.tag, self.d2h, lay.layer, lay.act
        ops = self.ops
        rows, pack, deps = ops.writer()
        one = deps.append
        n = first = ops.n
        out = {}
        for u in sorted(routed):
            one(router)
            rows += pack(TRANSFER, d2h, tag, layer, -1, -1, u, R_BROADCAST, 1, 0.0, 0.0,
                         min(tokens, routed[u]) * act)  # fmt: skip
            out[u] = n
            n += 1
        ops.n = first + len(out)
        return out

    def _partials(self, lay: _Layer, tokens: int, kernels: dict[int, list[int]],
                  routed: dict[int, int], parts: list[int]) -> None:  # fmt: skip
        """Each used unit's partial sum (its experts already weighted and added locally) goes to
        the GPU, or to the lowest used unit over the inter-unit link, reduced there, then up."""
        layer, act, tag = lay.layer, lay.act, self.tag
        units = sorted(kernels)
        ops = self.ops
        rows, pack, deps = ops.writer()
        put, one = deps.fromlist, deps.append
        n = ops.n
        if lay.reduce is ReduceSite.GPU or self.link < 0 or len(units) == 1:
            h2d = self.h2d
            for u in units:
                k = kernels[u]
                put(k)
                rows += pack(TRANSFER, h2d, tag, layer, -1, -1, u, R_PSUM, len(k), 0.0, 0.0,
                             min(tokens, routed[u]) * act)  # fmt: skip
                parts.append(n)
                n += 1
            ops.n = n
            return
        nbytes = {u: min(tokens, routed[u]) * act for u in units}
        root = units[0]
        red_deps = list(kernels[root])
        link = self.link
        for u in units[1:]:
            k = kernels[u]
            put(k)
            rows += pack(TRANSFER, link, tag, layer, -1, -1, u, R_PSUM, len(k), 0.0, 0.0,
                         nbytes[u])  # fmt: skip
            red_deps.append(n)
            n += 1
        out = tokens * lay.act
        put(red_deps)
        rows += pack(REDUCE, self.ndp[root], tag, layer, -1, -1, root, R_PSUM, len(red_deps),
                     float((len(units) - 1) * tokens * lay.d), sum(nbytes.values()) + out, 0.0)  # fmt: skip
        one(n)
        rows += pack(TRANSFER, self.h2d, tag, layer, -1, -1, root, R_PSUM, 1, 0.0, 0.0, out)
        parts.append(n + 1)
        ops.n = n + 2


# plain ints: faster to read per layer than the IntEnum members
W_RESIDENT, W_FETCH, W_NDP, W_CPU = (int(Where.GPU_RESIDENT), int(Where.GPU_FETCH), int(Where.NDP),
                                     int(Where.CPU))  # fmt: skip
R_RESIDENT, R_FETCH, R_NDP, R_CPU = (int(Reason.GPU_RESIDENT), int(Reason.GPU_FETCH), int(Reason.NDP),
                                     int(Reason.CPU))  # fmt: skip
R_BROADCAST, R_PSUM, R_REPLAN, COMBINE = (int(Reason.BROADCAST), int(Reason.PARTIAL_SUM),
                                          int(Reason.REPLAN), int(Reason.COMBINE))  # fmt: skip
