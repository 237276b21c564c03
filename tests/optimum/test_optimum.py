"""The problem-level lower bound (backends/optimum.py, docs/optimum.md).

If any policy's simulated time beats the bound, the bound is wrong: every test here compares it
with real schedules, on small random problems, an exhaustive search and a case worked by hand.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndpc.backends import emit as emit_mod
from ndpc.backends.optimum import optimum_bound
from ndpc.backends.policies.base import DispatchPolicy, LayerDecision, Where
from ndpc.backends.simulator import simulate
from ndpc.compiler.experiments.runner import Case, pipeline_for
from ndpc.compiler.passes.pipeline import make_context, parse_pipeline
from ndpc.ir.builder import synthetic_module
from ndpc.ir.ops import ResidentOp
from ndpc.traces.format import save_trace
from ndpc.traces.generate import generate_trace

TARGET = "rtx5080-ndp"
SLACK = 1e-9
POLICIES = ("monde", "monde-lb", "ondemand", "lru", "fiddler", "duplex", "ctxaware", "eplb", "ep",
            "tp", "tp-lb", "paper", "ndpc", "oracle-cache", "oracle-profile", "oracle-opt")  # fmt: skip
# a 0.6 GiB GPU leaves ~10 Qwen3-sized experts of budget: the memory coupling matters
SMALL_GPU = "gpu.memory_gib=0.6"


def _module(layers=1, experts=4, k=2):
    return synthetic_module(layers, experts, k=k, d_model=2048, d_ff=768, name="small")


def _run_policy(module, trace, trace_path, policy, overrides):
    text, _ = pipeline_for(Case("small", TARGET, str(trace_path), policy, overrides,
                                calib=str(trace_path)))  # fmt: skip
    ctx = make_context(TARGET, overrides)
    for p in parse_pipeline(text):
        module = p.run(module, ctx)
    schedule = emit_mod.emit_schedule(module, trace, ctx.target, ctx.cost)
    result = simulate(schedule, ctx.target, ctx.cost)
    result.starts_cold = not any(e for op in module.ops_of(ResidentOp) for e in op.experts)
    return result


def _bound(module, trace, overrides):
    ctx = make_context(TARGET, overrides)
    return optimum_bound(module, trace, ctx.target, ctx.cost), ctx


def _check_all(tmp_path, layers, experts, k, tokens, prompt, seed, overrides, policies=POLICIES):
    module = _module(layers, experts, k)
    trace = generate_trace(layers, experts, k, tokens, prompt, seed)
    path = tmp_path / f"t{seed}.npz"
    save_trace(trace, path)
    bound, ctx = _bound(module, trace, overrides)
    # never vacuous: at least each step's expert bytes over every memory's bandwidth together
    roof = _roofline(module, trace, ctx)
    assert bound.bound_s >= roof * (1 - SLACK)
    assert bound.cold_start_s >= bound.bound_s
    out = {}
    for policy in policies:
        if policy == "fiddler" and prompt == 0:
            continue
        r = _run_policy(module, trace, path, policy, overrides)
        assert r.e2e_s >= bound.bound_s * (1 - SLACK), (policy, r.e2e_s, bound.bound_s)
        if r.starts_cold:  # no static residency: the cold-start bound holds too
            cold = bound.cold_start_s
            assert r.e2e_s >= cold * (1 - SLACK), (policy, r.e2e_s, cold)
        if prompt:
            assert r.ttft_s >= bound.ttft_s * (1 - SLACK), (policy, r.ttft_s, bound.ttft_s)
        decode = r.e2e_s - r.ttft_s * r.requests
        assert decode >= bound.decode_s * (1 - SLACK) - 1e-12, (policy, decode, bound.decode_s)
        out[policy] = r.e2e_s
    return bound, out


def _roofline(module, trace, ctx) -> float:
    """Sum over steps of the activated experts' bytes / (VRAM + every DIMM + host DRAM)."""
    from ndpc.backends.emit import iter_steps

    w = next(op.ffn.weight_bytes for op in module.walk() if hasattr(op, "ffn"))
    total = 0.0
    for _, _, token, tokens in iter_steps(trace):
        rows = trace.experts[token : token + tokens]
        active = sum(len(np.unique(rows[:, layer, :])) for layer in range(rows.shape[1]))
        total += ctx.cost.memory_floor(active * w)
    return total


