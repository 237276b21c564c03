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

from ndpc.backends.policies.base import (
    NO_ACTIONS,
    DispatchPolicy,
    LayerDecision,
    LayerView,
    PolicyContext,
    ShardMove,
    StepActions,
    Where,
)


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
class ReplicaPlan:
    """One layer's placement: the NDP units holding a replica of each expert (sorted)."""

    replicas: tuple[tuple[int, ...], ...]  # expert -> units

    def unit_experts(self, units: int) -> list[list[int]]:
        """Per unit, the experts it holds."""
        out: list[list[int]] = [[] for _ in range(units)]
        for e, us in enumerate(self.replicas):
            for u in us:
                out[u].append(e)
        return out


def plan_layer(
    load: Sequence[float],
    units: int,
    slots_per_unit: int,
    old: ReplicaPlan | None = None,
    migration_cost: float = 0.0,
) -> ReplicaPlan:
    """Replicate then pack one layer's experts onto `units` units of `slots_per_unit` slots.

    A unit never holds two replicas of one expert (that would add no parallelism): when packing
    would put a duplicate on a unit, the replica count of that expert is capped at `units`.
    With an `old` plan, putting a replica on a unit that does not hold its expert yet costs
    `migration_cost` x its load extra when choosing the unit (EPLB's migration-aware variant).
    """
    n = len(load)
    counts = replicate(load, units * slots_per_unit)
    counts = [min(c, units) for c in counts]
    spare = units * slots_per_unit - sum(counts)  # slots freed by the cap stay empty
    items = [e for e in range(n) for _ in range(counts[e])]
    items += [-1] * spare
    weights = [load[e] / counts[e] if e >= 0 else 0.0 for e in items]
    held = [set(r) for r in old.replicas] if old is not None else None
    where = _pack_distinct(items, weights, units, held, migration_cost)
    replicas: list[set[int]] = [set() for _ in range(n)]
    for e, u in zip(items, where, strict=True):
        if e >= 0:
            replicas[e].add(u)
    return ReplicaPlan(tuple(tuple(sorted(r)) for r in replicas))


def _pack_distinct(
    items: list[int],
    weights: list[float],
    packs: int,
    held: list[set[int]] | None = None,
    migration_cost: float = 0.0,
) -> list[int]:
    """balanced_packing that never puts two replicas of one expert in the same pack; with `held`
    (units already holding each expert) a move costs `migration_cost` x weight extra."""

    def cost(i: int, p: int) -> tuple[float, int]:
        e = items[i]
        moved = held is not None and e >= 0 and p not in held[e]
        return (load[p] + (migration_cost * weights[i] if moved else 0.0), p)

    per_pack = len(items) // packs
    load = [0.0] * packs
    members: list[set[int]] = [set() for _ in range(packs)]
    used = [0] * packs
    where = [0] * len(items)
    for i in sorted(range(len(items)), key=lambda i: (-weights[i], i)):
        ok = [p for p in range(packs) if used[p] < per_pack and items[i] not in members[p]]
        if not ok:  # only possible for padding or a full duplicate set; fall back to any room
            ok = [p for p in range(packs) if used[p] < per_pack]
        pack = min(ok, key=lambda p: cost(i, p))
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
    tokens: Mapping[int, int], plan: ReplicaPlan, units: int, order: Sequence[int] | None = None
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

    def observe_counts(self, layer: int, experts: np.ndarray, counts: np.ndarray) -> None:
        """Count one step's routing at `layer`: `counts[i]` tokens chose `experts[i]`."""
        self._window[layer, experts] += counts

    def close_window(self) -> np.ndarray:
        """Fold the counts since the last call into the average; returns the new estimate."""
        self.load = self.decay * self.load + (1.0 - self.decay) * self._window
        self._window[:] = 0.0
        return self.load


def new_replicas(old: ReplicaPlan, new: ReplicaPlan) -> list[tuple[int, int]]:
    """(expert, unit) pairs the new plan places that the old one did not: weights to copy."""
    out = []
    for e, (a, b) in enumerate(zip(old.replicas, new.replicas, strict=True)):
        out.extend((e, u) for u in b if u not in a)
    return out


REDUNDANCY = 0.25  # extra replica slots as a fraction of E (DeepSeek-V3: 32 extra for 256 = 0.125)
REPLAN_INTERVAL = 128  # decode steps between re-plans when the IR gives none
MIGRATION_COST = 0.5  # EPLB's migration-aware variant: default migration_cost_factor
MOVES_PER_LAYER = 1  # background replica copies issued per layer step
DECAY = 0.5  # weight of the old estimate at each re-plan


