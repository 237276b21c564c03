"""`lru`: on-demand copies to the GPU with an LRU expert cache in the GPU memory budget.

Same serial copy-then-compute as `ondemand`, but copied experts stay in GPU memory, keyed by
(layer, expert), until the least recently used one must make room. Experts of the current layer
step are never evicted to make room for each other; if the budget is smaller than one step's
experts, the extra copies are transient (computed, not kept).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ndpc.backends.policies.base import (
    NO_ACTIONS,
    DispatchPolicy,
    LayerDecision,
    LayerView,
    PolicyContext,
    StepActions,
    Where,
)

Key = tuple[int, int]  # (layer, expert)


@dataclass(frozen=True)
class CacheStep:
    """What one layer step did to the cache: hits, copies, keys evicted, copies not kept."""

    hits: tuple[int, ...]
    misses: tuple[int, ...]
    evicted: tuple[Key, ...]
    transient: tuple[int, ...]


class LruExpertCache:
    """An LRU set of (layer, expert) weights in GPU memory, bounded in bytes."""

    def __init__(self, capacity_bytes: int, expert_bytes: int) -> None:
        if expert_bytes <= 0:
            raise ValueError(f"expert_bytes must be positive, got {expert_bytes}")
        self.slots = max(0, capacity_bytes // expert_bytes)
        self._order: OrderedDict[Key, None] = OrderedDict()
        self._by_layer: dict[int, set[int]] = {}

    def __contains__(self, key: Key) -> bool:
        return key in self._order

    def __len__(self) -> int:
        return len(self._order)

    def discard(self, key: Key) -> None:
        """Forget `key` (it left GPU memory by other means)."""
        if self._order.pop(key, 0) is None:
            self._by_layer[key[0]].discard(key[1])

    def layer_experts(self, layer: int) -> list[int]:
        """Cached experts of `layer` (ascending)."""
        return sorted(self._by_layer.get(layer, ()))

    def access(self, layer: int, experts: Sequence[int], admit: int | None = None) -> CacheStep:
        """Look up one layer step's experts (in compute order), update recency, admit misses.

        At most `admit` misses are admitted (default: all that fit); the rest are transient.
        """
        hits = [e for e in experts if (layer, e) in self._order]
        misses = [e for e in experts if (layer, e) not in self._order]
        for e in hits:
            self._order.move_to_end((layer, e))
        protected = {(layer, e) for e in experts}
        evicted: list[Key] = []
        transient: list[int] = []
        for i, e in enumerate(misses):
            if admit is not None and i >= admit:
                transient.append(e)
                continue
            if len(self._order) >= self.slots:
                victim = next((k for k in self._order if k not in protected), None)
                if victim is None:
                    transient.append(e)
                    continue
                self.discard(victim)
                evicted.append(victim)
            self._order[(layer, e)] = None
            self._by_layer.setdefault(layer, set()).add(e)
        return CacheStep(tuple(hits), tuple(misses), tuple(evicted), tuple(transient))


class GpuLru:
    """An `LruExpertCache` kept in step with the emitter's GPU residency.

    The emitter enforces the GPU expert budget when a fetched expert is kept, so the cache holds
    at most `slots - reserve` experts between layers; a layer step admits at most `reserve` new
    ones (its `keep`), and the victims are evicted right after the layer (`StepActions`), which
    restores the head-room before the next layer's copies.
    """

    def __init__(self, budget_bytes: int, expert_bytes: int, reserve: int) -> None:
        slots = max(0, budget_bytes // max(1, expert_bytes))
        self.reserve = min(reserve, slots)
        self.cache = LruExpertCache((slots - self.reserve) * expert_bytes, expert_bytes)
        self._pending: list[Key] = []

    @property
    def enabled(self) -> bool:
        return self.cache.slots > 0 and self.reserve > 0

    def sync(self, index: int, resident: np.ndarray) -> None:
        """Forget cached experts of layer `index` that the emitter no longer holds."""
        for e in self.cache.layer_experts(index):
            if not resident[e]:
                self.cache.discard((index, e))

    def touch(self, index: int, experts: Sequence[int]) -> set[int]:
        """Record the GPU experts of one layer step (compute order); returns the admitted misses."""
        if not self.enabled:
            return set()
        step = self.cache.access(index, experts, admit=self.reserve)
        self._pending.extend(step.evicted)
        return set(step.misses) - set(step.transient)

    def flush(self) -> StepActions:
        """The evictions owed since the last call (issue them after the layer)."""
        if not self._pending:
            return NO_ACTIONS
        out = StepActions(evict=tuple(self._pending))
        self._pending = []
        return out


class LruPolicy(DispatchPolicy):
    """`lru`: serial copy-then-compute of every activated expert, with an LRU cache of copies."""

    NAME = "lru"
    PREFETCHER = "lru-cache"  # hit rate: decode experts found in GPU memory

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        bytes_ = max((p.expert_bytes for p in ctx.plans), default=1)
        reserve = max((p.k for p in ctx.plans), default=1)
        self.lru = GpuLru(ctx.gpu_expert_budget_bytes, bytes_, reserve)

    def dispatch(self, view: LayerView) -> LayerDecision:
        index = view.plan.index
        self.lru.sync(index, view.resident)
        # router order (higher weight first) decides which copies the LRU keeps under pressure
        order = np.lexsort((view.experts, -view.weights))
        admitted = self.lru.touch(index, [int(view.experts[i]) for i in order])
        where = np.full(len(view.experts), int(Where.GPU_FETCH), dtype=np.uint8)
        where[view.resident[view.experts]] = Where.GPU_RESIDENT
        keep = np.array([int(e) in admitted for e in view.experts], dtype=bool)
        keep &= where == Where.GPU_FETCH
        return LayerDecision(where=where, keep=keep, serial=True)

    def after_layer(self, view: LayerView) -> StepActions:
        return self.lru.flush()


POLICY = LruPolicy
