"""The dataset-free prefetcher (Algorithm C) as run-time state.

No calibration data: the only input is the current request's own routing, read from the
emitter's `Counters`. Rules (the paper's text is silent on the details; these are ours):

- budget: `budget_bytes` of GPU memory for prefetched experts, split into an equal per-layer quota
  of `budget_bytes // (MoE layers * expert bytes)` experts (the paper's per-layer cap B_l);
- prefill: right after a layer's router in the prefill step, that layer's prompt counts are final,
  so the top-`quota` experts by count (ties: lower id; at least `min_count` tokens) are chosen;
  experts of the previous request that fall out are evicted, new ones copied over the host link.
  The copies overlap the rest of the prefill and the first decode steps;
- decode (source `prefill_decode`): counts keep growing; at each step, per layer, the hottest
  non-resident expert replaces the coldest prefetched one once its count exceeds it by at least
  `hysteresis` (one swap per layer and step, which bounds the link traffic);
- a miss (an activated expert not resident) falls back to the dispatch rule (balance).
Work per layer and step: O(E) numpy for the decode check, O(E log E) once per prefill.
"""

from __future__ import annotations

import numpy as np

from backends.policies.base import NO_ACTIONS, LayerPlan, LayerView, StepActions
from ir.attrs import CounterSource, PrefetchAttr


def per_layer_quota(budget_bytes: int, plans: tuple[LayerPlan, ...]) -> int:
    """Experts per MoE layer that fit in `budget_bytes` (equal share per layer)."""
    if not plans or budget_bytes <= 0:
        return 0
    biggest = max(p.expert_bytes for p in plans)
    return min(budget_bytes // (len(plans) * biggest), max(p.experts for p in plans))


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
        self._arrays: dict[int, np.ndarray] = {}  # held sets as arrays, dropped when they change
        self.swaps = 0

    def _held_array(self, index: int) -> np.ndarray:
        """The held set of a layer as a sorted array (rebuilt only after the set changed)."""
        arr = self._arrays.get(index)
        if arr is None:
            arr = self._arrays[index] = np.array(sorted(self.held[index]), dtype=np.int64)
        return arr

    @property
    def active(self) -> bool:
        """False when the budget holds no expert at all (the prefetcher then does nothing)."""
        return self.quota > 0

    def after_layer(self, view: LayerView) -> StepActions:
        """Called by the emitter after each (step, MoE layer) was dispatched and counted."""
        if not self.active:
            return NO_ACTIONS
        if view.phase == 0:
            return self._after_prefill(view)
        if self.attr.source is CounterSource.PREFILL_DECODE:
            return self._swap(view)
        return NO_ACTIONS

    def _after_prefill(self, view: LayerView) -> StepActions:
        index = view.plan.index
        want = top_experts(view.counters.prefill[index], self.quota, self.attr.min_count)
        wanted = {int(e) for e in want}
        held = self.held[index]
        evict = tuple((index, e) for e in sorted(held - wanted))
        fetch = tuple((index, e) for e in sorted(wanted - held))
        self.held[index] = wanted
        self._arrays.pop(index, None)
        return StepActions(evict=evict, prefetch=fetch)

    def _swap(self, view: LayerView) -> StepActions:
        index = view.plan.index
        held = self.held[index]
        counts = view.counters.request[index]
        if not held:
            best = int(np.argmax(counts))
            if counts[best] < max(self.attr.min_count, 1):
                return NO_ACTIONS
            held.add(best)
            self._arrays.pop(index, None)
            return StepActions(prefetch=((index, best),))
        # Only the experts activated now changed their counts; the candidate is the hottest of them.
        fresh = [e for e in view.experts.tolist() if e not in held]
        if not fresh:
            return NO_ACTIONS
        cand = max(fresh, key=lambda e: (counts[e], -e))
        if len(held) < self.quota and counts[cand] >= max(self.attr.min_count, 1):
            held.add(cand)
            self._arrays.pop(index, None)
            return StepActions(prefetch=((index, cand),))
        arr = self._held_array(index)
        held_counts = counts[arr]
        low = held_counts.min()
        if counts[cand] < low + self.attr.hysteresis:
            return NO_ACTIONS
        coldest = int(arr[held_counts == low].max())  # ties: the higher id leaves first
        held.discard(coldest)
        held.add(cand)
        self._arrays.pop(index, None)
        self.swaps += 1
        return StepActions(evict=((index, coldest),), prefetch=((index, cand),))
