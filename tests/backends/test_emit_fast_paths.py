"""The emitter's and policies' fast paths give what their general paths give, op for op.

Each fast path (NDP layers whose experts share their units, balance's shared one-token
decisions, the memoised host-CPU moves, the prefetchers' lower bounds, batch-1 routing in
blocks, the counters' queued adds) is switched off here and the schedules compared column by
column; the smaller pieces are also checked against a plain reference on random inputs.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from emit_fixtures import compile_and_emit, qwen_like, tiny_module, trace_for

from ndpc.backends import emit as emit_mod
from ndpc.backends.emit_moe import MoeLayerEmitter
from ndpc.backends.policies import host_cpu
from ndpc.backends.policies.balance import BalancePolicy
from ndpc.backends.policies.base import Counters
from ndpc.backends.schedule import COLUMNS
from ndpc.backends.serving import ServingConfig
from ndpc.compiler.passes.pipeline import make_context, parse_pipeline
from ndpc.compiler.policies import POLICIES
from ndpc.traces.generate import arrival_times

PAPER = "tp-split,balance,prefetch"
NDPC = POLICIES["ndpc"].pipeline
NDPC_REQUEST = "tp-split,balance{offload-resident=true host-cpu=true},prefetch{allocation=global}"


class _NeverSame:
    """A counters epoch that differs at every read: the prefetchers' bounds never apply."""

    n = 0

    def __get__(self, obj, cls):
        _NeverSame.n += 1
        return -_NeverSame.n

    def __set__(self, obj, value):
        pass


def _general_paths(monkeypatch) -> None:
    monkeypatch.setattr(MoeLayerEmitter, "_ndp", MoeLayerEmitter._ndp_any)
    monkeypatch.setattr(BalancePolicy, "dispatch", BalancePolicy._dispatch)
    monkeypatch.setattr(
        BalancePolicy, "_cpu",
        lambda self, view, where, counts: host_cpu.cpu_moves(
            view, self.times[view.plan.index], self.ctx.units, self.ctx.target, where),
    )  # fmt: skip
    monkeypatch.setattr(Counters, "epoch", _NeverSame(), raising=False)
    monkeypatch.setattr(Counters, "FLUSH", 1)

    def one_row(self, row):
        trace = self.trace
        return emit_mod._route_layers(trace.experts[row : row + 1], trace.weights[row : row + 1],
                                      self.p.plans[0].experts)  # fmt: skip

    monkeypatch.setattr(emit_mod._Emitter, "_row_routes", one_row)


def _emit(module, pipeline: str, trace, serving: ServingConfig | None):
    if serving is None:
        return compile_and_emit(module, pipeline, trace)[0]
    ctx = make_context("rtx5080-ndp", ())
    for p in parse_pipeline(pipeline):
        module = p.run(module, ctx)
    return emit_mod.emit_schedule(module, trace, ctx.target, ctx.cost, serving=serving)


def _same(a, b) -> None:
    assert len(a) == len(b)
    for name, _, _ in COLUMNS:
        assert np.array_equal(a.column(name), b.column(name)), name
    assert np.array_equal(a.dep_ptr, b.dep_ptr) and np.array_equal(a.dep_idx, b.dep_idx)
    assert a.meta == b.meta


@pytest.mark.parametrize("pipeline", [PAPER, NDPC, NDPC_REQUEST, "tp-split{degree=2},balance,prefetch",
                                      "tp-split{degree=1},dispatch{rule=eplb}"])  # fmt: skip
@pytest.mark.parametrize("serving", [False, True])
def test_fast_paths_emit_what_the_general_paths_emit(monkeypatch, pipeline, serving) -> None:
    module = qwen_like(layers=3, experts=32)
    trace = trace_for(3, 32, 8, tokens=70, prompt=20, seed=5, requests=3)
    config = None
    if serving:
        meta = type(trace.meta)(**{**trace.meta.__dict__, "arrivals": arrival_times(3, 50.0, 1)})
        trace = type(trace)(meta, trace.experts, trace.weights, trace.phase, trace.request)
        config = ServingConfig(max_batch=2)
    hits = {"alike": 0, "shared": 0, "bound": 0}
    with monkeypatch.context() as m:
        _count_fast_paths(m, hits)
        fast = _emit(module, pipeline, trace, config)
    if pipeline in (PAPER, NDPC, NDPC_REQUEST):  # the fast paths ran
        assert hits["alike"] and hits["bound"] and (hits["shared"] or pipeline != PAPER)
    with monkeypatch.context() as m:
        _general_paths(m)
        general = _emit(module, pipeline, trace, config)
    _same(fast, general)


