"""`trimoe` (arXiv 2603.01058): classification, greedy makespan refinement, DIMM relayout.

The hand cases use the linear fake cost model of `policy_helpers` (expert: 12288 weight bytes,
12288 FLOP and 128 activation bytes per token; fetch from one DIMM at 2.5e9 B/s; activations
down/up at 2.5e9 B/s). Per expert with n tokens, its DIMM's kernel ndp(n) = max(1.2288e-7 n,
1.2288e-7 + 2.56e-9 n), the CPU's cpu(n) = max(1.2288e-8 n, 2.4576e-7 + 5.12e-9 n), the GPU's
fetch + gpu(n) = 4.9152e-6 + max(1.2288e-10 n, 1.2288e-8 + 2.56e-10 n), down(n) + up(n) = 1.024e-7 n.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from policy_helpers import make_ctx, make_view

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import Where
from ndpc.backends.policies.trimoe import (
    LayerSchedule,
    TrimoePolicy,
    classify,
    refine,
    thresholds,
    tier_costs,
)
from ndpc.backends.schedule import Reason
from ndpc.ir.attrs import DispatchRule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))
from emit_fixtures import compile_and_emit, qwen_like, trace_for  # noqa: E402

R, F, N, C = int(Where.GPU_RESIDENT), int(Where.GPU_FETCH), int(Where.NDP), int(Where.CPU)


def _times(ctx):
    return ExpertTimes(ctx.plans[0].ffn, ctx.cost, ctx.act_bytes)


def test_thresholds_by_arithmetic() -> None:
    """cold -> warm at n = 3: NDP path 3.072e-7 + 3.6864e-7 > CPU path 3.072e-7 + 2.61e-7 (at n = 2
    NDP 4.50e-7 < CPU 4.61e-7); warm -> hot at n = 44: CPU 4.5056e-6 + 5.4067e-7 = 5.046e-6 >
    GPU 4.9152e-6 + 2.35e-8 (at n = 43 the CPU's 4.9316e-6 still beats the GPU's 4.9385e-6).
    Without the CPU tier: cold -> hot at n = 22 (NDP 2.2528e-7 n passes 4.933e-6)."""
    ctx = make_ctx(DispatchRule.TRIMOE, host_cpu=True)
    times = _times(ctx)
    assert thresholds(times, 1, 1, cpu_allowed=True) == (3, 44)
    t_warm, t_hot = thresholds(times, 1, 1, cpu_allowed=False)
    assert t_hot == 22 and t_warm > t_hot  # no warm band
    assert tier_costs(times, 2, 1, 1).best(True) == N
    assert tier_costs(times, 3, 1, 1).best(True) == C
    assert tier_costs(times, 43, 1, 1).best(True) == C
    assert tier_costs(times, 44, 1, 1).best(True) == F


def test_classification_of_a_batched_layer() -> None:
    ctx = make_ctx(DispatchRule.TRIMOE, host_cpu=True, experts=8)
    view = make_view(ctx, 0, {0: (1, 0.1), 1: (5, 0.5), 2: (60, 6.0), 3: (2, 0.2), 4: (9, 1.0)},
                     resident={4})  # fmt: skip
    assert classify(view, _times(ctx), cpu_allowed=True) == [N, C, F, N, R]
    assert classify(view, _times(ctx), cpu_allowed=False) == [N, N, F, N, R]


def _crowded_unit():
    """Eight one-token experts all on DIMM 0 (experts 0, 2, .., 14 of 16 on 2 DIMMs), 8 tokens in
    the step: all are cold (NDP path 2.28e-7 < CPU 3.53e-7 < GPU 4.93e-6)."""
    ctx = make_ctx(DispatchRule.TRIMOE, host_cpu=True, experts=16, k=8)
    view = make_view(ctx, 0, {e: (1, 0.1) for e in range(0, 16, 2)})
    return ctx, dataclasses.replace(view, tokens=8)


def test_refinement_moves_cold_experts_off_the_bottleneck_dimm() -> None:
    """DIMM 0: down(8) 4.096e-7 + 8 x ndp(1) 1.2544e-7 + up(8) 4.096e-7 = 1.8227e-6. Each expert
    moved to the CPU takes 1.2544e-7 off DIMM 0 and adds cpu(1) = 2.5088e-7 to the CPU chain
    (down(1) + up(1) = 1.024e-7 once). After 4 moves DIMM 0 ends at 1.3210e-6 and the CPU at
    1.1059e-6; a 5th would put the CPU at 1.3568e-6, longer: the refinement stops at 4."""
    ctx, view = _crowded_unit()
    times = _times(ctx)
    where = classify(view, times, cpu_allowed=True)
    assert where == [N] * 8
    shards = [ctx.placement.units(0, int(e)) for e in view.experts]
    sched = LayerSchedule(view, times, 2, where, shards)
    assert sched.makespan() == pytest.approx(1.8227e-6, rel=1e-3)
    out = refine(sched, [False] * 8, cpu_allowed=True)
    assert out == [C] * 4 + [N] * 4  # ties: the lower positions move first
    assert sched.makespan() == pytest.approx(1.3210e-6, rel=1e-3)
    assert sched.finishes()["cpu"] == pytest.approx(1.1059e-6, rel=1e-3)


def test_ablations_change_the_decision() -> None:
    ctx, view = _crowded_unit()
    assert TrimoePolicy(ctx).dispatch(view).where.tolist() == [C] * 4 + [N] * 4
    no_refine = make_ctx(DispatchRule.TRIMOE, host_cpu=True, refine=False, experts=16, k=8)
    v = dataclasses.replace(view, plan=no_refine.plans[0])
    assert TrimoePolicy(no_refine).dispatch(v).where.tolist() == [N] * 8
    no_cpu = make_ctx(DispatchRule.TRIMOE, host_cpu=False, experts=16, k=8)
    v = dataclasses.replace(view, plan=no_cpu.plans[0])
    assert C not in TrimoePolicy(no_cpu).dispatch(v).where.tolist()


def test_relayout_swaps_a_heavy_expert_to_the_light_dimm_and_charges_it() -> None:
    """Predicted NDP load 1 ms per iteration on experts 0 and 2 (both on DIMM 0), none on DIMM 1:
    the relayout swaps expert 0 with DIMM 1's lightest (expert 1), leaving 1 ms on each: two
    moves, issued with the layer's next dispatch; then the DIMMs are even and it stops."""
    ctx = make_ctx(DispatchRule.TRIMOE, host_cpu=True, replan_interval=4, experts=8)
    policy = TrimoePolicy(ctx)
    policy.predicted[0][[0, 2]] = 1e-3
    for step in range(4):
        policy.end_step(step, 1, 0)
    view = make_view(ctx, 0, {0: (1, 0.5), 3: (1, 0.5)})
    dec = policy.dispatch(view)
    assert [(m.expert, m.src, m.dst) for m in dec.moves] == [(0, 0, 1), (1, 1, 0)]
    assert all(m.nbytes == ctx.plans[0].expert_bytes for m in dec.moves)
    assert policy.dispatch(view).moves == ()  # issued once


