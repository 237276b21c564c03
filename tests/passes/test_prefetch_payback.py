"""`prefetch{payback=true scope=all}`: copies that pay for themselves (the `ndpc` policy)."""

from __future__ import annotations

import numpy as np
import pytest

from ndpc.backends.cost import CostModel
from ndpc.backends.policies.base import Counters, LayerPlan, LayerView, Placement
from ndpc.backends.policies.prefetcher import (
    GlobalPrefetcher,
    Rent,
    global_top,
    global_top_paid,
    make_prefetcher,
)
from ndpc.backends.target import load_target
from ndpc.compiler.passes.base import PassContext
from ndpc.compiler.passes.pipeline import PassManager, parse_pipeline
from ndpc.ir.attrs import (
    Activation,
    CounterScope,
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
from ndpc.ir.types import DType

QWEN = FfnAttr(2048, 768, Activation.SWIGLU, False, DType.BF16)  # Qwen3-30B-A3B's expert
EB = QWEN.weight_bytes
COST = CostModel(load_target("rtx5080-ndp"))


def _plans(layers: int, experts: int = 6) -> tuple[LayerPlan, ...]:
    units = ((0, 1, 2, 3),) * experts  # TP over 4 DIMMs, as the paper's placement
    return tuple(
        LayerPlan(i, i, experts, 2, QWEN, units, ReduceSite.GPU, DispatchAttr(DispatchRule.BALANCE))
        for i in range(layers)
    )


def _view(plans, counters, index, experts, counts, phase) -> LayerView:
    e = np.array(experts)
    return LayerView(0, phase, 0, 0, int(sum(counts)), 0, plans[index], e,
                     np.array(counts, dtype=np.int64), np.ones(len(e)), np.zeros(6, dtype=bool),
                     counters, Placement(plans))  # fmt: skip


def _attr(budget_experts: int, scope=CounterScope.REQUEST) -> PrefetchAttr:
    return PrefetchAttr(budget_experts * EB, CounterSource.PREFILL_DECODE, 2.0, 1,
                        PrefetchAllocation.GLOBAL, True, scope)  # fmt: skip


def test_rent_pays_at_the_break_even_use() -> None:
    plans = _plans(1)
    rent = Rent(plans, COST, 2.0)
    times = rent.times[0]
    extra = times.ndp(1, 4) - times.gpu(1)
    price = times.fetch(4)
    assert rent.price[0, 0] == price and extra > 0
    need = int(np.ceil(price / extra))  # one-token decode uses until the copy has paid
    counters = Counters(1, 6)
    for n in range(1, need + 1):
        work = rent.record(_view(plans, counters, 0, [0], [1], phase=1))
        assert work == times.ndp(1, 4)  # what the warm-up allowance counts
        assert bool(rent.due()[0, 0]) == (n == need), n
    assert not rent.due()[0, 1:].any()


def test_global_top_paid_admits_unpaid_pairs_within_the_allowance() -> None:
    counts = np.array([[9, 7, 5, 3]])
    nbytes = np.array([1.0])
    ok = np.array([[False, True, False, False]])  # expert 1 held or paid
    price = np.array([[2.0, 2.0, 2.0, 2.0]])
    mask, spent = global_top_paid(counts, nbytes, 3.0, 1, ok, price, 2.0)
    assert mask.astype(int).tolist() == [[1, 1, 0, 0]] and spent == 2.0  # one unpaid fits
    mask, spent = global_top_paid(counts, nbytes, 3.0, 1, ok, price, 0.0)
    assert mask.astype(int).tolist() == [[0, 1, 0, 0]] and spent == 0.0
    # every pair paid: the same choice as the plain ranking
    all_ok = np.ones_like(ok)
    mask, spent = global_top_paid(counts, nbytes, 3.0, 1, all_ok, price, 0.0)
    assert (mask == global_top(counts, nbytes, 3.0, 1)).all() and spent == 0.0


def test_decode_copies_only_paid_experts() -> None:
    plans = _plans(1)
    pf = make_prefetcher(_attr(4), plans, COST, 2.0)
    assert isinstance(pf, GlobalPrefetcher) and pf.rent is not None
    counters = Counters(1, 6)
    pf.start_step(False)
    copies = []
    for _ in range(40):
        counters.record(0, np.array([3]), np.array([1]), prefill=False)
        copies.append(pf.after_layer(_view(plans, counters, 0, [3], [1], phase=1)).prefetch)
    first = next(i for i, c in enumerate(copies) if c)
    times = pf.rent.times[0]
    assert first + 1 == int(np.ceil(times.fetch(4) / (times.ndp(1, 4) - times.gpu(1))))
    assert copies[first] == ((0, 3),) and not any(copies[first + 1 :])


def test_warmup_allowance_bounds_unpaid_copies() -> None:
    plans = _plans(2)
    counters = Counters(2, 6)
    # a short prompt: 2 tokens on each of 6 experts per layer, none paid yet
    taken = {}
    for warmup in (True, False):
        pf = make_prefetcher(_attr(12), plans, COST, 2.0)
        pf.start_step(warmup)
        got = []
        for i in range(2):
            counters.record(i, np.arange(6), np.full(6, 2), prefill=True)
            got += pf.after_layer(_view(plans, counters, i, list(range(6)), [2] * 6, 0)).prefetch
        taken[warmup] = got
    times = Rent(plans, COST, 2.0).times[0]
    allowance = 12 * times.ndp(2, 4)  # the step's own DIMM time over both layers
    assert taken[False] == []  # no warm-up, nothing paid: nothing copied
    assert 0 < len(taken[True]) <= allowance / times.fetch(4) < 12


def test_scope_all_ranks_by_every_request() -> None:
    plans = _plans(1)
    attr = PrefetchAttr(1 * EB, CounterSource.PREFILL_DECODE, 2.0, 1, PrefetchAllocation.GLOBAL,
                        False, CounterScope.ALL)  # fmt: skip
    counters = Counters(1, 6)
    counters.record(0, np.array([0]), np.array([50]), prefill=False)  # an earlier request's
    counters.start_request()
    counters.record(0, np.array([1]), np.array([3]), prefill=True)
    pf = make_prefetcher(attr, plans)
    assert pf.after_layer(_view(plans, counters, 0, [1], [3], phase=0)).prefetch == ((0, 0),)
    request = PrefetchAttr(1 * EB, CounterSource.PREFILL_DECODE, 2.0, 1,
                           PrefetchAllocation.GLOBAL)  # fmt: skip
    pf = make_prefetcher(request, plans)
    assert pf.after_layer(_view(plans, counters, 0, [1], [3], phase=0)).prefetch == ((0, 1),)


def test_payback_needs_the_global_pool() -> None:
    (pass_,) = parse_pipeline("prefetch{budget-gib=1 payback=true}")
    with pytest.raises(NdpcError, match="payback=true needs allocation=global"):
        pass_.run(Module("m"), PassContext())
    # through the pass manager the message points at the pass in the pipeline text
    pipeline = "tp-split{units=2},prefetch{budget-gib=1 payback=true}"
    with pytest.raises(NdpcError) as err:
        PassManager(parse_pipeline(pipeline)).run(Module("m"), PassContext())
    assert err.value.loc is not None and err.value.loc.file == "<pipeline>"
    assert err.value.loc.col == pipeline.index("prefetch") + 1
    attr = PrefetchAttr(EB, CounterSource.PREFILL, 2.0, 1, PrefetchAllocation.LAYER, True)
    with pytest.raises(ValueError, match="allocation=global"):
        make_prefetcher(attr, _plans(1), COST, 2.0)
