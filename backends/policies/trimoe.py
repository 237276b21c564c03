"""TriMoE (arXiv 2603.01058): hot experts on the GPU, warm on the host CPU (AMX), cold on NDP-DIMMs.

Per MoE layer and iteration, right after the router (docs/policies.md has the sources and every
guess):

1. **Classification.** Each activated expert with n routed tokens goes to the tier that finishes it
   soonest on its own, as the cost model prices it: GPU-resident weights -> GPU (hot by
   definition); otherwise `copy + GPU(n)` (hot), `down(n) + CPU(n) + up(n)` (warm) and
   `down(n) + NDP(n) + up(n)` on its DIMM (cold). With costs rising in n this is the paper's
   two-threshold rule: cold below `t_warm`, warm up to `t_hot`, hot from there (`thresholds`).
2. **Bottleneck-aware greedy makespan refinement** (`refine=true`): the layer's makespan is the
   latest of the GPU (resident kernels, then copies -> kernels), the CPU chain and each DIMM;
   repeatedly take the bottleneck device and move the one expert of it whose move to another
   tier shortens the makespan most, until no move does (`refine`).
3. **Prediction-driven relayout** (`relayout`, every `replan_interval` iterations): each expert's
   NDP work per iteration is predicted by an exponential moving average of what it put on its
   DIMM; per layer, the heaviest and lightest DIMMs swap one heavy and one light expert when the
   predicted saving over the next interval exceeds the swap's copy time. The swaps are
   `ShardMove`s, charged on the inter-unit link (or through the host) by the emitter, and the
   layer's NDP kernels on the receiving DIMM wait for them.

The GPU holds a predicted hot set: per layer an equal share of the GPU expert budget, filled with
the experts an exponential moving average of the router's counts predicts to get the most tokens,
refreshed by background copies after each layer (`after_layer`). Causal: the classification and the
schedule use only the current layer's router output and the residency; the predictors only router
outputs already dispatched and the policy's own past decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import (
    DispatchPolicy,
    LayerDecision,
    LayerView,
    PolicyContext,
    ShardMove,
    StepActions,
    Where,
)
from ndpc.backends.policies.monde import source_units
from ndpc.ir.attrs import ReduceSite

GPU_RESIDENT, GPU_FETCH, NDP, CPU = (int(Where.GPU_RESIDENT), int(Where.GPU_FETCH), int(Where.NDP),
                                     int(Where.CPU))  # fmt: skip
EPS = 1e-12  # seconds: a refinement move must shorten the layer by more than this
REFINE_CANDIDATES = 16  # largest experts of the bottleneck device tried per move
DECAY = 0.9  # per-iteration decay of the NDP-load predictor (about a 10-iteration memory)
SWAPS = 2  # at most this many DIMM swaps per layer and relayout
HOT_DECAY = 0.95  # per-iteration decay of the hotness predictor (about a 20-iteration memory)
HOT_MARGIN = 1.25  # a newcomer replaces a GPU-resident expert once it is predicted this much hotter
HOT_COPIES = 4  # at most this many GPU copies per layer and iteration for the hot set
THRESHOLD_SCAN = 4096  # tokens up to which `thresholds` looks for the tier changes


@dataclass(frozen=True)
class TierCosts:
    """Stand-alone time of one expert with n tokens on each tier (seconds; inf = not available)."""

    gpu: float  # copy (unless resident) + GPU kernel
    cpu: float  # activations down, CPU kernel, result up
    ndp: float  # activations down, kernel on its DIMM(s), result up

    def best(self, cpu_allowed: bool) -> int:
        """The classification: GPU_FETCH (hot), CPU (warm) or NDP (cold); ties go to the colder."""
        if cpu_allowed and self.cpu <= self.ndp and self.cpu < self.gpu:
            return CPU
        if self.gpu < self.ndp and (not cpu_allowed or self.gpu <= self.cpu):
            return GPU_FETCH
        return NDP


def tier_costs(times: ExpertTimes, tokens: int, degree: int, src_units: int) -> TierCosts:
    """The three stand-alone costs of one non-resident expert with `tokens` tokens."""
    down, up = times.act_down(tokens), times.act_up(tokens)
    return TierCosts(
        gpu=times.fetch(src_units) + times.gpu(tokens),
        cpu=down + times.cpu(tokens) + up,
        ndp=down + times.ndp(tokens, degree) + up,
    )


def thresholds(
    times: ExpertTimes, degree: int, src_units: int, cpu_allowed: bool
) -> tuple[int, int]:
    """(t_warm, t_hot): the smallest token counts classified warm (CPU) and hot (GPU); a tier
    never chosen up to THRESHOLD_SCAN tokens reads THRESHOLD_SCAN + 1. For the report and tests."""
    t_warm = t_hot = THRESHOLD_SCAN + 1
    for n in range(1, THRESHOLD_SCAN + 1):
        tier = tier_costs(times, n, degree, src_units).best(cpu_allowed)
        if tier == CPU and t_warm > THRESHOLD_SCAN:
            t_warm = n
        if tier == GPU_FETCH:
            t_hot = n
            break
    return t_warm, t_hot


class LayerSchedule:
    """The makespan model of one layer step over the tiers (what the refinement minimises).

    GPU: resident kernels, plus each copied expert's copy then kernel (copies queue on the host
    link, so the GPU side ends no sooner than all copies plus the last kernel). CPU: the first
    input down, the kernels one after another, the last result up. DIMM u: the activation
    broadcast, then the kernels of its experts (plus, where host access blocks the DIMM, the
    copies read from it); the partial sums then return. makespan = the latest of them.
    """

    def __init__(self, view: LayerView, times: ExpertTimes, units: int, where: list[int],
                 shards: list[tuple[int, ...]]) -> None:  # fmt: skip
        self.times = times
        self.units = units
        counts = view.counts.tolist()
        self.counts = counts
        self.shards = shards  # the DIMMs of each activated expert (after this step's moves)
        self.gpu_t = [times.gpu(c) for c in counts]
        self.cpu_t = [times.cpu(c) for c in counts]
        self.ndp_t = [times.ndp(c, len(s)) for c, s in zip(counts, self.shards, strict=True)]
        self.fetch_t = [times.fetch(len(s)) for s in self.shards]
        self.hold_t = [times.hold(len(s)) for s in self.shards]
        self.down = times.act_down(view.tokens)
        # partial-sum return, as balance's split problem prices it (`split.build_problem`)
        if view.plan.reduce is ReduceSite.NDP and units > 1:
            self.ret_fixed = times.act_up(view.tokens) - times.act_link(view.tokens)
            self.ret_per_unit = times.act_link(view.tokens)
        else:
            self.ret_fixed, self.ret_per_unit = 0.0, times.act_up(view.tokens)
        self.where = list(where)
        self.gpu_load = 0.0  # GPU kernels
        self.link = 0.0  # host-link copies
        self.min_fetched_gpu = float("inf")
        self.cpu_load = 0.0
        self.cpu_io = 0.0
        self.unit_load = [0.0] * units
        self.unit_hold = [0.0] * units
        for i, w in enumerate(self.where):
            self._add(i, w, +1)

    def _add(self, i: int, w: int, sign: int) -> None:
        if w in (GPU_RESIDENT, GPU_FETCH):
            self.gpu_load += sign * self.gpu_t[i]
            if w == GPU_FETCH:
                self.link += sign * self.fetch_t[i]
                for u in self.shards[i]:
                    self.unit_hold[u] += sign * self.hold_t[i]
        elif w == CPU:
            self.cpu_load += sign * self.cpu_t[i]
        else:
            for u in self.shards[i]:
                self.unit_load[u] += sign * self.ndp_t[i]

    def finishes(self) -> dict[str, float]:
        """Finish time of each busy device: "gpu", "cpu", and "ndp<u>" per DIMM."""
        out: dict[str, float] = {}
        fetched = [self.gpu_t[i] for i, w in enumerate(self.where) if w == GPU_FETCH]
        if self.gpu_load > 0 or fetched:
            out["gpu"] = max(self.gpu_load, self.link + (min(fetched) if fetched else 0.0))
        cpu = [i for i, w in enumerate(self.where) if w == CPU]
        if cpu:
            first = min(cpu, key=lambda i: self.counts[i])
            out["cpu"] = (self.times.act_down(self.counts[first]) + self.cpu_load
                          + self.times.act_up(self.counts[first]))  # fmt: skip
        used = [u for u in range(self.units) if self.unit_load[u] > 0]
        ret = self.ret_fixed + self.ret_per_unit * len(used)
        for u in used:
            out[f"ndp{u}"] = max(self.down, self.unit_hold[u]) + self.unit_load[u] + ret
        return out

    def makespan(self) -> float:
        return max(self.finishes().values(), default=0.0)

    def move(self, i: int, w: int) -> None:
        self._add(i, self.where[i], -1)
        self.where[i] = w
        self._add(i, w, +1)

    def on_device(self, device: str) -> list[int]:
        """Experts whose work is on `device` (a key of `finishes`)."""
        if device == "gpu":
            return [i for i, w in enumerate(self.where) if w in (GPU_RESIDENT, GPU_FETCH)]
        if device == "cpu":
            return [i for i, w in enumerate(self.where) if w == CPU]
        u = int(device[3:])
        return [i for i, w in enumerate(self.where) if w == NDP and u in self.shards[i]]

    def cost_on(self, device: str, i: int) -> float:
        if device == "gpu":
            return self.gpu_t[i] + (self.fetch_t[i] if self.where[i] == GPU_FETCH else 0.0)
        return self.cpu_t[i] if device == "cpu" else self.ndp_t[i]


def refine(sched: LayerSchedule, resident: list[bool], cpu_allowed: bool) -> list[int]:
    """Bottleneck-aware greedy: move one expert off the bottleneck device to the tier where the
    layer's makespan drops most; repeat until no move shortens it. Returns the placements."""
    best = sched.makespan()
    for _ in range(4 * len(sched.where) + 1):
        finishes = sched.finishes()
        if not finishes:
            break
        device = max(finishes, key=lambda d: (finishes[d], d))
        cands = sorted(sched.on_device(device), key=lambda i: (-sched.cost_on(device, i), i))
        pick, pick_w, pick_t = -1, -1, best
        for i in cands[:REFINE_CANDIDATES]:
            old = sched.where[i]
            options = [NDP] + ([CPU] if cpu_allowed else [])
            options.append(GPU_RESIDENT if resident[i] else GPU_FETCH)
            for w in options:
                if w == old:
                    continue
                sched.move(i, w)
                t = sched.makespan()
                sched.move(i, old)
                if t < pick_t - EPS:
                    pick, pick_w, pick_t = i, w, t
        if pick < 0:
            break
        sched.move(pick, pick_w)
        best = pick_t
    return sched.where


