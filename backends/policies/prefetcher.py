"""The dataset-free prefetcher (Algorithm C) as run-time state.

No calibration data: the only input is the current request's own routing, read from the
emitter's `Counters`. Rules (the paper's text is silent on the details; these are ours):

- budget: `budget_bytes` of GPU memory for prefetched experts, split into an equal per-layer quota
  of `budget_bytes // (MoE layers * expert bytes)` experts (the paper's per-layer cap B_l);
- prefill: right after a layer's router in the prefill step, that layer's prompt counts are final,
  so the top-`quota` experts by count (ties: lower id; at least `min_count` tokens) are chosen;
  experts of the previous request that fall out are evicted, new ones copied over the host link.
  The copies overlap the rest of the prefill and count in its TTFT (docs/simulator.md §4);
- decode (source `prefill_decode`): counts keep growing; at each step, per layer, the hottest
  non-resident expert replaces the coldest prefetched one once its count exceeds it by at least
  `hysteresis` (one swap per layer and step, which bounds the link traffic);
- a miss (an activated expert not resident) falls back to the dispatch rule (balance).
Work per layer and step: O(k) for the decode check (the coldest held count, O(quota), only when a
candidate passes a lower bound kept from the last time), O(E log E) once per prefill.

`prefetch{payback=true}` (ours, global pool only, `Rent`): a copy must pay for itself (see `Rent`).
`prefetch{scope=all}` (ours): every request's counts rank the experts, not only the current one's.
"""

from __future__ import annotations

import numpy as np

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import NO_ACTIONS, LayerPlan, LayerView, StepActions
from ndpc.ir.attrs import CounterScope, CounterSource, PrefetchAllocation, PrefetchAttr


def per_layer_quota(budget_bytes: int, plans: tuple[LayerPlan, ...]) -> int:
    """Experts per MoE layer that fit in `budget_bytes` (equal share per layer)."""
    if not plans or budget_bytes <= 0:
        return 0
    biggest = max(p.expert_bytes for p in plans)
    return min(budget_bytes // (len(plans) * biggest), max(p.experts for p in plans))


def prompt_counts(attr: PrefetchAttr, counters) -> np.ndarray:
    """[L, E] counts a prefill ranks by: the current request's prompt (`scope=request`, the
    paper's), or every request's tokens so far (`scope=all`)."""
    return counters.total if attr.scope is CounterScope.ALL else counters.prefill


def live_counts(attr: PrefetchAttr, counters) -> np.ndarray:
    """[L, E] counts decode swaps compare: the current request's, or every request's."""
    return counters.total if attr.scope is CounterScope.ALL else counters.request


class Rent:
    """`prefetch{payback=true}`: has a copy paid for itself? Ski rental, priced by the cost model.

    Copying expert e to the GPU costs `fetch` (its weights over the host link; where host access
    blocks the DIMMs, each of its DIMMs is blocked as long). Each use of e with n tokens while it
    is not on the GPU costs `ndp(n) - gpu(n)` more than with a resident copy (its NDP kernel
    against the GPU kernel, stand-alone). How often e will be used is not known, so e becomes
    *paid* once the extra time of its past uses reaches one copy's time: the break-even rule of
    ski rental, which never costs more than twice the better of "copy at once" and "never copy"
    for each expert, whatever the number of steps to come. The rent is kept across requests (an
    expert busy in earlier requests is likely busy again). Causal: only dispatched uses count.
    `record` also returns the DIMM time of the step's uses (the warm-up allowance, see
    `GlobalPrefetcher`).
    """

    def __init__(self, plans: tuple[LayerPlan, ...], cost, act_bytes: float) -> None:
        width = max((p.experts for p in plans), default=1)
        self.times = [ExpertTimes(p.ffn, cost, act_bytes) for p in plans]
        self.degree = [[len(u) for u in p.shard_units] for p in plans]
        self.paid = np.zeros((len(plans), width))
        self.price = np.full((len(plans), width), np.inf)
        for i, p in enumerate(plans):
            self.price[i, : p.experts] = [self.times[i].fetch(d) for d in self.degree[i]]
        self._use: list[dict[tuple[int, int], tuple[float, float]]] = [{} for _ in plans]

    def use(self, index: int, tokens: int, degree: int) -> tuple[float, float]:
        """(DIMM time, extra time over a resident copy) of one use with `tokens` tokens on
        `degree` DIMMs (memoised; an expert on no DIMM is priced on the host CPU)."""
        memo = self._use[index]
        t = memo.get((tokens, degree))
        if t is None:
            times = self.times[index]
            off = times.ndp(tokens, degree) if degree > 0 else times.cpu(tokens)
            t = memo[(tokens, degree)] = (off, max(0.0, off - times.gpu(tokens)))
        return t

    def record(self, view: LayerView) -> float:
        """Add the (step, layer)'s uses, after it was dispatched; returns their DIMM time."""
        index = view.plan.index
        degree = self.degree[index]
        row = self.paid[index]
        total = 0.0
        for e, n in zip(view.experts.tolist(), view.counts.tolist(), strict=True):
            work, extra = self.use(index, n, degree[e])
            row[e] += extra
            total += work
        return total

    def due(self) -> np.ndarray:
        """[L, E] mask of the pairs whose rent paid reaches the price of a copy."""
        return self.paid >= self.price


def live_row(attr: PrefetchAttr, counters, index: int) -> list[int]:
    """`live_counts(attr, counters)[index]` as Python ints (read much faster than numpy's)."""
    if attr.scope is CounterScope.ALL:
        return counters.total_row(index)
    return counters.request_row(index)


def top_experts(counts: np.ndarray, quota: int, min_count: int) -> np.ndarray:
    """The `quota` experts with the highest counts (ties: lower id), each with >= min_count."""
    if quota <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(counts)), -counts))[:quota]
    keep = order[counts[order] >= max(min_count, 1)]
    return np.sort(keep)