@pytest.mark.parametrize(
    ("layers", "experts", "k", "tokens", "prompt", "seed", "overrides"),
    [
        (1, 4, 2, 6, 3, 0, (SMALL_GPU,)),
        (2, 8, 2, 8, 4, 1, (SMALL_GPU, "ndp.units=2")),
        pytest.param(
            1,
            8,
            1,
            6,
            0,
            2,
            (SMALL_GPU, "ndp.exclusive_host_access=false", "ndp.units=3"),
            marks=pytest.mark.slow,
        ),
        pytest.param(2, 4, 2, 5, 2, 3, ("ndp.min_units=1", "ndp.units=1"), marks=pytest.mark.slow),
    ],
)
def test_no_policy_beats_the_bound(tmp_path, layers, experts, k, tokens, prompt, seed, overrides):
    bound, times = _check_all(tmp_path, layers, experts, k, tokens, prompt, seed, overrides)
    assert bound.bound_s > bound.fixed_s > 0  # expert work adds to the fixed part
    assert times  # policies ran


@pytest.mark.slow
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    layers=st.integers(1, 2),
    experts=st.integers(2, 8),
    k=st.integers(1, 2),
    tokens=st.integers(2, 8),
    prompt=st.integers(0, 4),
    seed=st.integers(0, 1000),
    units=st.integers(1, 4),
    gpu=st.sampled_from(["0.55", "0.6", "0.7", "16"]),
    exclusive=st.booleans(),
    engines=st.integers(1, 2),
)
def test_bound_property(tmp_path, layers, experts, k, tokens, prompt, seed, units, gpu, exclusive,
                        engines):  # fmt: skip
    """Random small models, targets and traces: no policy beats the bound, the bound is at
    least the trivial roofline."""
    k = min(k, experts)
    prompt = min(prompt, tokens - 1)
    overrides = ("ndp.min_units=1", f"ndp.units={units}", f"gpu.memory_gib={gpu}",
                 f"ndp.exclusive_host_access={'true' if exclusive else 'false'}",
                 f"link.pcie.copy_engines={engines}")  # fmt: skip
    _check_all(tmp_path, layers, experts, k, tokens, prompt, seed, overrides)


class _Replay(DispatchPolicy):
    """Plays a fixed list of placements, one per (step, layer) in order (exhaustive search)."""

    NAME = "replay"
    plan: list = []

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.i = 0

    def dispatch(self, view):
        where = list(type(self).plan[self.i])
        self.i += 1
        for j, e in enumerate(view.experts.tolist()):
            if where[j] == Where.GPU_FETCH and view.resident[e]:
                where[j] = Where.GPU_RESIDENT
        return LayerDecision(where=np.array(where, dtype=np.uint8))


