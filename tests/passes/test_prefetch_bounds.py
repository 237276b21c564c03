"""The prefetchers' decode swaps with their lower bounds give the decisions of the plain rules.

Each prefetcher keeps a lower bound of its coldest held expert's count and skips recomputing
the coldest while a candidate stays below it. The reference classes below recompute it on every
swap (the rules as documented); random decode sequences, with request restarts and prefills,
must give the same actions step by step.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from policy_helpers import FakeCost

from ndpc.backends.policies.base import (
    NO_ACTIONS,
    Counters,
    LayerPlan,
    LayerView,
    Placement,
    StepActions,
)
from ndpc.backends.policies.prefetcher import (
    GlobalPrefetcher,
    Prefetcher,
    Rent,
    coldest_held,
    live_counts,
)
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
from ndpc.ir.types import DType

SMALL = FfnAttr(d_model=8, d_ff=4, activation=Activation.SWIGLU, bias=False, dtype=DType.BF16)
BIG = FfnAttr(d_model=8, d_ff=12, activation=Activation.SWIGLU, bias=False, dtype=DType.BF16)
E = 12


def _plans(ffns) -> tuple[LayerPlan, ...]:
    return tuple(
        LayerPlan(i, i, E, 3, f, ((0, 1),) * E, ReduceSite.GPU, DispatchAttr(DispatchRule.BALANCE))
        for i, f in enumerate(ffns)
    )


def _view(plans, counters, index: int, experts: list[int], phase: int) -> LayerView:
    e = np.array(experts, dtype=np.int64)
    return LayerView(0, phase, 0, 0, 1, 0, plans[index], e, np.ones(len(e), dtype=np.int64),
                     np.ones(len(e)), np.zeros(E, dtype=bool), counters, Placement(plans))  # fmt: skip


class PlainPrefetcher(Prefetcher):
    """The per-layer swap rule recomputing the coldest held expert every time."""

    def _swap(self, view: LayerView) -> StepActions:
        index = view.plan.index
        held = self.held[index]
        counts = live_counts(self.attr, view.counters)[index]
        if not held:
            best = int(np.argmax(counts))
            if counts[best] < max(self.attr.min_count, 1):
                return NO_ACTIONS
            held.add(best)
            return StepActions(prefetch=((index, best),))
        fresh = [e for e in view.experts.tolist() if e not in held]
        if not fresh:
            return NO_ACTIONS
        row = counts.tolist()
        cand = max(fresh, key=lambda e: (row[e], -e))
        if len(held) < self.quota and row[cand] >= max(self.attr.min_count, 1):
            held.add(cand)
            return StepActions(prefetch=((index, cand),))
        low = min(row[e] for e in held)
        if row[cand] < low + self.attr.hysteresis:
            return NO_ACTIONS
        coldest = max(e for e in held if row[e] == low)
        held.discard(coldest)
        held.add(cand)
        self.swaps += 1
        return StepActions(evict=((index, coldest),), prefetch=((index, cand),))


class PlainGlobal(GlobalPrefetcher):
    """The global pool's swap rule reading the coldest held pair every time."""

    def _swap(self, view: LayerView) -> StepActions:
        index = view.plan.index
        counts = live_counts(self.attr, view.counters)
        row = counts[index]
        fresh = [e for e in view.experts.tolist() if not self.held[index, e]]
        if self.rent is not None:
            paid, price = self.rent.paid[index], self.rent.price[index]
            fresh = [e for e in fresh if paid[e] >= price[e]]
        if not fresh:
            return NO_ACTIONS
        cand = max(fresh, key=lambda e: (row[e], -e))
        if row[cand] < max(self.attr.min_count, 1):
            return NO_ACTIONS
        need = self.nbytes[index]
        if self.free >= need:
            self.held[index, cand] = True
            self.score[index, cand] = row[cand] / need
            self.free -= need
            return StepActions(prefetch=((index, cand),))
        victim = coldest_held(counts, self.held, self.nbytes, need)
        if victim is None:
            return NO_ACTIONS
        vi, ve = victim
        if row[cand] < counts[vi, ve] + self.attr.hysteresis:
            return NO_ACTIONS
        self.held[vi, ve] = False
        self.held[index, cand] = True
        self.score[index, cand] = row[cand] / need
        self.free += self.nbytes[vi] - need
        self.swaps += 1
        return StepActions(evict=((vi, ve),), prefetch=((index, cand),))