class Prefetcher:
    """Per-layer prefetched sets driven by the current request's counters."""

    def __init__(self, attr: PrefetchAttr, plans: tuple[LayerPlan, ...]) -> None:
        self.attr = attr
        self.plans = plans
        self.quota = per_layer_quota(attr.budget_bytes, plans)
        self.held: list[set[int]] = [set() for _ in plans]
        self.swaps = 0
        # per layer: (counters epoch, a lower bound of the held experts' counts); counts only
        # grow within an epoch, so a bound stays valid until `held` gains an expert
        self._low: list[tuple[int, int] | None] = [None] * len(plans)
        self._decode_swaps = attr.source is CounterSource.PREFILL_DECODE

    @property
    def active(self) -> bool:
        """False when the budget holds no expert at all (the prefetcher then does nothing)."""
        return self.quota > 0

    def start_step(self, warmup: bool) -> None:
        """Called by the emitter before each step (the per-layer quota ignores it)."""

    def after_layer(self, view: LayerView) -> StepActions:
        """Called by the emitter after each (step, MoE layer) was dispatched and counted."""
        if self.quota <= 0:  # not `active`
            return NO_ACTIONS
        if view.phase == 0:
            return self._after_prefill(view)
        if self._decode_swaps:
            return self._swap(view)
        return NO_ACTIONS

    def _after_prefill(self, view: LayerView) -> StepActions:
        index = view.plan.index
        counts = prompt_counts(self.attr, view.counters)[index]
        want = top_experts(counts, self.quota, self.attr.min_count)
        wanted = {int(e) for e in want}
        held = self.held[index]
        evict = tuple((index, e) for e in sorted(held - wanted))
        fetch = tuple((index, e) for e in sorted(wanted - held))
        self.held[index] = wanted
        self._low[index] = None
        return StepActions(evict=evict, prefetch=fetch)

    def _swap(self, view: LayerView) -> StepActions:
        index = view.plan.index
        held = self.held[index]
        counters = view.counters
        row = live_row(self.attr, counters, index)
        if not held:
            best = row.index(max(row))  # the first maximum, as np.argmax
            if row[best] < max(self.attr.min_count, 1):
                return NO_ACTIONS
            held.add(best)
            self._low[index] = None
            return StepActions(prefetch=((index, best),))
        # Only the experts activated now changed their counts; the candidate is the hottest of them.
        fresh = set(view.experts.tolist()).difference(held)
        if not fresh:
            return NO_ACTIONS
        cand = next(iter(fresh))
        for e in fresh:  # the highest count, ties: the lower id
            if row[e] > row[cand] or (row[e] == row[cand] and e < cand):
                cand = e
        if len(held) < self.quota and row[cand] >= max(self.attr.min_count, 1):
            held.add(cand)
            self._low[index] = None
            return StepActions(prefetch=((index, cand),))
        hysteresis = self.attr.hysteresis
        bound = self._low[index]
        if bound is not None and bound[0] == counters.epoch and row[cand] < bound[1] + hysteresis:
            return NO_ACTIONS  # below the bound, so below the coldest held expert's count too
        low = min(map(row.__getitem__, held))
        self._low[index] = (counters.epoch, low)  # a swap below only raises the coldest count
        if row[cand] < low + hysteresis:
            return NO_ACTIONS
        coldest = max([e for e in held if row[e] == low])  # ties: the higher id leaves first
        held.discard(coldest)
        held.add(cand)
        self.swaps += 1
        return StepActions(evict=((index, coldest),), prefetch=((index, cand),))