@pytest.mark.parametrize(("experts", "units"), [(2, 1), pytest.param(3, 2, marks=pytest.mark.slow)])
def test_exhaustive_tiny(tmp_path, monkeypatch, experts, units):
    """2-3 experts, 1-2 units, 3 steps: every static residency x every per-step placement.
    bound <= the best of them (an upper bound on the optimum) <= oracle-opt."""
    from ndpc.ir.ops import ResidentOp

    if True:
        module = _module(1, experts, 1)
        overrides = ("ndp.min_units=1", f"ndp.units={units}", f"gpu.memory_gib={_one_slot(module)}")
        trace = generate_trace(1, experts, 1, 3, 1, 5)
        path = tmp_path / f"x{experts}.npz"
        save_trace(trace, path)
        bound, ctx = _bound(module, trace, overrides)
        slots = bound.budget_bytes // next(op.ffn.weight_bytes for op in module.walk()
                                           if hasattr(op, "ffn"))  # fmt: skip
        assert slots == 1
        compiled = module
        for p in parse_pipeline(f"tp-split{{degree={units}}}"):
            compiled = p.run(compiled, ctx)
        monkeypatch.setattr(emit_mod, "policy_class", lambda rule: _Replay)
        best = np.inf
        choices = (Where.GPU_FETCH, Where.NDP, Where.CPU)
        for resident in [(), *((e,) for e in range(experts))]:
            mod = compiled
            if resident:
                import dataclasses

                mod = dataclasses.replace(compiled, decls=(*compiled.decls,
                                          ResidentOp(layer=0, experts=resident)))  # fmt: skip
            for plan in itertools.product(*[[(c,) for c in choices]] * 3):
                _Replay.plan = plan
                sched = emit_mod.emit_schedule(mod, trace, ctx.target, ctx.cost)
                best = min(best, simulate(sched, ctx.target, ctx.cost).e2e_s)
        monkeypatch.undo()
        opt = _run_policy(module, trace, path, "oracle-opt", overrides).e2e_s
        assert bound.bound_s * (1 - SLACK) <= best <= opt * (1 + SLACK), (bound.bound_s, best, opt)


def _one_slot(module) -> float:
    """GPU memory (GiB) whose expert budget holds one and a half experts."""
    from ndpc.backends.emit import DEFAULT_CONTEXT
    from ndpc.backends.emit_dense import dense_weight_bytes, kv_cache_bytes

    w = next(op.ffn.weight_bytes for op in module.walk() if hasattr(op, "ffn"))
    need = (512 << 20) + dense_weight_bytes(module) + kv_cache_bytes(module, DEFAULT_CONTEXT)
    return (need + 1.5 * w) / (1 << 30)


def test_hand_worked_window():
    """docs/optimum.md §6: one decode token through one Qwen3-sized MoE layer (top-1) on
    rtx5080-ndp with no GPU expert budget. The step (dense ops 232.06 us + window) lasts longer
    than the expert's bytes take over the host link (245.76 us at the DIMM's 38.4 GB/s), so the
    LP prefetches it during the dense ops and runs it resident: the expert window
    is one GPU kernel, 5 us + 9,445,376 B / (960 GB/s x 0.8189) = 17.01 us. Without that
    prefetch the cheapest option would be NDP: 8.08 + 8.11 + 36.25 = 52.44 us."""
    module = _module(1, 4, 1)
    trace = generate_trace(1, 4, 1, 1, 0, 0)
    bound, ctx = _bound(module, trace, ("gpu.memory_gib=0.5",))
    assert bound.budget_bytes == 0
    eta = 0.70 + (np.log2(9445376) - 20) / 4 * 0.15  # VRAM efficiency between 1 and 16 MiB
    gpu = 5e-6 + 9445376 / (960e9 * eta)
    copy = 9437184 / 38.4e9  # the expert's bytes at the DIMM's host bandwidth: 245.76 us
    assert bound.fixed_s + gpu >= copy  # the prefetch fits in the step (232.06 + 17.01 us)
    assert gpu == pytest.approx(17.01e-6, abs=0.01e-6)
    assert bound.bound_s == pytest.approx((bound.fixed_s + gpu) * (1 - 1e-6), rel=1e-9)
    ndp = (8e-6 + 4096 / 52e9) + (8e-6 + 4096 / 38.4e9) + 2e-6 + 2367488 / (76.8e9 * 0.9)
    assert ndp == pytest.approx(52.44e-6, abs=0.01e-6)


def test_same_bound_for_every_policy_and_oracle_opt_is_feasible(tmp_path):
    """The bound is the problem's: policies cannot change it; oracle-opt runs above it."""
    _, times = _check_all(tmp_path, 2, 8, 2, 8, 4, 7, (SMALL_GPU,), ("paper", "oracle-opt"))
    assert times["oracle-opt"] > 0