def classify(view: LayerView, times: ExpertTimes, cpu_allowed: bool) -> list[int]:
    """Step 1: each activated expert to its stand-alone fastest tier (resident ones: GPU)."""
    src = source_units(view.plan)
    out = []
    for e, n in zip(view.experts.tolist(), view.counts.tolist(), strict=True):
        if view.resident[e]:
            out.append(GPU_RESIDENT)
            continue
        degree = len(view.placement.units(view.plan.index, e))
        out.append(tier_costs(times, n, degree, src).best(cpu_allowed))
    return out


def tier_plan(
    view: LayerView,
    times: ExpertTimes,
    units: int,
    cpu_allowed: bool,
    moves: tuple[ShardMove, ...] = (),
    refined: bool = True,
) -> list[int]:
    """Steps 1 and 2 for one layer step: the classification, then (`refined`) the greedy
    refinement. `moves` are shard moves issued in this step (their experts run on `dst`)."""
    where = classify(view, times, cpu_allowed)
    if not refined:
        return where
    moved = {mv.expert: mv.dst for mv in moves}
    shards = []
    for e in view.experts.tolist():
        held = view.placement.units(view.plan.index, e)
        shards.append((moved[e],) if e in moved and len(held) == 1 else held)
    sched = LayerSchedule(view, times, units, where, shards)
    resident = [bool(view.resident[e]) for e in view.experts]
    return refine(sched, resident, cpu_allowed)


