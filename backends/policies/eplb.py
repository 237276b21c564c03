"""DeepSeek EPLB (github.com/deepseek-ai/EPLB) applied to NDP units: replicate, pack, route.

EPLB is a periodic placement planner. From an estimated load per expert it
1. replicates: `num_slots - E` extra replicas, each given to the expert whose load per replica is
   currently the largest;
2. packs the replicas (load = expert load / replica count) onto the units with balanced packing:
   heaviest first, each into the lightest unit that still has a free slot (equal slots per unit);
At run time each token goes to the least-loaded replica of its expert. The plan is recomputed
every `replan_interval` steps from a moving average of observed loads; new replicas cost a weight
copy (charged by the emitter). The GPU computes no routed experts under this policy.
Written from the algorithm's description, not from its code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def replicate(load: Sequence[float], num_slots: int) -> list[int]:
    """Replica count per expert: one each, then each extra slot to argmax(load / count)."""
    n = len(load)
    if num_slots < n:
        raise ValueError(f"{num_slots} slots cannot hold {n} experts")
    counts = [1] * n
    for _ in range(num_slots - n):
        best = max(range(n), key=lambda e: (load[e] / counts[e], -e))
        counts[best] += 1
    return counts


def balanced_packing(weights: Sequence[float], packs: int) -> list[int]:
    """Pack index per item: heaviest first into the lightest pack with room (len/packs each).

    Ties: lower item index first; lightest pack with the lower index.
    """
    n = len(weights)
    if packs <= 0 or n % packs:
        raise ValueError(f"{n} items do not split evenly into {packs} packs")
    per_pack = n // packs
    load = [0.0] * packs
    used = [0] * packs
    where = [0] * n
    for item in sorted(range(n), key=lambda i: (-weights[i], i)):
        pack = min((p for p in range(packs) if used[p] < per_pack), key=lambda p: (load[p], p))
        where[item] = pack
        load[pack] += weights[item]
        used[pack] += 1
    return where


@dataclass(frozen=True)
class LayerPlan:
    """One layer's placement: the NDP units holding a replica of each expert (sorted)."""

    replicas: tuple[tuple[int, ...], ...]  # expert -> units

    def unit_experts(self, units: int) -> list[list[int]]:
        """Per unit, the experts it holds."""
        out: list[list[int]] = [[] for _ in range(units)]
        for e, us in enumerate(self.replicas):
            for u in us:
                out[u].append(e)
        return out


def plan_layer(load: Sequence[float], units: int, slots_per_unit: int) -> LayerPlan:
    """Replicate then pack one layer's experts onto `units` units of `slots_per_unit` slots.

    A unit never holds two replicas of one expert (that would add no parallelism): when packing
    would put a duplicate on a unit, the replica count of that expert is capped at `units`.
    """
    n = len(load)
    counts = replicate(load, units * slots_per_unit)
    counts = [min(c, units) for c in counts]
    spare = units * slots_per_unit - sum(counts)  # slots freed by the cap stay empty
    items = [e for e in range(n) for _ in range(counts[e])]
    items += [-1] * spare
    weights = [load[e] / counts[e] if e >= 0 else 0.0 for e in items]
    where = _pack_distinct(items, weights, units)
    replicas: list[set[int]] = [set() for _ in range(n)]
    for e, u in zip(items, where, strict=True):
        if e >= 0:
            replicas[e].add(u)
    return LayerPlan(tuple(tuple(sorted(r)) for r in replicas))


def _pack_distinct(items: list[int], weights: list[float], packs: int) -> list[int]:
    """balanced_packing that never puts two replicas of one expert in the same pack."""
    per_pack = len(items) // packs
    load = [0.0] * packs
    members: list[set[int]] = [set() for _ in range(packs)]
    used = [0] * packs
    where = [0] * len(items)
    for i in sorted(range(len(items)), key=lambda i: (-weights[i], i)):
        ok = [p for p in range(packs) if used[p] < per_pack and items[i] not in members[p]]
        if not ok:  # only possible for padding or a full duplicate set; fall back to any room
            ok = [p for p in range(packs) if used[p] < per_pack]
        pack = min(ok, key=lambda p: (load[p], p))
        where[i] = pack
        load[pack] += weights[i]
        used[pack] += 1
        if items[i] >= 0:
            members[pack].add(items[i])
    return where


def slots_per_unit(num_experts: int, units: int, redundancy: float, max_slots: int) -> int:
    """Slots per unit: E (1 + redundancy) spread evenly, at least ceil(E / units), at most
    `max_slots` (the unit's capacity in experts of this layer)."""
    need = -(-num_experts // units)
    want = -(-int(round(num_experts * (1.0 + redundancy))) // units)
    slots = min(max(need, want), max_slots)
    if slots < need:
        raise ValueError(
            f"{num_experts} experts need {need} slots per unit; capacity holds {max_slots}"
        )
    return slots


def route_least_loaded(
    tokens: Mapping[int, int], plan: LayerPlan, units: int, order: Sequence[int] | None = None
) -> dict[int, dict[int, int]]:
    """Send each token of each expert to the replica whose unit has the fewest tokens so far
    this step (experts in `order`, default best-first as given); returns expert -> unit -> n."""
    unit_load = [0] * units
    out: dict[int, dict[int, int]] = {}
    for e in order if order is not None else tokens:
        per: dict[int, int] = {}
        for _ in range(tokens[e]):
            u = min(plan.replicas[e], key=lambda u: (unit_load[u], u))
            per[u] = per.get(u, 0) + 1
            unit_load[u] += 1
        out[e] = per
    return out


class LoadEstimator:
    """Moving average of per-layer expert loads (EPLB's suggested history-based estimate)."""

    def __init__(self, layers: int, num_experts: int, decay: float = 0.5) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.load = np.zeros((layers, num_experts), dtype=np.float64)
        self._window = np.zeros_like(self.load)

    def observe(self, layer: int, experts: Sequence[int]) -> None:
        """Count one token's choices at `layer`."""
        for e in experts:
            self._window[layer, e] += 1.0

    def close_window(self) -> np.ndarray:
        """Fold the counts since the last call into the average; returns the new estimate."""
        self.load = self.decay * self.load + (1.0 - self.decay) * self._window
        self._window[:] = 0.0
        return self.load


def new_replicas(old: LayerPlan, new: LayerPlan) -> list[tuple[int, int]]:
    """(expert, unit) pairs the new plan places that the old one did not: weights to copy."""
    out = []
    for e, (a, b) in enumerate(zip(old.replicas, new.replicas, strict=True)):
        out.extend((e, u) for u in b if u not in a)
    return out
