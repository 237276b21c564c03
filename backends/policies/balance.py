"""The paper's load-balancing-aware GPU/NDP split (Algorithm B) and its static part.

Per MoE layer and step, after the router, the activated experts that are not in GPU memory are
split between the NDP units (their TP shards) and the GPU (weights fetched over the host link,
then computed), to minimise the layer's finish time with GPU, host link and NDP units overlapped:

    unit_u     = max(act_down, hold_u) + load_u   (hold_u: copies of fetched experts reading unit u)
    ndp_finish = max(max_u unit_u, link) + partial-sum return (queued behind fetches on pcie.h2d)
    gpu_finish = resident GPU work, then fetched experts as a 2-stage flow shop (link, then GPU)
    layer      = max(gpu_finish, ndp_finish)

A fetch reads the expert's shards from their units, one copy per shard (`ExpertTimes.fetch`);
where host access and NDP compute on a unit exclude each other, each copy blocks its unit
(`SplitProblem.fetch_hold`, from `ExpertTimes.hold`; empty = no exclusion, hold_u = 0).

`greedy_split` (what the policy runs): repeatedly take the bottleneck NDP unit and move its
largest-shard expert to the GPU; keep going while the GPU side stays below the layer time, and
return the best prefix seen. O(k * (k + N)) per layer for k candidates and N units (k = top-k in
decode, up to all experts in prefill). `exhaustive_split` tries all 2^k subsets with the same
time model (the reference optimum; tests compare the two). Fetched experts are ordered by Johnson's
rule, optimal for the two-stage link -> GPU pipeline, in both.

Static part: `pack_shards` places the shards of experts whose TP degree is below the unit count
(LPT on expected load, ties to the current unit); `BalancePolicy` re-packs a layer when the
observed popularity drifts past `drift_threshold` (checked every `replan_interval` decode steps)
and charges the weight moves (`ShardMove`) in the schedule.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from ndpc.backends.policies.base import (
    NO_ACTIONS,
    DispatchPolicy,
    ExpertTimes,
    LayerDecision,
    LayerView,
    PolicyContext,
    ShardMove,
    StepActions,
    Where,
)
from ndpc.ir.attrs import ReduceSite


@dataclass
class SplitProblem:
    """One layer-step's split problem. Candidates are the activated, non-resident experts."""

    shard_time: list[float]  # time of one shard of candidate i on each of its units
    units: list[tuple[int, ...]]  # units holding candidate i's shards
    gpu_time: list[float]  # GPU compute of candidate i
    fetch_time: list[float]  # weight copy of candidate i over the host link
    n_units: int
    gpu_base: float = 0.0  # GPU work that happens anyway (resident experts)
    act_down: float = 0.0  # activation broadcast before any NDP kernel
    ret_fixed: float = 0.0  # partial-sum return: ret_fixed + ret_per_unit * units used
    ret_per_unit: float = 0.0
    base_load: list[float] = field(default_factory=list)  # NDP work fixed elsewhere, per unit
    # time each of candidate i's units is blocked by copying its shard to the GPU (exclusive
    # host access; empty = no exclusion)
    fetch_hold: list[float] = field(default_factory=list)


def johnson_order(fetch: list[float], gpu: list[float], chosen: list[int]) -> list[int]:
    """Order fetched experts for the link -> GPU flow shop (Johnson's rule, optimal makespan)."""
    first = sorted((i for i in chosen if fetch[i] <= gpu[i]), key=lambda i: (fetch[i], i))
    last = sorted((i for i in chosen if fetch[i] > gpu[i]), key=lambda i: (-gpu[i], i))
    return first + last


def _gpu_chain(p: SplitProblem, order: list[int]) -> tuple[float, float]:
    """(GPU finish, host-link busy end) when `order` is fetched and computed in that order."""
    link = 0.0
    gpu = p.gpu_base
    for i in order:
        link += p.fetch_time[i]
        gpu = max(gpu, link) + p.gpu_time[i]
    return gpu, link


def makespan(p: SplitProblem, on_gpu: list[bool]) -> float:
    """The layer finish time (seconds after the router) for one split.

    With `fetch_hold` (exclusive host access), a fetched candidate blocks each of its units for
    its shard's copy: unit u finishes at max(act_down, hold_u) + load_u (copies need no
    activations, so they may run while the broadcast is in flight)."""
    loads = list(p.base_load) if p.base_load else [0.0] * p.n_units
    used = {u for u, x in enumerate(loads) if x > 0}
    hold = [0.0] * p.n_units
    for i, g in enumerate(on_gpu):
        if not g:
            for u in p.units[i]:
                loads[u] += p.shard_time[i]
                used.add(u)
        elif p.fetch_hold:
            for u in p.units[i]:
                hold[u] += p.fetch_hold[i]
    chosen = [i for i, g in enumerate(on_gpu) if g]
    gpu, link = _gpu_chain(p, johnson_order(p.fetch_time, p.gpu_time, chosen))
    if not used:
        return gpu
    if p.fetch_hold:
        ndp_done = max(
            max(p.act_down, h) + x if x > 0 else h for h, x in zip(hold, loads, strict=True)
        )
    else:
        ndp_done = p.act_down + max(loads)
    ndp = max(ndp_done, link) + p.ret_fixed + p.ret_per_unit * len(used)
    return max(gpu, ndp)


