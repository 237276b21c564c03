"""Oracle bounds: policies that see the future trace (named `oracle-*`, reported only as bounds).

`oracle-cache` (rule `oracle`): the paper's run-time split with a GPU expert cache that knows
the next layer's routing in advance (a perfect pre-gate) and replaces by Belady's MIN.
`oracle-profile` needs no run-time class: it is `fiddler-profile` fed the evaluated trace itself
(a perfect static profile; see compiler/policies.py).

`BeladyCache` is Belady's MIN replacement for the GPU expert cache: on a miss with a full cache it
evicts the resident (layer, expert) whose next use is farthest in the future. No online policy with
the same capacity and demand copies can have fewer misses, so `oracle-*` results bound what any
prefetcher/cache could gain from knowing routing in advance.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence

import numpy as np

from ndpc.backends.policies import policy_class
from ndpc.backends.policies.base import (
    NO_ACTIONS,
    DispatchPolicy,
    LayerDecision,
    LayerView,
    PolicyContext,
    StepActions,
)
from ndpc.ir.attrs import DispatchRule

Key = tuple[int, int]  # (layer, expert)
NEVER = 1 << 62


class BeladyCache:
    """A (layer, expert) cache of `slots` entries with Belady replacement over a known access list.

    `accesses` is the whole future, one group per layer step, in execution order. Victims come
    from a lazy max-heap on next use, so a miss costs O(log n) rather than a scan of the cache.
    """

    def __init__(self, slots: int, accesses: Sequence[Sequence[Key]]) -> None:
        self.slots = max(0, slots)
        self._uses: dict[Key, list[int]] = {}
        for step, group in enumerate(accesses):
            for key in group:
                uses = self._uses.setdefault(key, [])
                if not uses or uses[-1] != step:
                    uses.append(step)
        self.resident: set[Key] = set()
        self._next: dict[Key, int] = {}  # resident key -> its next use after its last access
        self._heap: list[tuple[int, int, int]] = []  # (-next use, -layer, -expert), lazy

    def next_use(self, key: Key, after: int) -> int:
        """First step > `after` that uses `key` (NEVER if none)."""
        uses = self._uses.get(key, [])
        i = bisect.bisect_right(uses, after)
        return uses[i] if i < len(uses) else NEVER

    def _push(self, key: Key, nxt: int) -> None:
        self._next[key] = nxt
        heapq.heappush(self._heap, (-nxt, -key[0], -key[1]))

    def _victim(self, protected: set[Key]) -> Key | None:
        """The resident key used farthest in the future, outside `protected` (None if none)."""
        held: list[tuple[int, int, int]] = []
        found = None
        while self._heap:
            entry = heapq.heappop(self._heap)
            key = (-entry[1], -entry[2])
            if key not in self.resident or self._next.get(key) != -entry[0]:
                continue  # stale entry
            if key in protected:
                held.append(entry)
                continue
            found = key
            heapq.heappush(self._heap, entry)  # still resident until the caller evicts it
            break
        for entry in held:
            heapq.heappush(self._heap, entry)
        return found

    def resize(self, slots: int) -> list[Key]:
        """Set the capacity (serving: what the KV cache leaves); evicts the residents used
        farthest in the future until they fit. Returns the evicted keys."""
        self.slots = max(0, slots)
        out = []
        while len(self.resident) > self.slots:
            victim = self._victim(set())
            if victim is None:
                break
            self.resident.discard(victim)
            del self._next[victim]
            out.append(victim)
        return out

    def access(self, step: int, keys: Iterable[Key]) -> tuple[list[Key], list[Key], list[Key]]:
        """Serve step `step`: returns (hits, misses admitted or transient, evicted keys)."""
        keys = list(keys)
        hits = [k for k in keys if k in self.resident]
        misses = [k for k in keys if k not in self.resident]
        for k in hits:
            self._push(k, self.next_use(k, step))
        evicted: list[Key] = []
        protected = set(keys)
        for k in misses:
            if self.slots == 0:
                continue
            nxt = self.next_use(k, step)
            if len(self.resident) >= self.slots:
                victim = self._victim(protected)
                if victim is None or nxt >= self._next[victim]:
                    continue  # keeping the victim is better than admitting k (MIN with bypass)
                self.resident.discard(victim)
                del self._next[victim]
                evicted.append(victim)
            self.resident.add(k)
            self._push(k, nxt)
        return hits, misses, evicted


def step_groups(trace) -> list[list[set[int]]]:
    """Per step (a request's prefill is one step, each decode token one step), per MoE layer,
    the set of activated experts — read from the whole trace (oracle only)."""
    phase = np.asarray(trace.phase)
    request = np.asarray(trace.request)
    experts = np.asarray(trace.experts)
    bounds: list[tuple[int, int]] = []
    t, n = 0, len(phase)
    while t < n:
        end = t + 1
        if phase[t] == 0:
            while end < n and phase[end] == 0 and request[end] == request[t]:
                end += 1
        bounds.append((t, end))
        t = end
    layers = experts.shape[1]
    return [
        [{int(e) for e in np.unique(experts[a:b, layer, :]) if e >= 0} for layer in range(layers)]
        for a, b in bounds
    ]


def iteration_groups(trace, iterations) -> list[list[set[int]]]:
    """`step_groups` for the iterations of a serving run: per iteration (its slices' rows
    together), per MoE layer, the set of activated experts."""
    experts = np.asarray(trace.experts)
    out = []
    for slices, _cap in iterations:
        rows = experts[np.concatenate([np.arange(f, f + n) for f, n in slices])]
        out.append([{int(e) for e in np.unique(rows[:, layer, :]) if e >= 0}
                    for layer in range(experts.shape[1])])  # fmt: skip
    return out


class OracleCachePolicy(DispatchPolicy):
    """`oracle-cache`: the paper's split (`balance`) for experts not in GPU memory, with the GPU
    expert cache filled one layer ahead by exact knowledge of the next layer's routing and
    managed by Belady's MIN. A bound on predictive prefetching, not an online method."""

    NAME = "oracle"
    ORACLE = True
    PREFETCHER = "oracle-belady"
    # serving: Belady over the batched iteration sequence, which the emitter learns from a
    # previous pass of the same run (docs/policies.md)
    ITERATION_FORESIGHT = True

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        if ctx.oracle_trace is None:
            raise ValueError("oracle policies need the whole trace (PolicyContext.oracle_trace)")
        its = ctx.oracle_iterations
        if its is None:
            self.groups = step_groups(ctx.oracle_trace)
        else:
            self.groups = iteration_groups(ctx.oracle_trace, its)
        self.layers = len(ctx.plans)
        flat = [
            [(layer, e) for e in sorted(g)] for step in self.groups for layer, g in enumerate(step)
        ]
        self.expert_bytes = max((p.expert_bytes for p in ctx.plans), default=1)
        self.cache = BeladyCache(ctx.gpu_expert_budget_bytes // self.expert_bytes, flat)
        # serving: the expert budget after each iteration (what the KV cache leaves)
        self.caps = [cap for _, cap in its] if its is not None else None
        self.split_rule = policy_class(DispatchRule.BALANCE)(ctx)

    def _prefetch(self, step: int, layer: int) -> StepActions:
        """Bring the experts of (step, layer) in ahead of time (Belady admission)."""
        if step >= len(self.groups) or self.cache.slots == 0:
            return NO_ACTIONS
        g = step * self.layers + layer
        keys = [(layer, e) for e in sorted(self.groups[step][layer])]
        _, misses, evicted = self.cache.access(g, keys)
        admitted = tuple(k for k in misses if k in self.cache.resident)
        return StepActions(evict=tuple(evicted), prefetch=admitted)

    def dispatch(self, view: LayerView) -> LayerDecision:
        return self.split_rule.dispatch(view)

    def after_layer(self, view: LayerView) -> StepActions:
        if view.plan.index + 1 < self.layers:
            return self._prefetch(view.step, view.plan.index + 1)
        return NO_ACTIONS

    def end_step(self, step: int, phase: int, request: int) -> StepActions:
        self.split_rule.end_step(step, phase, request)
        if self.caps is None or step >= len(self.caps):
            return self._prefetch(step + 1, 0)
        # serving: shrink to the budget the KV cache leaves after this iteration (Belady's
        # victims, before the emitter would evict the longest-resident ones), then look ahead
        shrunk = self.cache.resize(min(self.caps[step], self.ctx.gpu_expert_budget_bytes)
                                   // self.expert_bytes)  # fmt: skip
        nxt = self._prefetch(step + 1, 0)
        return StepActions(evict=(*shrunk, *nxt.evict), prefetch=nxt.prefetch)


POLICY = OracleCachePolicy
