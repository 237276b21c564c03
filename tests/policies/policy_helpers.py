"""Small hand-made contexts and views for policy tests (no emitter, a linear fake cost model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ndpc.backends.policies.base import Counters, LayerPlan, LayerView, Placement, PolicyContext
from ndpc.ir.attrs import Activation, DispatchAttr, DispatchRule, FfnAttr, ReduceSite
from ndpc.ir.types import DType

FFN = FfnAttr(d_model=64, d_ff=32, activation=Activation.SWIGLU, bias=False, dtype=DType.BF16)
EXPERT_BYTES = FFN.weight_bytes  # 3 * 64 * 32 * 2 = 12288


@dataclass
class FakeTarget:
    name: str = "fake"
    ndp_units: int = 2
    ndp_capacity_bytes: int = 1 << 30
    has_host_cpu: bool = True
    has_ndp_link: bool = True
    exclusive_host_access: bool = False


class FakeCost:
    """Linear costs: GPU 1e12 B/s + 1e14 FLOP/s; NDP 1e11 B/s + 1e11 FLOP/s; CPU 5e10 B/s +
    1e12 FLOP/s; links 1e10 B/s (1/4 of that when the copy comes from one unit)."""

    target = FakeTarget()

    def gpu_time(self, flops, mem_bytes, shape=None):
        return max(flops / 1e14, mem_bytes / 1e12)

    def ndp_time(self, flops, mem_bytes):
        return max(flops / 1e11, mem_bytes / 1e11)

    def cpu_time(self, flops, mem_bytes):
        return max(flops / 1e12, mem_bytes / 5e10)

    def link_time(self, link_name, nbytes, unit=-1):
        return nbytes / (2.5e9 if unit >= 0 else 1e10)

    def copy_time(self, link_name, nbytes, units=0):
        """Shards from `units` units at once: min(link, units x unit cap)."""
        return nbytes / (min(1e10, units * 2.5e9) if units > 0 else 1e10)


def make_ctx(
    rule: DispatchRule,
    *,
    layers: int = 2,
    experts: int = 8,
    k: int = 2,
    units: int = 2,
    budget_experts: int = 4,
    degree: int = 1,
    oracle_trace=None,
    **dispatch,
) -> PolicyContext:
    """A context of `layers` identical MoE layers, experts placed round-robin with `degree`."""
    attr = DispatchAttr(rule, **dispatch)
    shard = tuple(
        tuple(sorted((e * degree + j) % units for j in range(degree))) for e in range(experts)
    )
    plans = tuple(
        LayerPlan(i, i, experts, k, FFN, shard, ReduceSite.GPU, attr) for i in range(layers)
    )
    counters = Counters(layers, experts)
    return PolicyContext(
        target=FakeTarget(ndp_units=units),
        cost=FakeCost(),
        plans=plans,
        units=units,
        gpu_expert_budget_bytes=budget_experts * EXPERT_BYTES,
        act_bytes=2.0,
        counters=counters,
        placement=Placement(plans),
        oracle_trace=oracle_trace,
    )


def make_view(
    ctx: PolicyContext,
    index: int,
    experts: dict[int, tuple[int, float]],
    *,
    phase: int = 1,
    step: int = 0,
    resident: set[int] = frozenset(),
) -> LayerView:
    """A view of MoE layer `index`: experts maps id -> (tokens, weight sum)."""
    ids = np.array(sorted(experts), dtype=np.int64)
    plan = ctx.plans[index]
    mask = np.zeros(plan.experts, dtype=bool)
    mask[list(resident)] = True
    tokens = (
        max(n for n, _ in experts.values()) if phase == 1 else sum(n for n, _ in experts.values())
    )
    return LayerView(
        step=step, phase=phase, request=0, token=step, tokens=1 if phase == 1 else tokens,
        context=step, plan=plan, experts=ids,
        counts=np.array([experts[e][0] for e in ids], dtype=np.int64),
        weights=np.array([experts[e][1] for e in ids], dtype=np.float64),
        resident=mask, counters=ctx.counters, placement=ctx.placement,
    )  # fmt: skip
