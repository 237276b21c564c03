"""Duplex (MICRO 2024, arXiv 2409.01141): experts split by arithmetic intensity (token count).

Duplex pairs a high Op/B processor (xPU) with a low Op/B one (Logic-PIM) and, after the gate,
sends few-token experts to the low-Op/B side and many-token experts to the high-Op/B side, from a
precomputed per-expert time table; both run in parallel. Applied to this hardware: the NDP unit
holding the expert (expert parallelism, whole expert per unit) is the low-Op/B side; the GPU is
the high-Op/B side and must first copy the weights unless the expert is resident. An expert with n
tokens has Op/B ~ n (FP16 GEMM: 2n FLOPs per 2-byte weight), so the token count is the intensity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import (
    DispatchPolicy,
    LayerDecision,
    LayerView,
    PolicyContext,
    Where,
)
from ndpc.backends.policies.monde import home_unit, source_units


def token_threshold(
    gpu_path: Callable[[int], float], ndp_time: Callable[[int], float], max_tokens: int
) -> int:
    """Smallest n in 1..max_tokens with gpu_path(n) < ndp_time(n) (the lookup table's crossover).

    Returns max_tokens + 1 when the GPU path never wins (every expert stays on NDP).
    """
    for n in range(1, max_tokens + 1):
        if gpu_path(n) < ndp_time(n):
            return n
    return max_tokens + 1


def threshold_bisect(
    gpu_path: Callable[[int], float], ndp_time: Callable[[int], float], max_tokens: int
) -> int:
    """`token_threshold` by bisection, for long prompts (both times grow monotonically in n and
    NDP time grows faster, so the GPU either never wins or wins from one crossover on)."""
    if gpu_path(max_tokens) >= ndp_time(max_tokens):
        return max_tokens + 1
    lo, hi = 1, max_tokens  # invariant: the GPU wins at hi
    while lo < hi:
        mid = (lo + hi) // 2
        if gpu_path(mid) < ndp_time(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class DuplexSplit:
    """One layer's split: experts on the GPU, and per NDP unit the experts it runs in order."""

    gpu: tuple[int, ...]
    ndp: dict[int, tuple[int, ...]]


def duplex_split(tokens: Mapping[int, int], threshold: int, units: int) -> DuplexSplit:
    """Experts with at least `threshold` tokens on the GPU, the rest on their home NDP unit."""
    gpu = tuple(sorted(e for e, n in tokens.items() if n >= threshold))
    ndp: dict[int, list[int]] = {}
    for e in sorted(tokens):
        if tokens[e] < threshold:
            ndp.setdefault(home_unit(e, units), []).append(e)
    return DuplexSplit(gpu=gpu, ndp={u: tuple(v) for u, v in sorted(ndp.items())})


class DuplexPolicy(DispatchPolicy):
    """`duplex`: experts with at least the crossover token count on the GPU, the rest on NDP."""

    NAME = "duplex"

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self.times = [ExpertTimes(p.ffn, ctx.cost, ctx.act_bytes) for p in ctx.plans]
        self._threshold: dict[tuple[int, int], int] = {}

    def threshold(self, index: int, max_tokens: int) -> int:
        """The layer's crossover token count (the lookup table), memoised per step size."""
        fixed = self.ctx.plans[index].dispatch.token_threshold
        if fixed > 0:
            return fixed
        key = (index, max_tokens)
        if key not in self._threshold:
            t = self.times[index]
            self._threshold[key] = threshold_bisect(
                lambda n: t.fetch(source_units(self.ctx.plans[index])) + t.gpu(n),
                lambda n: t.ndp(n, 1),
                max_tokens,
            )
        return self._threshold[key]

    def dispatch(self, view: LayerView) -> LayerDecision:
        thr = self.threshold(view.plan.index, max(1, view.tokens))
        where = np.where(view.counts >= thr, int(Where.GPU_FETCH), int(Where.NDP)).astype(np.uint8)
        where[view.resident[view.experts]] = Where.GPU_RESIDENT
        return LayerDecision(where=where)


POLICY = DuplexPolicy
