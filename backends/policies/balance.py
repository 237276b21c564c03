"""The paper's load-balancing-aware GPU/NDP dispatch (Algorithm B) as a run-time policy.

Each step, activated experts that are not in GPU memory are split between the NDP units and the
GPU by `greedy_split` over the layer's `SplitProblem` (the time model and the split algorithms
are in `split.py`); with `offload-resident`, resident experts may move to NDP too (`offload.py`);
with `host-cpu`, NDP experts may move to the host CPU (`host_cpu.py`).

Static part: `pack_shards` places the shards of experts whose TP degree is below the unit count
(LPT on expected load, ties to the current unit); `BalancePolicy` re-packs a layer when the
observed popularity drifts past `drift_threshold` (checked every `replan_interval` decode steps)
and charges the weight moves (`ShardMove`) in the schedule.
"""

from __future__ import annotations

import numpy as np

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import (
    NO_ACTIONS,
    DispatchPolicy,
    LayerDecision,
    LayerView,
    PolicyContext,
    ShardMove,
    StepActions,
    Where,
)
from ndpc.backends.policies.host_cpu import cpu_moves
from ndpc.backends.policies.offload import offload_first, offload_resident
from ndpc.backends.policies.split import build_problem, greedy_split, uniform_split
from ndpc.backends.static_placement import pack_shards


def shard_moves(
    index: int, old: list[tuple[int, ...]], new: list[tuple[int, ...]], shard_bytes: list[int]
) -> list[ShardMove]:
    """The moves that turn placement `old` into `new`, keeping shards already on a wanted unit."""
    moves: list[ShardMove] = []
    for e, (before, after) in enumerate(zip(old, new, strict=True)):
        free = [u for u in after if u not in before]
        for s, u in enumerate(before):
            if u not in after:
                dst = free.pop(0)
                moves.append(ShardMove(index, e, s, u, dst, shard_bytes[e]))
    return moves