def test_relayout_skips_swaps_that_do_not_pay_for_their_copies() -> None:
    ctx = make_ctx(DispatchRule.TRIMOE, host_cpu=True, replan_interval=4, experts=8)
    policy = TrimoePolicy(ctx)
    policy.predicted[0][[0, 2]] = 1e-9  # 4 iterations x 1e-9 s saved < two 4.9e-6 s copies
    for step in range(4):
        policy.end_step(step, 1, 0)
    assert policy.dispatch(make_view(ctx, 0, {0: (1, 0.5)})).moves == ()


PIPE = "tp-split{degree=1},trimoe{relayout-interval=4}"


def _emit(pipeline: str = PIPE, seed: int = 3):
    """4 DIMMs with a 100x faster DIMM-link than the target's, so swaps pay within 4 steps."""
    module = qwen_like(layers=2, experts=16)
    trace = trace_for(2, 16, 8, tokens=72, prompt=24, seed=seed)
    return compile_and_emit(module, pipeline, trace, ("ndp.units=4", "link.ndp.gbps=2500"))


def test_emitted_schedule_uses_all_three_tiers_and_charges_relayout_copies() -> None:
    s, _ = _emit()
    reasons = set(np.unique(s.reason).tolist())
    assert int(Reason.CPU) in reasons and int(Reason.NDP) in reasons
    moves = s.reason == int(Reason.REPLAN)
    assert moves.any() and float(s.link_bytes[moves].sum()) > 0


def test_deterministic() -> None:
    a, _ = _emit()
    b, _ = _emit()
    for name in ("kind", "resource", "flops", "mem_bytes", "link_bytes", "expert", "unit"):
        assert np.array_equal(getattr(a, name), getattr(b, name))


def test_relayout_off_moves_nothing() -> None:
    s, _ = _emit("tp-split{degree=1},trimoe{relayout=false}")
    assert not (s.reason == int(Reason.REPLAN)).any()
