"""Oracle bounds: policies that see the future trace (named `oracle-*`, reported only as bounds).

`BeladyCache` is Belady's MIN replacement for the GPU expert cache: on a miss with a full cache it
evicts the resident (layer, expert) whose next use is farthest in the future. No online policy with
the same capacity and demand copies can have fewer misses, so `oracle-*` results bound what any
prefetcher/cache could gain from knowing routing in advance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Key = tuple[int, int]  # (layer, expert)
NEVER = 1 << 62


class BeladyCache:
    """A (layer, expert) cache of `slots` entries with Belady replacement over a known access list.

    `accesses` is the whole future, one group per layer step, in execution order.
    """

    def __init__(self, slots: int, accesses: Sequence[Sequence[Key]]) -> None:
        self.slots = max(0, slots)
        self._uses: dict[Key, list[int]] = {}
        for step, group in enumerate(accesses):
            for key in group:
                uses = self._uses.setdefault(key, [])
                if not uses or uses[-1] != step:
                    uses.append(step)
        self._ptr: dict[Key, int] = dict.fromkeys(self._uses, 0)
        self.resident: set[Key] = set()

    def next_use(self, key: Key, after: int) -> int:
        """First step > `after` that uses `key` (NEVER if none)."""
        uses = self._uses.get(key, [])
        i = self._ptr.get(key, 0)
        while i < len(uses) and uses[i] <= after:
            i += 1
        self._ptr[key] = i
        return uses[i] if i < len(uses) else NEVER

    def access(self, step: int, keys: Iterable[Key]) -> tuple[list[Key], list[Key], list[Key]]:
        """Serve step `step`: returns (hits, misses admitted or transient, evicted keys)."""
        keys = list(keys)
        hits = [k for k in keys if k in self.resident]
        misses = [k for k in keys if k not in self.resident]
        evicted: list[Key] = []
        protected = set(keys)
        for k in misses:
            if self.slots == 0:
                continue
            if len(self.resident) >= self.slots:
                cands = [r for r in self.resident if r not in protected]
                if not cands:
                    continue
                victim = max(cands, key=lambda r: (self.next_use(r, step), r))
                if self.next_use(k, step) >= self.next_use(victim, step):
                    continue  # keeping the victim is better than admitting k (MIN with bypass)
                self.resident.discard(victim)
                evicted.append(victim)
            self.resident.add(k)
        return hits, misses, evicted