class BalancePolicy(DispatchPolicy):
    """Algorithm B at run time: resident experts on the GPU, the rest split by `greedy_split`;
    plus drift-triggered re-packing of partially split experts (the static part)."""

    NAME = "balance"

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self.times = [ExpertTimes(p.ffn, ctx.cost, ctx.act_bytes) for p in ctx.plans]
        self._planned_pop: dict[int, np.ndarray] = {}
        self._pending: dict[int, tuple[ShardMove, ...]] = {}
        self._decode_steps = 0
        self.replans = 0
        # layers whose experts all span every unit: candidates differ only in token counts
        self._full = {p.index for p in ctx.plans if min(len(u) for u in p.shard_units) >= ctx.units}
        self._memo: dict[tuple[int, int, int, int], int] = {}
        # One-token steps on fully split layers without offload or host-CPU moves: all counts
        # are equal, so the split is `_uniform`'s count m of fetched candidates (memoised) and
        # the decision is a function of which activated experts are resident and of m; such
        # decisions are made once and shared (their `where` is read-only)
        self._simple = {
            p.index for p in ctx.plans
            if p.index in self._full and not p.dispatch.offload_resident and not p.dispatch.host_cpu
        }  # fmt: skip
        self._cpu_memo: dict[tuple[int, int, int, int], int] = {}  # `_cpu`'s moves
        self._equal: dict[bytes, int | None] = {}  # token counts -> their value when all equal
        self._shared: dict[tuple[bytes, int], LayerDecision] = {}

    def _uniform(self, view: LayerView, tokens: int, n: int, resident: int) -> int:
        """Fetch count for n identical, fully split candidates (memoised per situation)."""
        # decode (one token): the situation is fully described by (layer, n, resident count)
        key = (view.plan.index, tokens, n, resident) if view.tokens == 1 else None
        m = self._memo.get(key) if key else None
        if m is None:
            times = self.times[view.plan.index]
            problem, _ = build_problem(view, times, self.ctx.units, np.zeros(0, dtype=np.int64))
            used = self.ctx.units
            m = uniform_split(times.ndp(tokens, used), used, times.fetch(used), times.gpu(tokens), n,
                              problem, times.hold(used))  # fmt: skip
            if key:
                self._memo[key] = m
        return m

    def dispatch(self, view: LayerView) -> LayerDecision:
        index = view.plan.index
        if view.tokens != 1 or index not in self._simple or index in self._pending:
            return self._dispatch(view)
        counts = view.counts
        key = counts.tobytes()
        first = self._equal.get(key, -1)
        if first == -1:
            first = self._equal[key] = (
                int(counts[0]) if len(counts) and (counts == counts[0]).all() else None
            )
        if first is None:
            return self._dispatch(view)
        # the same decision as `_dispatch`: resident experts on the GPU, the first m of the
        # others fetched, the rest on NDP
        resident = view.resident[view.experts].tobytes()  # one byte per expert, 0 or 1
        n, held = len(resident), resident.count(1)
        m = self._uniform(view, first, n - held, held) if held < n else 0
        dec = self._shared.get((resident, m))
        if dec is None:
            where, left = [], m
            for r in resident:
                if r:
                    where.append(GPU_RESIDENT)
                elif left:
                    where.append(GPU_FETCH)
                    left -= 1
                else:
                    where.append(NDP)
            dec = self._shared[(resident, m)] = LayerDecision(where=np.array(where, np.uint8))
            dec.where.flags.writeable = False
        return dec

    def _dispatch(self, view: LayerView) -> LayerDecision:
        resident = view.resident[view.experts].tolist()
        counts = view.counts.tolist()
        where = [GPU_RESIDENT if r else NDP for r in resident]
        cand = [i for i, r in enumerate(resident) if not r]
        if cand:
            first = counts[cand[0]]
            if view.plan.index in self._full and all(counts[i] == first for i in cand):
                m = self._uniform(view, first, len(cand), len(resident) - len(cand))
                for i in cand[:m]:
                    where[i] = GPU_FETCH
            else:
                times = self.times[view.plan.index]
                problem, _ = build_problem(view, times, self.ctx.units, np.asarray(cand))
                for pos, g in zip(cand, greedy_split(problem), strict=True):
                    if g:
                        where[pos] = GPU_FETCH
        if view.plan.dispatch.offload_resident:
            where = self._offload(view, where)
        if view.plan.dispatch.host_cpu:
            where = self._cpu(view, where, counts)
        moves = self._pending.pop(view.plan.index, ())
        return LayerDecision(where=np.array(where, dtype=np.uint8), moves=moves)

    def _offload(self, view: LayerView, where: list[int]) -> list[int]:
        """`balance{offload-resident=true}`: resident experts to NDP while the layer shortens
        (backends/policies/offload.py); memoised per decode situation on fully split layers."""
        index = view.plan.index
        key = None
        if view.tokens == 1 and index in self._full:
            key = (index, -1, where.count(GPU_RESIDENT), where.count(GPU_FETCH), where.count(NDP))
            m = self._memo.get(key)
            if m is not None:
                return offload_first(where, m)
        out = offload_resident(view, self.times[index], self.ctx.units, where)
        if key is not None:
            self._memo[key] = sum(a != b for a, b in zip(where, out, strict=True))
        return out

    def _cpu(self, view: LayerView, where: list[int], counts: list[int]) -> list[int]:
        """`balance{host-cpu=true}`: NDP experts to the host CPU while the layer shortens
        (host_cpu.py). Memoised for one-token steps without copies on fully split layers with
        equal counts: all experts alike, every NDP expert's move shortens the layer alike, so
        the first NDP experts (by position) go, as many as the class counts decide."""
        index = view.plan.index
        key = None
        if (view.tokens == 1 and index in self._full and counts
                and counts.count(counts[0]) == len(counts)
                and GPU_FETCH not in where and CPU not in where):  # fmt: skip
            key = (index, where.count(GPU_RESIDENT), where.count(NDP), counts[0])
            moved = self._cpu_memo.get(key)
            if moved is not None:
                out = list(where)
                for i, w in enumerate(where):
                    if not moved:
                        break
                    if w == NDP:
                        out[i] = CPU
                        moved -= 1
                return out
        out = cpu_moves(view, self.times[index], self.ctx.units, self.ctx.target, where)
        if key is not None:
            self._cpu_memo[key] = sum(a != b for a, b in zip(where, out, strict=True))
        return out

    def end_step(self, step: int, phase: int, request: int) -> StepActions:
        if phase != 1:
            return NO_ACTIONS
        self._decode_steps += 1
        interval = self.ctx.plans[0].dispatch.replan_interval if self.ctx.plans else 0
        if interval and self._decode_steps % interval == 0:
            self._maybe_replan()
        return NO_ACTIONS

    def _maybe_replan(self) -> None:
        """Queue shard moves for layers whose popularity drifted past the threshold."""
        counters, placement = self.ctx.counters, self.ctx.placement
        if counters is None or placement is None:
            return
        for plan in self.ctx.plans:
            degrees = [len(u) for u in plan.shard_units]
            if min(degrees) >= self.ctx.units:
                continue  # fully split experts have nothing to re-pack
            total = counters.total[plan.index].astype(float)
            pop = total / max(total.sum(), 1.0)
            before = self._planned_pop.get(plan.index)
            if before is None:
                before = np.full(plan.experts, 1.0 / plan.experts)
            if float(np.abs(pop - before).sum()) <= plan.dispatch.drift_threshold:
                continue
            self._planned_pop[plan.index] = pop
            current = [placement.units(plan.index, e) for e in range(plan.experts)]
            load = [float(pop[e]) * plan.expert_bytes for e in range(plan.experts)]
            new = pack_shards(degrees, load, self.ctx.units, current)
            nbytes = [plan.expert_bytes // d for d in degrees]
            moves = shard_moves(plan.index, current, new, nbytes)
            if moves:
                self._pending[plan.index] = tuple(moves)
                self.replans += 1


GPU_RESIDENT, GPU_FETCH, NDP, CPU = (int(Where.GPU_RESIDENT), int(Where.GPU_FETCH), int(Where.NDP),
                                     int(Where.CPU))  # fmt: skip
POLICY = BalancePolicy