class TrimoePolicy(DispatchPolicy):
    """`trimoe`: classification + greedy makespan refinement + DIMM relayout (see module doc)."""

    NAME = "trimoe"
    PREFETCHER = "predicted-hot"  # the GPU hot set (`after_layer`)

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self.times = [ExpertTimes(p.ffn, ctx.cost, ctx.act_bytes) for p in ctx.plans]
        self.has_cpu = bool(ctx.target.has_host_cpu)
        # the GPU hot set: an equal quota of experts per layer, k slots kept free for the
        # copies of hot experts computed but not kept
        bytes_ = max((p.expert_bytes for p in ctx.plans), default=1)
        reserve = max((p.k for p in ctx.plans), default=1)
        slots = max(0, ctx.gpu_expert_budget_bytes // max(1, bytes_) - reserve)
        self.quota = slots // max(1, len(ctx.plans))
        # predicted tokens per iteration of each (layer, expert): EMA of the router's counts
        self.hot = [np.zeros(p.experts) for p in ctx.plans]
        # predicted NDP seconds per iteration of each (layer, expert): EMA of its own decisions
        self.predicted = [np.zeros(p.experts) for p in ctx.plans]
        self._pending: dict[int, tuple[ShardMove, ...]] = {}
        self._steps = 0
        self.swaps = 0

    def cpu_allowed(self, view: LayerView) -> bool:
        return self.has_cpu and view.plan.dispatch.host_cpu

    def dispatch(self, view: LayerView) -> LayerDecision:
        index = view.plan.index
        moves = self._pending.pop(index, ())
        where = tier_plan(view, self.times[index], self.ctx.units, self.cpu_allowed(view), moves,
                          view.plan.dispatch.refine)  # fmt: skip
        # copied experts stay while the layer's hot set has room (most tokens first)
        free = self.quota - int(np.count_nonzero(view.resident))
        keep = np.zeros(len(where), dtype=bool)
        for i in sorted((i for i, w in enumerate(where) if w == GPU_FETCH),
                        key=lambda i: (-int(view.counts[i]), i)):  # fmt: skip
            if free <= 0:
                break
            keep[i], free = True, free - 1
        self._observe(view, where)
        return LayerDecision(where=np.array(where, dtype=np.uint8), keep=keep, moves=moves)

    def _observe(self, view: LayerView, where: list[int]) -> None:
        """Update the predictor with this iteration's NDP work of each expert of the layer."""
        pred = self.predicted[view.plan.index]
        pred *= DECAY
        times = self.times[view.plan.index]
        for i, w in enumerate(where):
            if w == NDP:
                e = int(view.experts[i])
                degree = len(view.placement.units(view.plan.index, e))
                pred[e] += (1.0 - DECAY) * times.ndp(int(view.counts[i]), degree)

    def after_layer(self, view: LayerView) -> StepActions:
        """The GPU hot set: the layer's `quota` experts with the most predicted tokens per
        iteration (EMA of the router's counts, this layer included), refreshed by background
        copies (at most HOT_COPIES per layer and iteration; a resident expert is evicted only for
        a newcomer predicted HOT_MARGIN times hotter)."""
        index = view.plan.index
        hot = self.hot[index]
        hot *= HOT_DECAY
        hot[view.experts] += (1.0 - HOT_DECAY) * view.counts
        if self.quota <= 0:
            return StepActions()
        order = sorted(range(len(hot)), key=lambda e: (-hot[e], e))
        want = [e for e in order[: self.quota] if hot[e] > 0]
        wanted = set(want)
        resident = view.resident
        newcomers = [e for e in want if not resident[e]]
        victims = sorted((int(e) for e in np.flatnonzero(resident) if int(e) not in wanted),
                         key=lambda e: (hot[e], e))  # fmt: skip
        free = self.quota - int(np.count_nonzero(resident))
        evict: list[tuple[int, int]] = []
        copy: list[tuple[int, int]] = []
        for e in newcomers[:HOT_COPIES]:
            if free > 0:
                free -= 1
            elif victims and hot[e] > HOT_MARGIN * hot[victims[0]]:
                evict.append((index, victims.pop(0)))
            else:
                break
            copy.append((index, e))
        return StepActions(evict=tuple(evict), prefetch=tuple(copy))

    def end_step(self, step: int, phase: int, request: int) -> StepActions:
        self._steps += 1
        interval = self.ctx.plans[0].dispatch.replan_interval if self.ctx.plans else 0
        if interval and self._steps % interval == 0 and self.ctx.placement is not None:
            for plan in self.ctx.plans:
                moves = self._relayout(plan.index, interval)
                if moves:
                    self._pending[plan.index] = moves
        return StepActions()

    def _relayout(self, index: int, interval: int) -> tuple[ShardMove, ...]:
        """Step 3 for one layer: swap experts between the DIMMs with the most and the least
        predicted NDP work when the saving over the next `interval` iterations beats the copy."""
        plan = self.ctx.plans[index]
        placement = self.ctx.placement
        units = self.ctx.units
        if units < 2 or any(len(placement.units(index, e)) != 1 for e in range(plan.experts)):
            return ()  # only whole experts on single DIMMs are relaid out
        home = [placement.units(index, e)[0] for e in range(plan.experts)]
        pred = self.predicted[index]
        load = [0.0] * units
        for e, u in enumerate(home):
            load[u] += float(pred[e])
        copy = self._copy_time(plan.expert_bytes)
        moves: list[ShardMove] = []
        for _ in range(SWAPS):
            hi = max(range(units), key=lambda u: (load[u], -u))
            lo = min(range(units), key=lambda u: (load[u], u))
            gap = load[hi] - load[lo]
            if gap <= 0:
                break
            light = min((e for e in range(plan.experts) if home[e] == lo),
                        key=lambda e: (pred[e], e), default=-1)  # fmt: skip
            heavy = [e for e in range(plan.experts) if home[e] == hi]
            if light < 0 or not heavy:
                break
            # the heavy expert whose swap leaves the pair's larger load smallest
            delta = {e: float(pred[e] - pred[light]) for e in heavy}
            e = min(heavy, key=lambda e: (max(load[hi] - delta[e], load[lo] + delta[e]), e))
            saving = load[hi] - max(load[hi] - delta[e], load[lo] + delta[e])
            if saving * interval <= 2 * copy:
                break
            moves.append(ShardMove(index, e, 0, hi, lo, plan.expert_bytes))
            moves.append(ShardMove(index, light, 0, lo, hi, plan.expert_bytes))
            home[e], home[light] = lo, hi
            load[hi] -= delta[e]
            load[lo] += delta[e]
            self.swaps += 1
        return tuple(moves)

    def _copy_time(self, nbytes: int) -> float:
        """One expert copied between DIMMs: over the inter-unit link, else through the host."""
        cost = self.ctx.cost
        if self.ctx.target.has_ndp_link:
            return cost.link_time("ndplink", float(nbytes))
        return cost.link_time("pcie.h2d", float(nbytes), 0) + cost.link_time(
            "pcie.d2h", float(nbytes), 0
        )


POLICY = TrimoePolicy
