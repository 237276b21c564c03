"""MoNDE (DAC 2024, arXiv 2405.18832): expert parallelism over NDP units, hot experts to the GPU.

The decision core, free of the emitter: which activated experts of one layer run on the GPU
(copied over the host link unless already cached there) and which stay on their home NDP unit.
GPU and NDP units work concurrently; each NDP unit computes its experts one after another.

Rules (docs/policies.md has sources and guesses):
- home unit: whole expert `e` lives on NDP unit `e % units` (round-robin, expert parallelism);
- decode: the top `N = ceil(ratio * active)` experts by routed-token count go to the GPU, with
  `ratio = BW_host_link / (BW_host_link + BW_ndp_internal)` (MoNDE's bandwidth-ratio rule; a
  re-implementation uses 0.05882 = 32 / (32 + 512) for its PCIe-4 / 512 GB/s device);
- prefill: GPU-NDP load balancing on token counts: experts are moved to the GPU hottest first while
  that shortens the layer (the GPU path copies weights and computes; NDP units run in parallel);
- experts already cached in GPU memory (earlier copies kept in an LRU within the GPU budget) run on
  the GPU at no transfer cost; ties in token count prefer cached experts, then higher routing weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import (
    DispatchPolicy,
    LayerDecision,
    LayerPlan,
    LayerView,
    PolicyContext,
    StepActions,
    Where,
)
from ndpc.backends.policies.lru import GpuLru

DECODE_RATIO_REFERENCE = 32.0 / (32.0 + 512.0)  # the 0.05882 of the MoNDE re-implementation


def home_unit(expert: int, units: int) -> int:
    """The NDP unit that holds the whole of `expert` under expert parallelism (round-robin)."""
    if units <= 0:
        raise ValueError(f"units must be positive, got {units}")
    return expert % units


def source_units(plan: LayerPlan) -> int:
    """NDP units an expert's weights are read from when copied to the GPU: its shard count (1
    under expert parallelism), as `ExpertTimes.fetch` and the emitter charge the copy."""
    return len(plan.shard_units[0]) if plan.shard_units else 0


def bandwidth_ratio(host_link_bps: float, ndp_internal_bps: float) -> float:
    """MoNDE's GPU share: host-link bandwidth over host-link + NDP internal bandwidth."""
    if host_link_bps <= 0 or ndp_internal_bps <= 0:
        raise ValueError("bandwidths must be positive")
    return host_link_bps / (host_link_bps + ndp_internal_bps)


def decode_gpu_slots(active: int, ratio: float) -> int:
    """How many activated experts MoNDE sends to the GPU in a decode step: ceil(ratio * active)."""
    return min(active, math.ceil(ratio * active - 1e-12)) if active else 0


@dataclass(frozen=True)
class MondeSplit:
    """One layer's MoNDE decision: experts on the GPU (fetched or cached) and per-unit NDP lists."""

    gpu_cached: tuple[int, ...]
    gpu_fetch: tuple[int, ...]
    ndp: dict[int, tuple[int, ...]]  # unit -> experts, in the order they run

    @property
    def gpu(self) -> tuple[int, ...]:
        return self.gpu_cached + self.gpu_fetch


def rank_hot(
    tokens: Mapping[int, int], cached: set[int] | frozenset[int], weight: Mapping[int, float]
) -> list[int]:
    """Activated experts hottest first: more tokens, then cached on the GPU, then routing weight."""
    return sorted(tokens, key=lambda e: (-tokens[e], e not in cached, -weight.get(e, 0.0), e))


def _split(order: Sequence[int], n_gpu: int, cached, units: int) -> MondeSplit:
    gpu = set(order[:n_gpu]) | {e for e in order if e in cached}
    ndp: dict[int, list[int]] = {}
    for e in order:
        if e not in gpu:
            ndp.setdefault(home_unit(e, units), []).append(e)
    return MondeSplit(
        gpu_cached=tuple(e for e in order if e in gpu and e in cached),
        gpu_fetch=tuple(e for e in order if e in gpu and e not in cached),
        ndp={u: tuple(v) for u, v in sorted(ndp.items())},
    )


def monde_decode(
    tokens: Mapping[int, int],
    weight: Mapping[int, float],
    cached: set[int] | frozenset[int],
    units: int,
    ratio: float,
    gpu_slots: int = 0,
) -> MondeSplit:
    """Decode-step rule: top-N hot experts to the GPU (N from the bandwidth ratio or `gpu_slots`)."""
    order = rank_hot(tokens, cached, weight)
    n_gpu = gpu_slots if gpu_slots > 0 else decode_gpu_slots(len(order), ratio)
    return _split(order, min(n_gpu, len(order)), cached, units)