def greedy_split(p: SplitProblem) -> list[bool]:
    """Bottleneck-unit greedy, then a flip pass. Returns on_gpu per candidate.

    Each round takes the most loaded NDP unit and moves to the GPU the expert on it with the most
    relief per GPU-side cost (shard time / (fetch + GPU time)); the best prefix is kept. Rounds stop
    once the GPU side alone exceeds the best layer time. When candidates differ (prefill, partial
    degrees) and are few, single flips that shorten the layer are then applied. O(k (k + N)) for the
    rounds, plus O(k^2 (k + N)) for the flips when k <= FLIP_LIMIT.
    """
    n = len(p.shard_time)
    if n and not p.base_load and _uniform(p):
        hold = p.fetch_hold[0] if p.fetch_hold else 0.0
        m = uniform_split(p.shard_time[0], len(p.units[0]), p.fetch_time[0], p.gpu_time[0], n, p,
                          hold)  # fmt: skip
        return [i < m for i in range(n)]
    on_gpu = [False] * n
    best, best_t = list(on_gpu), makespan(p, on_gpu)
    loads = list(p.base_load) if p.base_load else [0.0] * p.n_units
    for i in range(n):
        for u in p.units[i]:
            loads[u] += p.shard_time[i]
    left = set(range(n))
    while left:
        hot = max(range(p.n_units), key=lambda u: (loads[u], -u))
        pool = [i for i in left if hot in p.units[i]] or list(left)
        pick = max(pool, key=lambda i: (_relief(p, i), -len(p.units[i]), -i))
        on_gpu[pick] = True
        left.discard(pick)
        for u in p.units[pick]:
            loads[u] -= p.shard_time[pick] - (p.fetch_hold[pick] if p.fetch_hold else 0.0)
        t = makespan(p, on_gpu)
        if t < best_t - 1e-15:
            best, best_t = list(on_gpu), t
        gpu_side = _gpu_chain(p, johnson_order(p.fetch_time, p.gpu_time, _chosen(on_gpu)))[0]
        if gpu_side > best_t:
            break  # the GPU is now the bottleneck: moving more only lengthens the layer
    if n <= FLIP_LIMIT and not _uniform(p):
        _flip_pass(p, best, best_t)
    return best


FLIP_LIMIT = 16


def uniform_split(
    shard: float, used: int, fetch: float, gpu: float, n: int, p: SplitProblem, hold: float = 0.0
) -> int:
    """How many of `n` identical candidates to move to the GPU (O(n), exact under `makespan`).

    Identical candidates (decode at batch 1 with every expert split over the same units) make
    the choice a single count m: GPU side = m pipelined fetch+compute jobs, NDP side = (n - m)
    shards per unit, after m shard copies (`hold` each) when copies block the units. Ties go to
    the smaller m (fewer weight copies).
    """
    best_m, best_t = 0, float("inf")
    gpu_t = p.gpu_base
    for m in range(n + 1):
        if m:
            gpu_t = max(gpu_t, m * fetch) + gpu
        if m < n:
            unit = max(p.act_down, m * hold) + (n - m) * shard
            ndp = max(unit, m * fetch) + p.ret_fixed + p.ret_per_unit * used
            t = max(gpu_t, ndp)
        else:
            t = gpu_t
        if t < best_t - 1e-15:
            best_m, best_t = m, t
    return best_m


def _relief(p: SplitProblem, i: int) -> float:
    gain = p.shard_time[i] - (p.fetch_hold[i] if p.fetch_hold else 0.0)
    return gain / max(p.fetch_time[i] + p.gpu_time[i], 1e-30)


def _uniform(p: SplitProblem) -> bool:
    """All candidates alike (decode at batch 1 with full TP): the prefix rounds are optimal."""
    return (
        len(set(p.shard_time)) <= 1
        and len(set(p.units)) <= 1
        and len(set(p.gpu_time)) <= 1
        and len(set(p.fetch_time)) <= 1
        and len(set(p.fetch_hold)) <= 1
    )


def _flip_pass(p: SplitProblem, split: list[bool], t: float) -> None:
    """Flip single candidates (GPU <-> NDP) while that shortens the layer (in place)."""
    improved = True
    while improved:
        improved = False
        for i in range(len(split)):
            split[i] = not split[i]
            t_new = makespan(p, split)
            if t_new < t - 1e-15:
                t, improved = t_new, True
            else:
                split[i] = not split[i]