class GlobalPrefetcher:
    """One budget pool over every MoE layer (`prefetch{allocation=global}`), our improvement.

    The paper's per-layer quota wastes the budget when layers differ in skew, and rounds to zero
    experts per layer for big experts (Mixtral: 32 layers x 352 MB). Here the budget holds the
    (layer, expert) pairs with the most tokens per weight byte:

    - prefill: after MoE layer i's router the prompt counts of layers 0..i are final; those pairs
      are ranked by prompt count / expert bytes (ties: lower layer, lower id) and taken while
      they fit in (i+1)/L of the budget (earlier layers' picks may be evicted again). At the
      last layer this is the exact global ranking. Deciding per layer keeps the paper's reuse of
      weights the prefill just fetched to the GPU. Layers the prompt has not reached keep their
      pairs: a new request (or a serving iteration's new prompt) re-decides layer j at layer j,
      not every layer at its layer 0; over budget, kept pairs leave lowest tokens per byte first;
    - decode (`prefill_decode`): the hottest newly activated non-held expert of the current layer
      replaces the globally coldest held pair (any layer) once its count exceeds it by
      `hysteresis`; free budget is filled first. One swap per (step, layer), as the paper's rule.
    - `payback` (`rent` given): a pair not yet held is copied only once it has paid for itself
      (`Rent`), except in the warm-up of a step of prefills only (`warmup`, set by the emitter):
      there the prompt may also copy unpaid pairs, best ranked first, while their copies' time
      stays within the DIMM time of the step's own expert work so far (the warm-up then at most
      doubles the expert part of the prompt's TTFT). Held pairs stay without paying again.
    Causal: reads only `Counters` (past steps, and this step's layers already dispatched).
    """

    def __init__(self, attr: PrefetchAttr, plans: tuple[LayerPlan, ...],
                 rent: Rent | None = None) -> None:  # fmt: skip
        self.attr = attr
        self.plans = plans
        self.rent = rent
        self.warmup = False  # the current step holds only prefills (`start_step`)
        self.allowance = 0.0  # seconds of unpaid copies the current warm-up step may still spend
        width = max((p.experts for p in plans), default=1)
        self.held = np.zeros((len(plans), width), dtype=bool)
        # expert bytes -> (counters epoch, a lower bound of the counts of the held pairs at least
        # that big); counts only grow within an epoch, and a bound is dropped when `held`
        # gains a pair that could be below it
        self._low: dict[float, tuple[int, int]] = {}
        self.score = np.zeros((len(plans), width))  # tokens per byte when each pair was chosen
        self.nbytes = np.array([p.expert_bytes for p in plans], dtype=np.float64)
        self.free = float(attr.budget_bytes)
        smallest = self.nbytes.min() if len(plans) else 0.0
        self.capacity = int(attr.budget_bytes // smallest) if smallest > 0 else 0
        self.swaps = 0

    @property
    def active(self) -> bool:
        """False when the budget holds no expert at all."""
        return self.capacity > 0

    def start_step(self, warmup: bool) -> None:
        """Called by the emitter before each step; `warmup`: the step holds only prefills."""
        self.warmup, self.allowance = warmup, 0.0

    def after_layer(self, view: LayerView) -> StepActions:
        """Called by the emitter after each (step, MoE layer) was dispatched and counted."""
        if not self.active:
            return NO_ACTIONS
        if self.rent is not None:
            work = self.rent.record(view)
            if self.warmup:
                self.allowance += work
        if view.phase == 0:
            return self._after_prefill(view.plan.index, prompt_counts(self.attr, view.counters))
        if self.attr.source is CounterSource.PREFILL_DECODE:
            return self._swap(view)
        return NO_ACTIONS

    def _after_prefill(self, index: int, counts: np.ndarray) -> StepActions:
        # Layers 0..index have final prompt counts: they share the budget pro rata to their
        # number, so each layer's choice is made right after its router (reusing weights the
        # prefill just fetched) and the last layer's choice is the exact global ranking.
        seen = index + 1
        budget = float(self.attr.budget_bytes) * seen / len(self.plans)
        want = self.held.copy()  # layers the prompt has not reached yet keep their pairs
        if self.rent is None:
            want[:seen] = global_top(counts[:seen], self.nbytes[:seen], budget,
                                     self.attr.min_count)  # fmt: skip
        else:
            ok = self.held[:seen] | self.rent.due()[:seen]
            price = self.rent.price[:seen]
            want[:seen], spent = global_top_paid(counts[:seen], self.nbytes[:seen], budget,
                                                 self.attr.min_count, ok, price,
                                                 self.allowance if self.warmup else 0.0)  # fmt: skip
            self.allowance -= spent
        self.score[:seen] = counts[:seen] / self.nbytes[:seen, None]
        drop_to_fit(want, self.score, self.nbytes, seen, float(self.attr.budget_bytes))
        old = self.held
        evict = tuple((int(i), int(e)) for i, e in zip(*np.nonzero(old & ~want), strict=True))
        fetch = tuple((int(i), int(e)) for i, e in zip(*np.nonzero(want & ~old), strict=True))
        self.held = want
        self._low.clear()
        self.free = float(self.attr.budget_bytes) - float((want.sum(axis=1) * self.nbytes).sum())
        return StepActions(evict=evict, prefetch=fetch)

    def _swap(self, view: LayerView) -> StepActions:
        index = view.plan.index
        counters = view.counters
        row = live_row(self.attr, counters, index)
        held = self.held[index][view.experts].tolist()
        fresh = [e for e, h in zip(view.experts.tolist(), held, strict=True) if not h]
        if self.rent is not None:  # only pairs that have paid for their copy
            paid, price = self.rent.paid[index], self.rent.price[index]
            fresh = [e for e in fresh if paid[e] >= price[e]]
        if not fresh:
            return NO_ACTIONS
        cand = fresh[0]
        for e in fresh:  # the highest count, ties: the lower id
            if row[e] > row[cand] or (row[e] == row[cand] and e < cand):
                cand = e
        if row[cand] < max(self.attr.min_count, 1):
            return NO_ACTIONS
        need = self.nbytes[index]
        if self.free >= need:
            self.held[index, cand] = True
            self.score[index, cand] = row[cand] / need
            self.free -= need
            self._low.clear()
            return StepActions(prefetch=((index, cand),))
        hysteresis = self.attr.hysteresis
        bound = self._low.get(need)
        if bound is not None and bound[0] == counters.epoch and row[cand] < bound[1] + hysteresis:
            return NO_ACTIONS  # below the bound, so below the coldest held pair's count too
        counts = live_counts(self.attr, counters)
        victim = coldest_held(counts, self.held, self.nbytes, need)
        if victim is None:
            return NO_ACTIONS
        vi, ve = victim
        low = int(counts[vi, ve])
        # a swap below only raises the coldest count of pairs this big; other sizes' bounds go
        self._low = {need: (counters.epoch, low)}
        if row[cand] < low + hysteresis:
            return NO_ACTIONS
        self.held[vi, ve] = False
        self.held[index, cand] = True
        self.score[index, cand] = row[cand] / need
        self.free += self.nbytes[vi] - need
        self.swaps += 1
        return StepActions(evict=((vi, ve),), prefetch=((index, cand),))


def global_top(counts: np.ndarray, nbytes: np.ndarray, budget: float, min_count: int) -> np.ndarray:
    """[L, E] mask of the (layer, expert) pairs with the most count per byte that fit `budget`
    (ties: lower layer, then lower id; pairs with fewer than `min_count` tokens never)."""
    layers, width = counts.shape
    score = counts / nbytes[:, None]
    flat = score.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))
    size = np.repeat(nbytes, width)[order]
    ok = counts.ravel()[order] >= max(min_count, 1)
    take = order[ok & (np.cumsum(np.where(ok, size, 0.0)) <= budget)]
    mask = np.zeros(layers * width, dtype=bool)
    mask[take] = True
    return mask.reshape(layers, width)


