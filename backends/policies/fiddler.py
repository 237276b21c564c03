"""Fiddler (ICLR 2025, arXiv 2402.07033): popular experts in GPU memory, the rest where fastest.

1. Offline (the `fiddler-profile` pass, with `ndpc.backends.static_placement`): count expert
   popularity on a *calibration* trace (a different trace from the one evaluated) and fill the
   GPU expert budget greedily with the most popular (layer, expert) pairs.
2. Run time, per layer and activated expert with n routed tokens: resident -> GPU; otherwise the
   faster of host-CPU compute (weights read in place from host memory) and copy-then-GPU, as the
   cost model predicts. Decode (n = 1) usually picks the CPU, long prefill the copy.

With `dispatch{rule=fiddler,token_threshold=T}` step 2 is the published implementation's own rule
instead of ndpc's cost model: efeslab/fiddler `src/fiddler/mixtral.py` prices a non-resident
expert at `latency_cpu * n` on the CPU (7 per token) against a constant `latency_gpu` (70) for
copy-then-GPU, so an expert with n >= T = 70 / 7 = 10 tokens is copied (ties go to the GPU: the
search over the 2^8 splits keeps the first optimum, and bit 0 means GPU), fewer run on the CPU.
The copy goes into one GPU placeholder expert (`load_state_dict`), so copies and their GPU
compute run one after another (`serial`).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import (
    DispatchPolicy,
    LayerDecision,
    LayerView,
    PolicyContext,
    Where,
)
from ndpc.backends.policies.monde import source_units


class FiddlerChoice(Enum):
    """Where Fiddler runs one activated expert."""

    GPU_RESIDENT = "gpu"
    GPU_FETCH = "fetch"
    CPU = "cpu"


def choose(resident: bool, cpu_time: float, fetch_time: float, gpu_time: float) -> FiddlerChoice:
    """Fiddler's per-expert rule: resident -> GPU, else min(CPU, copy + GPU) (ties: CPU)."""
    if resident:
        return FiddlerChoice.GPU_RESIDENT
    if fetch_time + gpu_time < cpu_time:
        return FiddlerChoice.GPU_FETCH
    return FiddlerChoice.CPU


def split_layer(
    tokens: dict[int, int],
    resident: Sequence[int] | set[int],
    cpu_time,
    fetch_time: float,
    gpu_time,
) -> dict[int, FiddlerChoice]:
    """Apply `choose` to each activated expert (`cpu_time`, `gpu_time`: callables of n tokens)."""
    res = set(resident)
    return {
        e: choose(e in res, cpu_time(n), fetch_time, gpu_time(n)) for e, n in sorted(tokens.items())
    }


class FiddlerPolicy(DispatchPolicy):
    """`fiddler`: resident (profiled) experts on the GPU; the rest min(CPU, copy + GPU).

    The resident set comes from the `fiddler-profile` pass as static residency (`moe.resident`).
    """

    NAME = "fiddler"
    PREFETCHER = "static-profile"

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        if not ctx.target.has_host_cpu:
            raise ValueError(f"target '{ctx.target.name}' has no host CPU, which fiddler needs")
        self.times = [ExpertTimes(p.ffn, ctx.cost, ctx.act_bytes) for p in ctx.plans]

    def dispatch(self, view: LayerView) -> LayerDecision:
        threshold = view.plan.dispatch.token_threshold
        if threshold > 0:
            return _by_threshold(view, threshold)
        t = self.times[view.plan.index]
        src = source_units(view.plan)
        where = np.empty(len(view.experts), dtype=np.uint8)
        for i, (e, n) in enumerate(zip(view.experts, view.counts, strict=True)):
            c = choose(bool(view.resident[e]), t.cpu(int(n)), t.fetch(src), t.gpu(int(n)))
            where[i] = _WHERE[c]
        return LayerDecision(where=where)


def _by_threshold(view: LayerView, threshold: int) -> LayerDecision:
    """The published implementation's rule: resident -> GPU; else copy when the expert has at
    least `threshold` tokens, CPU below; copies and their compute one after another."""
    where = np.where(view.counts >= threshold, Where.GPU_FETCH, Where.CPU).astype(np.uint8)
    where[view.resident[view.experts]] = Where.GPU_RESIDENT
    return LayerDecision(where=where, serial=True)


_WHERE = {
    FiddlerChoice.GPU_RESIDENT: Where.GPU_RESIDENT,
    FiddlerChoice.GPU_FETCH: Where.GPU_FETCH,
    FiddlerChoice.CPU: Where.CPU,
}
POLICY = FiddlerPolicy