def _chosen(on_gpu: list[bool]) -> list[int]:
    return [i for i, g in enumerate(on_gpu) if g]


def exhaustive_split(p: SplitProblem) -> list[bool]:
    """The optimum over all 2^k splits under the same time model (reference for tests)."""
    n = len(p.shard_time)
    best, best_t = [False] * n, makespan(p, [False] * n)
    for size in range(1, n + 1):
        for combo in combinations(range(n), size):
            on_gpu = [False] * n
            for i in combo:
                on_gpu[i] = True
            t = makespan(p, on_gpu)
            if t < best_t - 1e-15:
                best, best_t = on_gpu, t
    return best


def pack_shards(
    degrees: list[int], load: list[float], units: int, current: list[tuple[int, ...]] | None = None
) -> list[tuple[int, ...]]:
    """Place each expert's `degrees[e]` shards on distinct units, balancing expected load (LPT).

    `load[e]` is the expected work of the whole expert; each shard carries load / degree. Experts
    are placed heaviest first on the least-loaded units; ties prefer the expert's `current` units
    (so re-plans move few weights), then the lowest unit index. O(E log E + E N log N).
    """
    order = sorted(range(len(degrees)), key=lambda e: (-load[e] / degrees[e], e))
    unit_load = [0.0] * units
    out: list[tuple[int, ...]] = [()] * len(degrees)
    for e in order:
        if degrees[e] > units:
            raise ValueError(f"expert {e} has degree {degrees[e]} > {units} units")
        mine = set(current[e]) if current else set()
        ranked = heapq.nsmallest(
            degrees[e], range(units), key=lambda u: (unit_load[u], u not in mine, u)
        )
        for u in ranked:
            unit_load[u] += load[e] / degrees[e]
        out[e] = tuple(sorted(ranked))
    return out


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


def build_problem(
    view: LayerView, times: ExpertTimes, units: int, cand: np.ndarray
) -> tuple[SplitProblem, float]:
    """The split problem of `view` for candidate positions `cand` (+ the resident GPU time)."""
    experts, counts = view.experts, view.counts
    exclusive = times.exclusive
    resident_gpu = sum(times.gpu(int(c)) for c in counts[view.resident[experts]])
    problem = SplitProblem([], [], [], [], units, gpu_base=resident_gpu)
    for i in cand:
        e, c = int(experts[i]), int(counts[i])
        shard_units = view.placement.units(view.plan.index, e)
        problem.shard_time.append(times.ndp(c, len(shard_units)))
        problem.units.append(shard_units)
        problem.gpu_time.append(times.gpu(c))
        problem.fetch_time.append(times.fetch(len(shard_units)))
        if exclusive:
            problem.fetch_hold.append(times.hold(len(shard_units)))
    problem.act_down = times.act_down(view.tokens)
    if view.plan.reduce is ReduceSite.NDP and units > 1:
        problem.ret_fixed = times.act_up(view.tokens) - times.act_link(view.tokens)
        problem.ret_per_unit = times.act_link(view.tokens)
    else:
        problem.ret_per_unit = times.act_up(view.tokens)
    return problem, resident_gpu


class BalancePolicy(DispatchPolicy):
    """Algorithm B at run time: resident experts on the GPU, the rest split by `greedy_split`;
    plus drift-triggered re-packing of partially split experts (the static part)."""

    NAME = "balance"

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self.times = [ExpertTimes(p, ctx.cost, ctx.act_bytes) for p in ctx.plans]
        self._planned_pop: dict[int, np.ndarray] = {}
        self._pending: dict[int, tuple[ShardMove, ...]] = {}
        self._decode_steps = 0
        self.replans = 0
        # layers whose experts all span every unit: candidates differ only in token counts
        self._full = {p.index for p in ctx.plans if min(len(u) for u in p.shard_units) >= ctx.units}
        self._memo: dict[tuple[int, int, int, int], int] = {}

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
        moves = self._pending.pop(view.plan.index, ())
        return LayerDecision(where=np.array(where, dtype=np.uint8), moves=moves)

    def _offload(self, view: LayerView, where: list[int]) -> list[int]:
        """`balance{offload-resident=true}`: resident experts to NDP while the layer shortens
        (backends/policies/offload.py); memoised per decode situation on fully split layers."""
        from ndpc.backends.policies.offload import (
            offload_first,
            offload_resident,
        )  # uses this module

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


GPU_RESIDENT, GPU_FETCH, NDP = int(Where.GPU_RESIDENT), int(Where.GPU_FETCH), int(Where.NDP)
POLICY = BalancePolicy