def _drive(make, plans, seed: int, skewed: bool) -> int:
    """Run a bounded and a plain prefetcher side by side; returns how often a bound was set."""
    rng = random.Random(seed)
    pair = [(make(False), Counters(len(plans), E)), (make(True), Counters(len(plans), E))]
    weights = [2.0 ** -(e % 6) if skewed else 1.0 for e in range(E)]
    bounded = 0
    for step in range(400):
        if step % 130 == 0:
            for _, c in pair:
                c.start_request()
        phase = 0 if step % 130 < len(plans) else 1
        index = step % len(plans)
        experts = sorted(set(rng.choices(range(E), weights, k=3)))
        counts = np.array([rng.randint(1, 6) if phase == 0 else 1 for _ in experts])
        got = []
        for pf, c in pair:
            c.record(index, np.array(experts), counts, phase == 0)
            got.append(pf.after_layer(_view(plans, c, index, experts, phase)))
        assert got[0] == got[1], (step, got)
        low = pair[0][0]._low
        bounded += sum(b is not None for b in (low.values() if isinstance(low, dict) else low))
    assert pair[0][0].swaps == pair[1][0].swaps
    return bounded


@pytest.mark.parametrize("scope", [CounterScope.REQUEST, CounterScope.ALL])
def test_per_layer_bound_gives_the_plain_rule(scope) -> None:
    plans = _plans([SMALL] * 3)
    attr = PrefetchAttr(budget_bytes=3 * 4 * SMALL.weight_bytes,
                        source=CounterSource.PREFILL_DECODE, hysteresis=2.0, scope=scope)  # fmt: skip
    bounded = 0
    for seed in range(6):
        bounded += _drive(lambda plain: (PlainPrefetcher if plain else Prefetcher)(attr, plans),
                          plans, seed, skewed=seed % 2 == 0)  # fmt: skip
    assert bounded  # the bound was in use


@pytest.mark.parametrize("scope", [CounterScope.REQUEST, CounterScope.ALL])
@pytest.mark.parametrize("payback", [False, True])
def test_global_bound_gives_the_plain_rule(scope, payback) -> None:
    plans = _plans([SMALL, BIG, SMALL, BIG])  # two expert sizes: a bound per size
    attr = PrefetchAttr(budget_bytes=5 * BIG.weight_bytes, source=CounterSource.PREFILL_DECODE,
                        hysteresis=3.0, allocation=PrefetchAllocation.GLOBAL, scope=scope,
                        payback=payback)  # fmt: skip

    def make(plain: bool):
        rent = Rent(plans, FakeCost(), 2.0) if payback else None
        return (PlainGlobal if plain else GlobalPrefetcher)(attr, plans, rent)

    bounded = 0
    for seed in range(6):
        bounded += _drive(make, plans, seed, skewed=seed % 2 == 1)
    assert bounded


def test_a_wrong_bound_would_be_caught() -> None:
    # the comparison can fail: one bound for every expert size (a big layer's coldest big pair
    # is no bound for a small layer, which may evict a colder small pair)
    plans = _plans([SMALL, BIG, SMALL, BIG])
    attr = PrefetchAttr(budget_bytes=5 * BIG.weight_bytes, source=CounterSource.PREFILL_DECODE,
                        hysteresis=3.0, allocation=PrefetchAllocation.GLOBAL)  # fmt: skip

    class AnySize(dict):
        def get(self, key, default=None):
            return next(iter(self.values()), default)

    class OneBound(GlobalPrefetcher):
        def _swap(self, view):
            out = super()._swap(view)
            self._low = AnySize(self._low)
            return out

    failed = 0
    for seed in range(6):
        try:
            _drive(lambda plain: (PlainGlobal if plain else OneBound)(attr, plans), plans, seed,
                   skewed=seed % 2 == 1)  # fmt: skip
        except AssertionError:
            failed += 1
    assert failed