def layer_finish(
    split: MondeSplit,
    tokens: Mapping[int, int],
    gpu_time: Callable[[int], float],
    fetch_time: float,
    ndp_time: Callable[[int], float],
    hold: float = 0.0,
    units: int = 1,
) -> float:
    """Estimated finish of a layer: max(GPU path, slowest NDP unit).

    GPU path: cached experts compute while the copies stream one after another over the host link;
    each fetched expert computes once its copy has landed and the GPU is free. `hold`: time a
    copy blocks its home unit's NDP work (targets where host access and NDP compute exclude each
    other), added to that unit's path.
    """
    gpu_free = sum(gpu_time(tokens[e]) for e in split.gpu_cached)
    for i, e in enumerate(split.gpu_fetch):
        gpu_free = max(gpu_free, (i + 1) * fetch_time) + gpu_time(tokens[e])
    busy = {u: sum(ndp_time(tokens[e]) for e in es) for u, es in split.ndp.items()}
    if hold > 0:
        for e in split.gpu_fetch:
            u = home_unit(e, units)
            busy[u] = busy.get(u, 0.0) + hold
    return max(gpu_free, max(busy.values(), default=0.0))


def monde_prefill(
    tokens: Mapping[int, int],
    weight: Mapping[int, float],
    cached: set[int] | frozenset[int],
    units: int,
    gpu_time: Callable[[int], float],
    fetch_time: float,
    ndp_time: Callable[[int], float],
    gpu_slots: int = 0,
    hold: float = 0.0,
) -> MondeSplit:
    """Prefill rule: move experts to the GPU hottest first while the layer's finish time drops.

    `gpu_slots` > 0 fixes N instead (4 reproduces the re-implementation's fixed prefill top-4).
    """
    order = rank_hot(tokens, cached, weight)
    if gpu_slots > 0:
        return _split(order, min(gpu_slots, len(order)), cached, units)
    best = _split(order, 0, cached, units)
    best_t = layer_finish(best, tokens, gpu_time, fetch_time, ndp_time, hold, units)
    for n in range(1, len(order) + 1):  # every hottest-first prefix; ties keep fewer copies
        cand = _split(order, n, cached, units)
        t = layer_finish(cand, tokens, gpu_time, fetch_time, ndp_time, hold, units)
        if t < best_t:
            best, best_t = cand, t
    return best


def hold_time(times: ExpertTimes) -> float:
    """How long copying one whole expert blocks its home unit (0 on non-exclusive targets)."""
    return times.hold(1)


class MondePolicy(DispatchPolicy):
    """`monde`: hot experts to the GPU (copied unless cached), the rest on their home NDP unit."""

    NAME = "monde"
    PREFETCHER = "lru-cache"  # hit rate: decode experts found in GPU memory

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self.times = [ExpertTimes(p.ffn, ctx.cost, ctx.act_bytes) for p in ctx.plans]
        self.ratio = [self._ratio(t, p) for t, p in zip(self.times, ctx.plans, strict=True)]
        bytes_ = max((p.expert_bytes for p in ctx.plans), default=1)
        reserve = max((p.k for p in ctx.plans), default=1)
        self.lru = GpuLru(ctx.gpu_expert_budget_bytes, bytes_, reserve)

    def _ratio(self, times: ExpertTimes, plan: LayerPlan) -> float:
        """BW_link / (BW_link + aggregate NDP BW), from the cost model's one-token expert times:
        the link moves an expert in fetch(); N units stream it in ndp(1, 1) each."""
        link_rate = 1.0 / max(times.fetch(source_units(plan)), 1e-30)
        ndp_rate = self.ctx.units / max(times.ndp(1, 1), 1e-30)
        return link_rate / (link_rate + ndp_rate)

    def split(self, view: LayerView, cached: set[int]) -> MondeSplit:
        """MoNDE's split of this layer step (decode: bandwidth ratio; prefill: balancing)."""
        index = view.plan.index
        tokens = {int(e): int(n) for e, n in zip(view.experts, view.counts, strict=True)}
        weight = {int(e): float(w) for e, w in zip(view.experts, view.weights, strict=True)}
        slots = view.plan.dispatch.gpu_slots
        if view.phase == 0:
            t = self.times[index]
            return monde_prefill(
                tokens, weight, cached, self.ctx.units, t.gpu, t.fetch(source_units(view.plan)),
                lambda n: t.ndp(n, 1), slots, hold_time(t),
            )  # fmt: skip
        return monde_decode(tokens, weight, cached, self.ctx.units, self.ratio[index], slots)

    def dispatch(self, view: LayerView) -> LayerDecision:
        index = view.plan.index
        self.lru.sync(index, view.resident)
        cached = {int(e) for e in view.experts if view.resident[e]}
        split = self.split(view, cached)
        admitted = self.lru.touch(index, list(split.gpu))
        pos = {int(e): i for i, e in enumerate(view.experts)}
        where = np.full(len(view.experts), int(Where.NDP), dtype=np.uint8)
        keep = np.zeros(len(view.experts), dtype=bool)
        for e in split.gpu_cached:
            where[pos[e]] = Where.GPU_RESIDENT
        for e in split.gpu_fetch:
            where[pos[e]] = Where.GPU_FETCH
            keep[pos[e]] = e in admitted
        return LayerDecision(where=where, keep=keep)

    def after_layer(self, view: LayerView) -> StepActions:
        return self.lru.flush()


POLICY = MondePolicy
