"""`prefetch{allocation=global}`: one budget pool over all MoE layers (the `ndpc` policy)."""

from __future__ import annotations

import numpy as np
import pytest

from ndpc.backends.policies.base import Counters, LayerPlan, LayerView, Placement
from ndpc.backends.policies.prefetcher import (
    GlobalPrefetcher,
    Prefetcher,
    coldest_held,
    drop_to_fit,
    global_top,
    make_prefetcher,
    per_layer_quota,
)
from ndpc.compiler.passes.base import PassContext
from ndpc.compiler.passes.pipeline import parse_pipeline
from ndpc.compiler.passes.prefetch import PrefetchPass
from ndpc.ir.attrs import (
    Activation,
    CounterSource,
    DispatchAttr,
    DispatchRule,
    FfnAttr,
    PrefetchAllocation,
    PrefetchAttr,
    ReduceSite,
)
from ndpc.ir.core import Module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import PrefetchPolicyOp
from ndpc.ir.types import DType

FFN = FfnAttr(d_model=8, d_ff=4, activation=Activation.SWIGLU, bias=False, dtype=DType.BF16)
EB = FFN.weight_bytes


def _plans(layers: int, experts: int = 6) -> tuple[LayerPlan, ...]:
    return tuple(
        LayerPlan(
            i,
            i,
            experts,
            2,
            FFN,
            ((0, 1),) * experts,
            ReduceSite.GPU,
            DispatchAttr(DispatchRule.BALANCE),
        )  # fmt: skip
        for i in range(layers)
    )


def _view(plans, counters: Counters, index: int, experts: list[int], phase: int) -> LayerView:
    e = np.array(experts)
    return LayerView(0, phase, 0, 0, 1, 0, plans[index], e, np.ones(len(e), dtype=np.int64),
                     np.ones(len(e)), np.zeros(6, dtype=bool), counters, Placement(plans))  # fmt: skip


def _attr(budget_experts: int, source=CounterSource.PREFILL_DECODE, hysteresis=2.0):
    return PrefetchAttr(budget_experts * EB, source, hysteresis, 1, PrefetchAllocation.GLOBAL)


def test_global_top_ranks_pairs_across_layers() -> None:
    counts = np.array([[9, 1, 0, 0], [5, 5, 4, 0]])
    nbytes = np.array([10.0, 10.0])
    # three slots: the skewed layer 0 gets one, the flat layer 1 two (an equal quota gives 1 + 1)
    assert global_top(counts, nbytes, 30.0, 1).astype(int).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0]]
    assert global_top(counts, nbytes, 29.0, 1).sum() == 2  # only whole experts fit
    assert global_top(counts, nbytes, 100.0, 5).astype(int).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0]]
    # count per byte: a layer with half-size experts wins ties of raw counts
    assert global_top(np.array([[4], [4]]), np.array([10.0, 5.0]), 5.0, 1)[:, 0].tolist() == [
        False,
        True,
    ]


def test_coldest_held_prefers_higher_layer_on_ties() -> None:
    counts = np.array([[3, 7], [3, 9]])
    held = np.array([[True, True], [True, False]])
    assert coldest_held(counts, held, np.array([1.0, 1.0]), 1.0) == (1, 0)
    assert coldest_held(counts, np.zeros_like(held), np.array([1.0, 1.0]), 1.0) is None


def test_budget_below_one_expert_per_layer_still_prefetches() -> None:
    plans = _plans(4)  # 3 experts of budget over 4 layers: the equal quota rounds to zero
    attr = _attr(3)
    assert per_layer_quota(attr.budget_bytes, plans) == 0
    assert not Prefetcher(attr, plans).active
    pf = make_prefetcher(attr, plans)
    assert isinstance(pf, GlobalPrefetcher) and pf.active
    counters = Counters(4, 6)
    fetched = []
    for i in range(4):
        counters.record(i, np.array([i]), np.array([10 + i]), prefill=True)
        fetched += pf.after_layer(_view(plans, counters, i, [i], phase=0)).prefetch
    assert pf.held.sum() == 3 and pf.held[3, 3] and pf.free >= 0


def test_prefill_shares_the_budget_pro_rata_and_revises() -> None:
    plans = _plans(2)
    pf = GlobalPrefetcher(_attr(2), plans)
    counters = Counters(2, 6)
    counters.record(0, np.array([0, 1]), np.array([5, 4]), prefill=True)
    acts = pf.after_layer(_view(plans, counters, 0, [0, 1], phase=0))
    assert acts.prefetch == ((0, 0),) and acts.evict == ()  # half the budget after layer 0
    counters.record(1, np.array([2, 3]), np.array([9, 1]), prefill=True)
    acts = pf.after_layer(_view(plans, counters, 1, [2, 3], phase=0))
    assert acts.prefetch == ((1, 2),) and acts.evict == ()
    assert pf.held.astype(int).sum() == 2 and pf.free == 0