class EplbPolicy(DispatchPolicy):
    """`eplb`: every expert on NDP, each token's expert on its least-loaded replica; periodic
    re-plans (replicate + balanced packing) from a moving average of observed loads.

    Migration runs in the background, as in a serving system: a re-plan queues the replica
    copies; each layer step issues at most `MOVES_PER_LAYER` of them, only towards units this
    layer step does not compute on (so no kernel waits for a copy), and a new replica takes
    tokens from the next step on. Replicas the new plan drops stop taking tokens once the
    expert has a replica of the new plan.
    """

    NAME = "eplb"

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        units = ctx.units
        cap = ctx.target.ndp_capacity_bytes
        self.target_plans: list[ReplicaPlan] = []
        self.slots: list[int] = []
        per_layer_bytes = max(1, len(ctx.plans)) * max(
            (p.expert_bytes for p in ctx.plans), default=1
        )
        max_slots = cap // per_layer_bytes if cap else 1 << 30
        for p in ctx.plans:
            self.slots.append(slots_per_unit(p.experts, units, REDUNDANCY, max_slots))
            # before any history: the compiled expert-parallel placement, no replicas
            self.target_plans.append(ReplicaPlan(tuple(tuple(u) for u in p.shard_units)))
        # units each expert can take tokens on now (replicas whose copy has landed)
        self.active = [[set(r) for r in plan.replicas] for plan in self.target_plans]
        most = max((p.experts for p in ctx.plans), default=1)
        self.estimator = LoadEstimator(len(ctx.plans), most, DECAY)
        self.pending: list[list[tuple[int, int]]] = [[] for _ in ctx.plans]
        self.landing: list[list[tuple[int, int]]] = [[] for _ in ctx.plans]
        self.decode_steps = 0
        self.replans = 0

    @property
    def plans(self) -> list[ReplicaPlan]:
        """The routable placement of each layer now (what `dispatch` routes by)."""
        return [ReplicaPlan(tuple(tuple(sorted(a)) for a in act)) for act in self.active]

    def interval(self) -> int:
        given = self.ctx.plans[0].dispatch.replan_interval if self.ctx.plans else 0
        return given or REPLAN_INTERVAL

    def dispatch(self, view: LayerView) -> LayerDecision:
        index = view.plan.index
        self._land(index)
        order = np.lexsort((view.experts, -view.weights))  # best first
        tokens = {int(e): int(n) for e, n in zip(view.experts, view.counts, strict=True)}
        routed = _route_whole(
            tokens, self.active[index], self.ctx.units, [int(view.experts[i]) for i in order]
        )
        where = np.full(len(view.experts), int(Where.NDP), dtype=np.uint8)
        unit = np.array([routed[int(e)] for e in view.experts], dtype=np.int64)
        self.estimator.observe_counts(index, view.experts, view.counts)
        moves = self._moves(view, set(routed.values()))
        return LayerDecision(where=where, unit=unit, moves=moves)

    def _land(self, index: int) -> None:
        """Copies issued at an earlier step are in place: route to them; retire dropped replicas."""
        target = self.target_plans[index].replicas
        for e, u in self.landing[index]:
            self.active[index][e].add(u)
        for e, _ in self.landing[index]:
            keep = self.active[index][e] & set(target[e])
            if keep:
                self.active[index][e] = keep
        self.landing[index] = []

    def _moves(self, view: LayerView, busy: set[int]) -> tuple[ShardMove, ...]:
        """Up to MOVES_PER_LAYER queued copies towards units idle in this layer step."""
        index = view.plan.index
        out: list[ShardMove] = []
        queue = self.pending[index]
        i = 0
        while i < len(queue) and len(out) < MOVES_PER_LAYER:
            e, u = queue[i]
            src = view.placement.units(index, e)[0]
            if u in busy or src == u:
                if src == u:  # already there (an earlier plan put it back)
                    self.landing[index].append(queue.pop(i))
                    continue
                i += 1
                continue
            out.append(ShardMove(index, e, 0, src, u, view.plan.expert_bytes))
            self.landing[index].append(queue.pop(i))
        return tuple(out)

    def end_step(self, step: int, phase: int, request: int) -> StepActions:
        if phase == 0:
            self._replan()  # the prompt's routing is the first history a runtime has
            return NO_ACTIONS
        self.decode_steps += 1
        if self.decode_steps % self.interval() == 0:
            self._replan()
        return NO_ACTIONS

    def _replan(self) -> None:
        load = self.estimator.close_window()
        self.replans += 1
        for index, p in enumerate(self.ctx.plans):
            current = ReplicaPlan(tuple(tuple(sorted(a)) for a in self.active[index]))
            new = plan_layer(
                list(load[index, : p.experts]), self.ctx.units, self.slots[index],
                current, MIGRATION_COST,
            )  # fmt: skip
            self.target_plans[index] = new
            self.pending[index] = new_replicas(current, new)
            for e, units in enumerate(new.replicas):  # drop replicas the plan no longer wants
                keep = self.active[index][e] & set(units)
                if keep:
                    self.active[index][e] = keep


def _route_whole(
    tokens: Mapping[int, int], replicas: Sequence[set[int]], units: int, order: Sequence[int]
) -> dict[int, int]:
    """One replica per expert (the interface runs an expert's tokens on one unit): the replica on
    the unit with the fewest tokens so far this step, experts best first."""
    load = [0] * units
    out: dict[int, int] = {}
    for e in order:
        u = min(replicas[e], key=lambda u: (load[u], u))
        out[e] = u
        load[u] += tokens[e]
    return out


POLICY = EplbPolicy