def _count_fast_paths(monkeypatch, hits: dict[str, int]) -> None:
    alike, shared = MoeLayerEmitter._ndp_alike, BalancePolicy.dispatch

    def count_alike(self, *args):
        hits["alike"] += 1
        return alike(self, *args)

    def count_shared(self, view):
        hits["shared"] += view.tokens == 1 and view.plan.index in self._simple
        return shared(self, view)

    class Epoch:  # counts reads of the epoch: a bound was checked
        def __get__(self, obj, cls):
            hits["bound"] += 1
            return obj.__dict__["_epoch"]

        def __set__(self, obj, value):
            obj.__dict__["_epoch"] = value

    monkeypatch.setattr(MoeLayerEmitter, "_ndp_alike", count_alike)
    monkeypatch.setattr(BalancePolicy, "dispatch", count_shared)
    monkeypatch.setattr(Counters, "epoch", Epoch(), raising=False)


def test_fast_paths_on_a_model_with_few_experts(monkeypatch) -> None:
    trace = trace_for(2, 8, 2, tokens=60, prompt=12, seed=2, requests=2)
    for pipeline in (PAPER, NDPC, NDPC_REQUEST):
        fast = _emit(tiny_module(), pipeline, trace, None)
        with monkeypatch.context() as m:
            _general_paths(m)
            general = _emit(tiny_module(), pipeline, trace, None)
        _same(fast, general)


def test_the_general_paths_differ_when_broken(monkeypatch) -> None:
    # the comparison above can fail: a general path that drops one NDP kernel's dependency
    # changes the schedule
    module = qwen_like(layers=2, experts=32)
    trace = trace_for(2, 32, 8, tokens=30, prompt=10, seed=1)
    fast = _emit(module, PAPER, trace, None)
    original = MoeLayerEmitter._ndp_any

    def broken(self, lay, tokens, dec, experts, counts, picks, router, moved, parts):
        picks = picks[1:] if len(picks) > 1 else picks  # one expert's kernels go missing
        original(self, lay, tokens, dec, experts, counts, picks, router, moved, parts)

    with monkeypatch.context() as m:
        _general_paths(m)
        m.setattr(MoeLayerEmitter, "_ndp", broken)
        general = _emit(module, PAPER, trace, None)
    with pytest.raises(AssertionError):
        _same(fast, general)


def test_route_rows_match_route_layers_row_by_row() -> None:
    rng = np.random.default_rng(4)
    experts = rng.integers(0, 16, size=(40, 5, 4)).astype(np.int16)
    weights = rng.random((40, 5, 4)).astype(np.float32)
    for r in range(0, 40, 3):  # rows with an expert picked twice by one token
        experts[r, 2, 1] = experts[r, 2, 0]
    got = emit_mod._route_rows(experts, weights, 16)
    assert len(got) == 40
    for r in range(40):
        want = emit_mod._route_layers(experts[r : r + 1], weights[r : r + 1], 16)
        assert len(got[r]) == len(want)
        for g, w in zip(got[r], want, strict=True):
            for a, b in zip(g[:3], w[:3], strict=True):
                assert a.dtype == b.dtype and np.array_equal(a, b)
            assert g[3] == w[3]


def test_counters_queue_matches_eager_adds() -> None:
    rng = random.Random(3)
    counters = Counters(3, 10)
    counters.FLUSH = 7
    request, prefill, total = (np.zeros((3, 10), dtype=np.int64) for _ in range(3))
    for step in range(200):
        if step % 50 == 0:
            counters.start_request()
            request[:] = 0
            prefill[:] = 0
        index = rng.randrange(3)
        ids = np.array(sorted(rng.sample(range(10), rng.randint(1, 4))), dtype=np.int64)
        counts = np.array([rng.randint(1, 5) for _ in ids], dtype=np.int64)
        pre = rng.random() < 0.3
        counters.record(index, ids, counts, pre)
        request[index, ids] += counts
        total[index, ids] += counts
        if pre:
            prefill[index, ids] += counts
        assert counters.request_row(index) == request[index].tolist()
        if step % 9 == 0:
            assert np.array_equal(counters.request, request)
            assert np.array_equal(counters.prefill, prefill)
            assert np.array_equal(counters.total, total)
    assert np.array_equal(counters.total, total)
