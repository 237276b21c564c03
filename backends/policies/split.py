"""The split problem of the paper's load-balancing-aware GPU/NDP dispatch (Algorithm B).

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

`build_problem` states a layer step as a `SplitProblem`; `makespan` prices one split. The
balance policy (`balance.py`) and its resident-offload extension (`offload.py`) both use them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from itertools import combinations, compress
from operator import not_

import numpy as np

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import LayerView
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
    return _evaluate(p, on_gpu)[0]


def _evaluate(p: SplitProblem, on_gpu: list[bool], order: list[int] | None = None
              ) -> tuple[float, float]:  # fmt: skip
    """(`makespan`, the GPU side's finish) of one split: the greedy rounds need both. `order`:
    the GPU candidates already in Johnson's order (else sorted here)."""
    loads = list(p.base_load) if p.base_load else [0.0] * p.n_units
    used = {u for u, x in enumerate(loads) if x > 0}
    hold = [0.0] * p.n_units
    shard_time, units_of, fetch_hold = p.shard_time, p.units, p.fetch_hold
    chosen = []
    for i, g in enumerate(on_gpu):
        if not g:
            x = shard_time[i]
            for u in units_of[i]:
                loads[u] += x
            used.update(units_of[i])
        else:
            chosen.append(i)
            if fetch_hold:
                for u in units_of[i]:
                    hold[u] += fetch_hold[i]
    if order is None:
        order = johnson_order(p.fetch_time, p.gpu_time, chosen)
    gpu, link = _gpu_chain(p, order)
    if not used:
        return gpu, gpu
    return _finish(p, gpu, link, loads, hold, len(used))


def _finish(p: SplitProblem, gpu: float, link: float, loads: list[float], hold: list[float],
            used: int) -> tuple[float, float]:  # fmt: skip
    """(layer time, GPU side) from the GPU chain, the link and the per-unit loads and holds."""
    if p.fetch_hold:
        ndp_done = max(
            max(p.act_down, h) + x if x > 0 else h for h, x in zip(hold, loads, strict=True)
        )
    else:
        ndp_done = p.act_down + max(loads)
    ndp = max(ndp_done, link) + p.ret_fixed + p.ret_per_unit * used
    return max(gpu, ndp), gpu


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
    # a candidate's rank does not change between rounds: computed once
    # relief per GPU-side cost: (shard time - hold) / (fetch + GPU time)
    hold = p.fetch_hold
    rank = [((p.shard_time[i] - (hold[i] if hold else 0.0))
             / max(p.fetch_time[i] + p.gpu_time[i], 1e-30), -len(p.units[i]), -i)
            for i in range(n)]  # fmt: skip
    rounds = _Rounds(p)
    # every candidate on the same units: the hot unit holds them all (or none: the pool is then
    # everyone), so the picks are simply the candidates by descending rank (ranks are unique)
    ranked = iter(sorted(range(n), key=rank.__getitem__, reverse=True)) if rounds.shared else None
    while left:
        if ranked is not None:
            pick = next(ranked)
        else:
            hot = max(range(p.n_units), key=lambda u: (loads[u], -u))
            pool = [i for i in left if hot in p.units[i]] or list(left)
            pick = max(pool, key=rank.__getitem__)
        on_gpu[pick] = True
        left.discard(pick)
        for u in p.units[pick]:
            loads[u] -= p.shard_time[pick] - (p.fetch_hold[pick] if p.fetch_hold else 0.0)
        t, gpu_side = rounds.add(pick, on_gpu)
        if t < best_t - 1e-15:
            best, best_t = list(on_gpu), t
        if gpu_side > best_t:
            break  # the GPU is now the bottleneck: moving more only lengthens the layer
    if n <= FLIP_LIMIT and not _uniform(p):
        _flip_pass(p, best, best_t)
    return best


FLIP_LIMIT = 16


class _Rounds:
    """`_evaluate` for the greedy's growing GPU set, with the same floating-point operations in
    the same order (so the same times, bit for bit) but less work per round: the Johnson order is
    kept sorted by insertion instead of re-sorted, and when every candidate sits on the same
    units and no NDP load is fixed elsewhere (full TP), each unit's load is one running sum."""

    def __init__(self, p: SplitProblem) -> None:
        self.p = p
        self.first_keys: list[tuple[float, int]] = []
        self.first: list[int] = []
        self.last_keys: list[tuple[float, int]] = []
        self.last: list[int] = []
        self.shared = p.units[0] if p.units and not p.base_load and len(set(p.units)) == 1 else None

    def add(self, pick: int, on_gpu: list[bool]) -> tuple[float, float]:
        """Candidate `pick` moved to the GPU (`on_gpu` already says so): (makespan, GPU side)."""
        p = self.p
        f, g = p.fetch_time[pick], p.gpu_time[pick]
        keys, order, key = (
            (self.first_keys, self.first, (f, pick)) if f <= g else
            (self.last_keys, self.last, (-g, pick))
        )  # fmt: skip
        at = bisect.bisect(keys, key)
        keys.insert(at, key)
        order.insert(at, pick)
        if self.shared is None:
            return _evaluate(p, on_gpu, self.first + self.last)
        gpu, link = _gpu_chain(p, self.first + self.last)
        if False not in on_gpu:
            return gpu, gpu
        # the same additions in the same order as `_evaluate`'s loop (index order)
        load = hold = 0.0
        for x in compress(p.shard_time, map(not_, on_gpu)):
            load += x
        if p.fetch_hold:
            for x in compress(p.fetch_hold, on_gpu):
                hold += x
        units = self.shared
        loads = [0.0] * p.n_units
        holds = [0.0] * p.n_units
        for u in units:
            loads[u] = load
            holds[u] = hold
        return _finish(p, gpu, link, loads, holds, len(set(units)))


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


def build_problem(
    view: LayerView, times: ExpertTimes, units: int, cand: np.ndarray
) -> tuple[SplitProblem, float]:
    """The split problem of `view` for candidate positions `cand` (+ the resident GPU time)."""
    experts, counts = view.experts, view.counts
    exclusive = times.exclusive
    resident_gpu = sum(times.gpu(int(c)) for c in counts[view.resident[experts]])
    problem = SplitProblem([], [], [], [], units, gpu_base=resident_gpu)
    ids, tokens = experts.tolist(), counts.tolist()  # Python ints: indexed per candidate
    units_of, index = view.placement.units, view.plan.index
    by_degree: dict[int, tuple[float, float]] = {}  # degree -> (fetch, hold)
    for i in np.asarray(cand, dtype=np.int64).tolist():
        e, c = ids[i], tokens[i]
        shard_units = units_of(index, e)
        deg = len(shard_units)
        copy = by_degree.get(deg)
        if copy is None:
            copy = by_degree[deg] = (times.fetch(deg), times.hold(deg) if exclusive else 0.0)
        problem.shard_time.append(times.ndp(c, deg))
        problem.units.append(shard_units)
        problem.gpu_time.append(times.gpu(c))
        problem.fetch_time.append(copy[0])
        if exclusive:
            problem.fetch_hold.append(copy[1])
    problem.act_down = times.act_down(view.tokens)
    if view.plan.reduce is ReduceSite.NDP and units > 1:
        problem.ret_fixed = times.act_up(view.tokens) - times.act_link(view.tokens)
        problem.ret_per_unit = times.act_link(view.tokens)
    else:
        problem.ret_per_unit = times.act_up(view.tokens)
    return problem, resident_gpu
