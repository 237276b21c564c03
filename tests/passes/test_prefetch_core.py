"""The dataset-free prefetcher's run-time state: quota, prefill choice, hysteresis swaps."""

from __future__ import annotations

import numpy as np

from ndpc.backends.policies.base import Counters, LayerPlan, LayerView, Placement
from ndpc.backends.policies.prefetcher import Prefetcher, per_layer_quota, top_experts
from ndpc.ir.attrs import (
    Activation,
    CounterSource,
    DispatchAttr,
    DispatchRule,
    FfnAttr,
    PrefetchAttr,
    ReduceSite,
)
from ndpc.ir.types import DType

FFN = FfnAttr(d_model=8, d_ff=4, activation=Activation.SWIGLU, bias=False, dtype=DType.BF16)
PLANS = tuple(
    LayerPlan(
        layer=i,
        index=i,
        experts=6,
        k=2,
        ffn=FFN,
        shard_units=((0, 1),) * 6,
        reduce=ReduceSite.GPU,
        dispatch=DispatchAttr(DispatchRule.BALANCE),
    )
    for i in range(2)
)


def _view(counters: Counters, index: int, experts: list[int], phase: int) -> LayerView:
    e = np.array(experts)
    return LayerView(
        step=0,
        phase=phase,
        request=0,
        token=0,
        tokens=1,
        context=0,
        plan=PLANS[index],
        experts=e,
        counts=np.ones(len(e), dtype=np.int64),
        weights=np.ones(len(e)),
        resident=np.zeros(6, dtype=bool),
        counters=counters,
        placement=Placement(PLANS),
    )


def test_quota_and_top() -> None:
    eb = FFN.weight_bytes
    assert per_layer_quota(0, PLANS) == 0
    assert per_layer_quota(4 * eb + eb - 1, PLANS) == 2
    assert per_layer_quota(100 * eb, PLANS) == 6  # capped at the expert count
    counts = np.array([3, 0, 5, 5, 1, 0])
    assert top_experts(counts, 3, 1).tolist() == [0, 2, 3]
    assert top_experts(counts, 6, 2).tolist() == [0, 2, 3]  # min_count filters cold experts


def test_prefill_choice_then_new_request_evicts() -> None:
    attr = PrefetchAttr(budget_bytes=4 * FFN.weight_bytes, source=CounterSource.PREFILL)
    pf = Prefetcher(attr, PLANS)
    counters = Counters(2, 6)
    counters.record(0, np.array([1, 4, 5]), np.array([7, 2, 9]), prefill=True)
    acts = pf.after_layer(_view(counters, 0, [1, 4, 5], phase=0))
    assert acts.prefetch == ((0, 1), (0, 5)) and acts.evict == ()
    # decode does nothing with source = prefill
    assert pf.after_layer(_view(counters, 0, [4], phase=1)).prefetch == ()
    counters.start_request()
    counters.record(0, np.array([4, 5]), np.array([3, 8]), prefill=True)
    acts = pf.after_layer(_view(counters, 0, [4, 5], phase=0))
    assert acts.evict == ((0, 1),) and acts.prefetch == ((0, 4),)


def test_decode_swap_needs_hysteresis() -> None:
    attr = PrefetchAttr(
        budget_bytes=2 * FFN.weight_bytes, source=CounterSource.PREFILL_DECODE, hysteresis=3
    )
    pf = Prefetcher(attr, PLANS)  # quota 1 per layer
    counters = Counters(2, 6)
    counters.record(0, np.array([0, 2]), np.array([4, 1]), prefill=True)
    assert pf.after_layer(_view(counters, 0, [0, 2], phase=0)).prefetch == ((0, 0),)
    swaps = []
    for _ in range(8):  # expert 2 keeps being used in decode
        counters.record(0, np.array([2]), np.array([1]), prefill=False)
        acts = pf.after_layer(_view(counters, 0, [2], phase=1))
        swaps.append(acts)
    first = next(i for i, a in enumerate(swaps) if a.prefetch)
    # count(2) reaches count(0) + 3 = 7 after 6 decode uses: not earlier
    assert first == 5
    assert swaps[first].evict == ((0, 0),) and swaps[first].prefetch == ((0, 2),)
    assert pf.swaps == 1 and all(not a.prefetch for a in swaps[first + 1 :])