def global_top_paid(counts: np.ndarray, nbytes: np.ndarray, budget: float, min_count: int,
                    ok: np.ndarray, price: np.ndarray, allowance: float) -> tuple[np.ndarray, float]:  # fmt: skip
    """`global_top` for `payback`: pairs marked `ok` (held or paid) compete as before; any other
    pair competes only while the prices of such pairs, best ranked first, fit in `allowance`.
    Returns the mask and the price of the unpaid pairs taken."""
    layers, width = counts.shape
    flat = (counts / nbytes[:, None]).ravel()
    order = np.lexsort((np.arange(flat.size), -flat))
    enough = counts.ravel()[order] >= max(min_count, 1)
    paid = ok.ravel()[order]
    cost = np.where(enough & ~paid, price.ravel()[order], 0.0)
    cheap = np.cumsum(cost) <= allowance
    take_ok = enough & (paid | cheap)
    size = np.repeat(nbytes, width)[order]
    take = take_ok & (np.cumsum(np.where(take_ok, size, 0.0)) <= budget)
    mask = np.zeros(layers * width, dtype=bool)
    mask[order[take]] = True
    spent = float(cost[take].sum())
    return mask.reshape(layers, width), spent


def drop_to_fit(want: np.ndarray, score: np.ndarray, nbytes: np.ndarray, seen: int,
                budget: float) -> None:  # fmt: skip
    """Unmark pairs of layers `seen`.. (kept from earlier choices) while `want` exceeds `budget`,
    the lowest `score` first (ties: the higher layer, then the higher id leaves first); in place."""
    over = float((want.sum(axis=1) * nbytes).sum()) - budget
    if over <= 0:
        return
    i, e = np.nonzero(want[seen:])
    i = i + seen
    for k in np.lexsort((-e, -i, score[i, e])):
        if over <= 0:
            break
        want[i[k], e[k]] = False
        over -= nbytes[i[k]]