def test_next_prompt_keeps_pairs_of_layers_it_has_not_reached() -> None:
    # a second request (or a serving iteration's new prompt) re-decides layer i at layer i;
    # the first version evicted every later layer's pairs at layer 0 and copied them back
    plans = _plans(2)
    pf = GlobalPrefetcher(_attr(2), plans)
    counters = Counters(2, 6)
    for i in range(2):
        counters.record(i, np.array([0, 1]), np.array([5, 4]), prefill=True)
        pf.after_layer(_view(plans, counters, i, [0, 1], phase=0))
    assert pf.held[0, 0] and pf.held[1, 0] and pf.held.sum() == 2
    counters.start_request()
    counters.record(0, np.array([2]), np.array([7]), prefill=True)
    acts = pf.after_layer(_view(plans, counters, 0, [2], phase=0))
    assert acts.evict == ((0, 0),) and acts.prefetch == ((0, 2),)  # layer 1 untouched
    counters.record(1, np.array([0]), np.array([6]), prefill=True)
    acts = pf.after_layer(_view(plans, counters, 1, [0], phase=0))
    assert acts.evict == () and acts.prefetch == ()  # (1, 0) still wanted: no copy
    assert pf.held[0, 2] and pf.held[1, 0] and pf.free == 0


def test_kept_pairs_leave_lowest_score_first_when_over_budget() -> None:
    want = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0]], dtype=bool)
    score = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 1.0], [1.0, 2.0, 0.0]])
    drop_to_fit(want, score, np.ones(3), 1, 4.0)  # 6 pairs, 4 fit; layer 0 is never touched
    # (1, 2) and (2, 0) tie at 1.0: the higher layer leaves first, then (1, 2)
    assert want.astype(int).tolist() == [[1, 1, 0], [1, 0, 0], [0, 1, 0]]
    drop_to_fit(want, score, np.ones(3), 1, 9.0)  # within budget: unchanged
    assert want.sum() == 4


def test_decode_swap_evicts_the_globally_coldest_with_hysteresis() -> None:
    plans = _plans(2)
    pf = GlobalPrefetcher(_attr(2, hysteresis=3), plans)
    counters = Counters(2, 6)
    counters.record(0, np.array([0]), np.array([8]), prefill=True)
    pf.after_layer(_view(plans, counters, 0, [0], phase=0))
    counters.record(1, np.array([1]), np.array([2]), prefill=True)
    pf.after_layer(_view(plans, counters, 1, [1], phase=0))
    assert pf.held[0, 0] and pf.held[1, 1]
    swaps = []
    for _ in range(8):  # expert 4 of layer 0 keeps being used in decode
        counters.record(0, np.array([4]), np.array([1]), prefill=False)
        swaps.append(pf.after_layer(_view(plans, counters, 0, [4], phase=1)))
    first = next(i for i, a in enumerate(swaps) if a.prefetch)
    assert first == 4  # count 5 = count(1, 1) + 3
    assert swaps[first].evict == ((1, 1),) and swaps[first].prefetch == ((0, 4),)
    assert pf.swaps == 1 and pf.held[0, 0]


def test_source_prefill_never_swaps() -> None:
    plans = _plans(1)
    pf = GlobalPrefetcher(_attr(1, source=CounterSource.PREFILL), plans)
    counters = Counters(1, 6)
    counters.record(0, np.array([0]), np.array([1]), prefill=True)
    pf.after_layer(_view(plans, counters, 0, [0], phase=0))
    for _ in range(5):
        counters.record(0, np.array([3]), np.array([1]), prefill=False)
        assert pf.after_layer(_view(plans, counters, 0, [3], phase=1)).prefetch == ()


def test_pass_option() -> None:
    module = Module(name="m", decls=(), funcs=())
    ctx = PassContext()
    out = PrefetchPass(budget_gib=1.0, allocation=PrefetchAllocation.GLOBAL).run(module, ctx)
    (op,) = [d for d in out.decls if isinstance(d, PrefetchPolicyOp)]
    assert op.policy.allocation is PrefetchAllocation.GLOBAL
    default = PrefetchPass(budget_gib=1.0).run(module, ctx)
    assert default.decls[-1].policy.allocation is PrefetchAllocation.LAYER
    # the option is typed: a string is refused when the pass is built (the pipeline parser
    # reads `allocation=global` into the enum, with a column on error)
    with pytest.raises(ValueError, match="'allocation' must be one of layer, global"):
        PrefetchPass(budget_gib=1.0, allocation="pooled")
    (p,) = parse_pipeline("prefetch{budget-gib=1 allocation=global}")
    assert p.allocation is PrefetchAllocation.GLOBAL
    with pytest.raises(NdpcError, match=r"did you mean 'global'"):
        parse_pipeline("prefetch{allocation=globl}")
