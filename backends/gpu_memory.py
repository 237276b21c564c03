"""GPU memory during emission: the resident expert set, its byte budget and the prefetch queue.

`GpuMemory` is the one owner of everything the emitter keeps in GPU memory: which experts are
resident (`Residency`, the mask policies see read-only), the op(s) that brought each in, the
queue of prefetch shard copies deferred into later layers' gaps (targets whose NDP units exclude
host access during compute, docs/passes.md), the experts the layer emitted last fetched to the
GPU (a prefetch of one of them keeps its weights instead of copying again), and the KV cache.
The expert budget is what the KV cache leaves of the GPU memory given to experts and KV together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ndpc.backends.policies.base import Placement
from ndpc.backends.schedule import OpKind, Reason, ScheduleBuilder

PREFETCH, R_PREFETCH = int(OpKind.PREFETCH), int(Reason.PREFETCH)


class Residency:
    """Which experts of each MoE layer are in GPU memory, within a byte budget."""

    def __init__(self, layers: int, experts: int, expert_bytes: Sequence[int], budget: int):
        self.mask = np.zeros((layers, experts), dtype=bool)
        self.expert_bytes = list(expert_bytes)
        self.budget = budget
        self.used = 0
        # strict: a policy going over budget is an error (batch 1, fixed budget); in serving the
        # budget shrinks as the KV cache grows and an add that does not fit is refused instead
        self.strict = True
        # (index, expert) -> the op (or the per-shard ops) that brought it in
        self.ready: dict[tuple[int, int], int | tuple[int, ...] | list[int]] = {}

    def add(self, index: int, expert: int, op: int | tuple[int, ...]) -> bool:
        """Make `expert` of MoE layer `index` resident; `op` is the copy that brings it in, or
        the per-shard copies (-1: resident from the start). Over budget: raises ValueError when
        `strict`, else returns False (not made resident)."""
        if self.mask[index, expert]:
            return True
        nbytes = self.expert_bytes[index]
        if self.used + nbytes > self.budget:
            if not self.strict:
                return False
            raise ValueError(
                f"GPU expert memory over budget: layer {index} expert {expert} needs {nbytes} B, "
                f"{self.used} of {self.budget} B in use (a policy must evict first)"
            )
        self.mask[index, expert] = True
        self.used += nbytes
        self.ready[(index, expert)] = op
        return True

    def remove(self, index: int, expert: int) -> bool:
        """Drop an expert from GPU memory; False when it was not resident."""
        if not self.mask[index, expert]:
            return False
        self.mask[index, expert] = False
        self.used -= self.expert_bytes[index]
        self.ready.pop((index, expert), None)
        return True


class GpuMemory:
    """Residency plus the prefetch copies that fill it (see the module docstring)."""

    def __init__(self, residency: Residency, ops: ScheduleBuilder, placement: Placement,
                 h2d: int) -> None:  # fmt: skip
        self.res = residency
        self.mask = residency.mask
        self.ops = ops
        self.placement = placement
        self.h2d = h2d
        # deferred prefetch shard copies: (index, expert) -> [(shard, unit, layer, bytes)]
        self.pending: dict[tuple[int, int], list[tuple[int, int, int, float]]] = {}
        # experts fetched to the GPU in the layer emitted last: (index, expert) -> shard copies
        self.fetched: dict[tuple[int, int], tuple[int, ...]] = {}
        self.reuse_fetched = True
        self.reused = 0

    def prefetch(self, index: int, e: int, layer: int, nbytes: float, deps: list[int],
                 defer: bool, tag: int) -> bool:  # fmt: skip
        """Copy expert `e` of MoE layer `index` to GPU memory (already marked resident): one
        PREFETCH per shard from its unit, now, or queued (`defer`) for `drain`/`flush`. When
        the layer just fetched `e` to the GPU, its weights are kept instead (no copy; returns
        False). `tag` is the op tag of copies issued now."""
        reused = self.fetched.get((index, e)) if self.reuse_fetched else None
        if reused:
            self.res.ready[(index, e)] = reused if len(reused) > 1 else reused[0]
            self.reused += 1
            return False
        units = self.placement.units(index, e)
        shards = [(s, u, layer, nbytes / len(units)) for s, u in enumerate(units)]
        if defer:
            self.res.ready[(index, e)] = []
            self.pending[(index, e)] = shards
            return True
        ops = [self._copy(index, e, sh, deps, tag) for sh in shards]
        self.res.ready[(index, e)] = tuple(ops) if len(ops) > 1 else ops[0]
        return True

    def _copy(self, index: int, e: int, shard, deps: list[int], tag: int) -> int:
        s, u, layer, nbytes = shard
        return self.ops.append(tag, PREFETCH, self.h2d, 0.0, 0.0, nbytes, deps, layer, e, s, u,
                               R_PREFETCH)  # fmt: skip

    def flush(self, index: int, e: int, after: int, tag: int) -> None:
        """Issue every still-queued shard copy of (index, e) now (its weights are needed)."""
        ready = self.res.ready[(index, e)]
        assert isinstance(ready, list)
        for sh in self.pending.pop((index, e)):
            ready.append(self._copy(index, e, sh, [after], tag))

    def flush_all(self, after: int, tag: int) -> int:
        """Issue every queued shard copy now, after op `after` (the end of a warm-up step);
        returns how many were issued."""
        n = 0
        for key in list(self.pending):
            self.flush(key[0], key[1], after, tag)
            n += 1
        return n

    def drain(self, per_unit: int, after: int, tag: int) -> None:
        """Issue up to `per_unit` queued shard copies per NDP unit (oldest first), behind the ops
        emitted so far: on each unit they run after this layer's NDP kernels."""
        if not self.pending:
            return
        taken: dict[int, int] = {}
        for key in list(self.pending):
            shards = self.pending[key]
            keep = []
            for sh in shards:
                u = sh[1]
                if taken.get(u, 0) < per_unit:
                    taken[u] = taken.get(u, 0) + 1
                    ready = self.res.ready[key]
                    assert isinstance(ready, list)
                    ready.append(self._copy(key[0], key[1], sh, [after], tag))
                else:
                    keep.append(sh)
            if keep:
                self.pending[key] = keep
            else:
                del self.pending[key]

    def shrink_to(self, budget: int) -> list[tuple[int, int]]:
        """Set the expert budget (serving: what the KV cache leaves); evicts the longest-resident
        experts until the resident set fits. Returns the evicted (index, expert) pairs."""
        self.res.budget = budget
        out = []
        while self.res.used > budget and self.res.ready:
            index, e = next(iter(self.res.ready))
            self.evict(index, e)
            out.append((index, e))
        return out

    def evict(self, index: int, e: int) -> bool:
        """Drop an expert (and its still-queued copies); False when it was not resident."""
        self.pending.pop((index, e), None)
        return self.res.remove(index, e)