def coldest_held(counts: np.ndarray, held: np.ndarray, nbytes: np.ndarray, need: float):
    """The held (layer, expert) with the fewest tokens whose bytes free at least `need` (ties:
    the higher layer, then the higher id leaves first), or None."""
    big = held & (nbytes >= need)[:, None]
    if not big.any():
        return None
    masked = np.where(big, counts, np.iinfo(np.int64).max)
    low = masked.min()
    i, e = np.nonzero(masked == low)
    return int(i[-1]), int(e[-1])


def make_prefetcher(attr: PrefetchAttr, plans: tuple[LayerPlan, ...], cost=None,
                    act_bytes: float = 2.0):  # fmt: skip
    """The prefetcher `attr` asks for: per-layer quota (the paper) or one global pool (with
    `payback`, its copies must pay for themselves: `Rent`, priced by `cost`)."""
    if attr.allocation is PrefetchAllocation.GLOBAL:
        rent = None
        if attr.payback:
            if cost is None:
                raise ValueError("prefetch{payback=true} needs the cost model")
            rent = Rent(plans, cost, act_bytes)
        return GlobalPrefetcher(attr, plans, rent)
    if attr.payback:
        raise ValueError("prefetch{payback=true} needs allocation=global")
    return Prefetcher(attr, plans)
