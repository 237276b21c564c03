"""The serving lower bound (backends/optimum.serving_bound, docs/optimum.md §7).

If any policy's simulated serving run beats it (makespan, mean e2e or mean TTFT), the bound is
wrong: every test compares it with real schedules of the serving loop.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndpc.backends import emit as emit_mod
from ndpc.backends.optimum import optimum_bound, serving_bound
from ndpc.backends.serving import ServingConfig
from ndpc.backends.simulator import simulate
from ndpc.backends.simulator.serving_metrics import summary
from ndpc.compiler.experiments.runner import Case, pipeline_for
from ndpc.compiler.passes.pipeline import make_context, parse_pipeline
from ndpc.ir.builder import synthetic_module
from ndpc.ir.ops import ResidentOp
from ndpc.traces.format import save_trace
from ndpc.traces.generate import arrival_times, generate_trace

TARGET = "rtx5080-ndp"
SLACK = 1e-9
POLICIES = ("monde", "ondemand", "lru", "fiddler", "duplex", "ctxaware", "eplb", "tp", "paper",
            "ndpc", "oracle-cache", "oracle-profile", "oracle-opt")  # fmt: skip


def _module(layers=1, experts=4, k=2):
    return synthetic_module(layers, experts, k=k, d_model=2048, d_ff=768, name="small")


def _trace(layers, experts, k, requests, tokens, prompt, seed, rate):
    trace = generate_trace(layers, experts, k, tokens, prompt, seed, requests=requests)
    arrivals = arrival_times(requests, rate, seed)
    return dataclasses.replace(trace, meta=dataclasses.replace(trace.meta, arrivals=arrivals))


def _serve(module, trace, path, policy, overrides, config):
    text, _ = pipeline_for(Case("small", TARGET, str(path), policy, overrides, calib=str(path)))
    ctx = make_context(TARGET, overrides)
    for p in parse_pipeline(text):
        module = p.run(module, ctx)
    schedule = emit_mod.emit_schedule(module, trace, ctx.target, ctx.cost, serving=config)
    result = simulate(schedule, ctx.target, ctx.cost)
    cold = not any(e for op in module.ops_of(ResidentOp) for e in op.experts)
    return schedule, result, ctx, cold


def _iteration_starts(schedule, result) -> dict[int, float]:
    """Each request's first iteration's start (its first foreground op)."""
    fg = schedule.token >= 0
    out: dict[int, float] = {}
    for _, lo, hi, _kv, _cap, slices in schedule.meta["serving"]["batches"]:
        start = float(result.start[lo:hi][fg[lo:hi]].min())
        for req, *_ in slices:
            out.setdefault(int(req), start)
    return out


def _check(tmp_path, layers, experts, k, requests, tokens, prompt, seed, rate, overrides, config,
           policies=POLICIES):  # fmt: skip
    module = _module(layers, experts, k)
    trace = _trace(layers, experts, k, requests, tokens, prompt, seed, rate)
    path = tmp_path / f"s{seed}.npz"
    save_trace(trace, path)
    gaps = {}
    for policy in policies:
        if policy == "fiddler" and prompt == 0:
            continue
        schedule, result, ctx, cold = _serve(module, trace, path, policy, overrides, config)
        meta = schedule.meta["serving"]
        # the schedule itself never serves a request before it arrives (the bound relies on it)
        for rid, start in _iteration_starts(schedule, result).items():
            arrival = next(r[1] for r in meta["requests"] if r[0] == rid)
            assert start >= arrival - 1e-12, (policy, rid, start, arrival)
        got = summary({"requests": result.serving["requests"], "itl": []})
        bound = serving_bound(module, trace, ctx.target, ctx.cost, meta)
        assert bound.cold_start_s >= bound.makespan_s * (1 - SLACK)
        assert got["makespan_s"] >= bound.makespan_s * (1 - SLACK), (policy, got, bound)
        assert got["e2e_mean_s"] >= bound.e2e_mean_s * (1 - SLACK), (policy, got, bound)
        assert got["ttft_mean_s"] >= bound.ttft_mean_s * (1 - SLACK), (policy, got, bound)
        if cold:
            assert got["makespan_s"] >= bound.cold_start_s * (1 - SLACK), (policy, got, bound)
        gaps[policy] = got["makespan_s"] / bound.makespan_s
    return gaps


def test_no_policy_beats_the_serving_bound(tmp_path):
    """Requests arriving while others run (so the loop batches them), a small GPU."""
    gaps = _check(tmp_path, 2, 8, 2, 5, 10, 6, 0, 500.0, ("gpu.memory_gib=0.9",),
                  ServingConfig(max_batch=4), ("lru", "paper", "oracle-cache", "oracle-opt"))  # fmt: skip
    assert all(g >= 1.0 for g in gaps.values())


def test_no_policy_beats_the_serving_bound_chunked(tmp_path):
    """Chunked prefill under a token budget, every request queued at once."""
    _check(tmp_path, 1, 8, 2, 4, 12, 8, 3, 1e6, (), ServingConfig(4, 6, True),
           ("ondemand", "ndpc", "oracle-opt"))  # fmt: skip


@pytest.mark.slow
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    layers=st.integers(1, 2),
    experts=st.integers(2, 8),
    k=st.integers(1, 2),
    requests=st.integers(2, 5),
    tokens=st.integers(2, 8),
    prompt=st.integers(0, 5),
    seed=st.integers(0, 1000),
    rate=st.sampled_from([100.0, 500.0, 2000.0, 1e6]),
    max_batch=st.integers(1, 4),
    budget=st.sampled_from([0, 4, 8]),
    units=st.integers(1, 4),
    gpu=st.sampled_from(["0.9", "1.2", "16"]),
    exclusive=st.booleans(),
    engines=st.integers(1, 2),
)
def test_serving_bound_property(tmp_path, layers, experts, k, requests, tokens, prompt, seed,
                                rate, max_batch, budget, units, gpu, exclusive, engines):  # fmt: skip
    """Random small models, targets, arrivals and batching: no policy beats the bound."""
    k = min(k, experts)
    prompt = min(prompt, tokens - 1)
    overrides = ("ndp.min_units=1", f"ndp.units={units}", f"gpu.memory_gib={gpu}",
                 f"ndp.exclusive_host_access={'true' if exclusive else 'false'}",
                 f"link.pcie.copy_engines={engines}")  # fmt: skip
    config = ServingConfig(max_batch, budget, chunked_prefill=budget > 0 and seed % 2 == 0)
    _check(tmp_path, layers, experts, k, requests, tokens, prompt, seed, rate, overrides, config)


def test_single_request_at_batch_1_is_the_batch_1_bound(tmp_path):
    """One request served at batch 1: the same numbers as `optimum_bound`, to the bit."""
    module = _module(2, 8, 2)
    trace = _trace(2, 8, 2, 1, 12, 5, 4, 10.0)
    path = tmp_path / "one.npz"
    save_trace(trace, path)
    schedule, _, ctx, _ = _serve(module, trace, path, "paper", (), ServingConfig(max_batch=1))
    got = serving_bound(module, trace, ctx.target, ctx.cost, schedule.meta["serving"])
    want = optimum_bound(module, trace, ctx.target, ctx.cost)
    assert got.reduced
    assert got.makespan_s == want.bound_s and got.e2e_mean_s == want.bound_s
    assert got.ttft_mean_s == want.ttft_s and got.cold_start_s == want.cold_start_s


def test_hand_worked_serving_case():
    """docs/optimum.md §7: two requests of one decode token each through one Qwen3-sized MoE
    layer (top-1) with no GPU expert budget; the second arrives at 1 ms. Each iteration is the
    batch-1 hand case (dense ops + a prefetched expert run resident: 232.06 + 17.01 us), and the
    second cannot start before 1 ms: makespan >= 1 ms + 249.07 us, mean e2e and TTFT 249.07 us."""
    module = _module(1, 4, 1)
    trace = _trace(1, 4, 1, 2, 1, 0, 0, 1.0)
    trace = dataclasses.replace(trace, meta=dataclasses.replace(trace.meta, arrivals=(0.0, 1e-3)))
    ctx = make_context(TARGET, ("gpu.memory_gib=0.5",))
    one = optimum_bound(module, _trace(1, 4, 1, 1, 1, 0, 0, 1.0), ctx.target, ctx.cost)
    step = one.bound_s / (1 - 1e-6)  # the batch-1 hand case: fixed_s + the resident kernel
    eta = 0.70 + (np.log2(9445376) - 20) / 4 * 0.15
    assert step == pytest.approx(one.fixed_s + 5e-6 + 9445376 / (960e9 * eta), rel=1e-9)
    serving = {"requests": [[0, 0.0, 0, 1], [1, 1e-3, 0, 1]],
               "batches": [[0, 0, 1, 0, 0, [[0, 1, 0, 1]]], [1, 1, 2, 0, 0, [[1, 1, 1, 1]]]]}  # fmt: skip
    got = serving_bound(module, trace, ctx.target, ctx.cost, serving)
    assert not got.reduced and got.iterations == 2 and got.output_tokens == 2
    assert got.makespan_s == pytest.approx((1e-3 + step) * (1 - 1e-6), rel=1e-7)
    assert got.e2e_mean_s == pytest.approx(step * (1 - 1e-6), rel=1e-7)
    assert got.ttft_mean_s == pytest.approx(step * (1 - 1e-6), rel=1e-7)
