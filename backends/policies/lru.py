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

    def __contains__(self, key: Key) -> bool:
        return key in self._order

    def __len__(self) -> int:
        return len(self._order)

    def access(self, layer: int, experts: Sequence[int]) -> CacheStep:
        """Look up one layer step's experts (in compute order), update recency, admit misses."""
        hits = [e for e in experts if (layer, e) in self._order]
        misses = [e for e in experts if (layer, e) not in self._order]
        for e in hits:
            self._order.move_to_end((layer, e))
        protected = {(layer, e) for e in experts}
        evicted: list[Key] = []
        transient: list[int] = []
        for e in misses:
            if len(self._order) >= self.slots:
                victim = next((k for k in self._order if k not in protected), None)
                if victim is None:
                    transient.append(e)
                    continue
                del self._order[victim]
                evicted.append(victim)
            self._order[(layer, e)] = None
        return CacheStep(tuple(hits), tuple(misses), tuple(evicted), tuple(transient))
