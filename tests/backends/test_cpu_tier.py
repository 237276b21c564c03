"""The host CPU as a compute tier with a matrix engine (`host.amx_*`): hand-computed expert times
at 1 token (memory-bound on host DRAM) and many tokens (AMX-bound), the engine choice, targets
without AMX unchanged, the TriMoE target, and bad AMX keys refused with one message."""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import builder

from ndpc.backends.cost import CostModel
from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.schedule import OpKind
from ndpc.backends.target import load_target, parse_target
from ndpc.compiler.commands.target import target_toml
from ndpc.ir.attrs import Activation, FfnAttr
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.types import DType

TRIMOE = "trimoe-h100-spr"
# Qwen3-235B-A22B's routed expert: SwiGLU, 3 matrices of 4096 x 1536 in BF16
D, F = 4096, 1536
W = 3 * D * F * 2  # 37,748,736 weight bytes
FPT = 2 * 3 * D * F  # 37,748,736 FLOP per token


def qwen3_expert() -> FfnAttr:
    return FfnAttr(D, F, Activation.SWIGLU, False, DType.BF16)


def test_expert_shape_is_what_the_hand_numbers_assume():
    ffn = qwen3_expert()
    assert (ffn.weight_bytes, ffn.flops_per_token()) == (W, FPT)


def test_one_token_is_memory_bound_on_host_dram():
    times = ExpertTimes(qwen3_expert(), CostModel(load_target(TRIMOE)), 2)
    mem = W + 2 * D * 2  # weights + the token's input and output, BF16
    # 37.8 MB > the table's last key (16 MiB): 0.80 of 8 x DDR5-4400 x 8 B = 281.6 GB/s
    t_mem = mem / (281.6e9 * 0.80)  # 167.6 us
    # compute: AVX-512 at intensity ~1 is 0.30 x 14.336 TFLOP/s = 8.8 us, far under memory
    assert t_mem / 10 > FPT / (14336e9 * 0.30)
    assert times.cpu(1) == pytest.approx(20e-6 + t_mem, rel=1e-12)


def test_many_tokens_are_compute_bound_on_amx():
    times = ExpertTimes(qwen3_expert(), CostModel(load_target(TRIMOE)), 2)
    n = 512
    flops, mem = n * FPT, W + 2 * n * D * 2
    # intensity ~419 FLOP/B: AMX at its 0.19 cap of 114.7 TFLOP/s (887 us) beats AVX-512
    # (0.5 + 0.2 x log2(419/64)/4 = 0.636 of 14.336 TFLOP/s: 2.1 ms) and memory (205 us)
    t_amx = flops / (114.7e12 * 0.19)
    assert t_amx > mem / (281.6e9 * 0.80)
    assert times.cpu(n) == pytest.approx(20e-6 + t_amx, rel=1e-12)


def test_few_tokens_cost_what_one_token_costs():
    """GEMV up to a few tokens: the weights' read binds, with or without a matrix engine."""
    for c in (CostModel(load_target(TRIMOE)), CostModel(load_target("rtx5080-ndp"))):
        t1, t4 = (c.cpu_time(n * FPT, W + 4 * n * D) for n in (1, 4))
        assert t4 == pytest.approx(t1, rel=2e-3)  # only the 3 extra activations differ


def test_compute_uses_the_faster_engine_at_each_intensity():
    target = load_target(TRIMOE)
    cost = CostModel(target)
    vector_only = CostModel(target.with_overrides(["host.amx_bf16_tflops=1e-3"]))
    for n in (1, 8, 16, 64, 1024):
        flops, mem = n * FPT, W + 4 * n * D
        assert cost.cpu_time(flops, mem) <= vector_only.cpu_time(flops, mem)
    # at intensity 1024: AMX 0.19 x 114.7 = 21.8 TFLOP/s, AVX-512 0.70 x 14.3 = 10.0 TFLOP/s
    ratio = vector_only.cpu_time(1024 * FPT, W) / cost.cpu_time(1024 * FPT, W)
    assert ratio == pytest.approx(
        (1024 * FPT / 10.0352e12 + 20e-6) / (1024 * FPT / 21.793e12 + 20e-6)
    )


@pytest.mark.parametrize("name", ["rtx5080-ndp", "fiddler-l4", "fiddler-rtx6000"])
def test_targets_without_amx_price_the_cpu_as_before(name):
    """No host.amx_* keys: the vector-units roofline, exactly."""
    v = load_target(name).values
    assert "host.amx_bf16_tflops" not in v
    cost = CostModel(load_target(name))
    eta_m, eta_c = v["host.mem_efficiency"].fractions[-1], v["host.compute_efficiency"]
    flops, mem = 3e9, 64e6  # intensity ~47: between the first two compute keys
    frac = eta_c.fractions[0] + (np.log2(flops / mem) - np.log2(eta_c.keys[0])) / (
        np.log2(eta_c.keys[1]) - np.log2(eta_c.keys[0])
    ) * (eta_c.fractions[1] - eta_c.fractions[0])
    want = v["host.cpu_launch_us"] * 1e-6 + max(
        flops / (v["host.cpu_gflops"] * 1e9 * frac),
        mem / (v["host.dram_bandwidth_gbps"] * 1e9 * eta_m),
    )
    assert cost.cpu_time(flops, mem) == pytest.approx(want, rel=1e-12)


def test_vectorised_cpu_times_match_scalar_and_minimum_uses_amx_peak():
    t = load_target(TRIMOE)
    cost = CostModel(t)
    b = builder(t)
    rng = np.random.default_rng(1)
    expected = []
    for _ in range(100):
        flops, mem = (float(x) for x in 10 ** rng.uniform(3, 11, size=2))
        b.add(OpKind.GPU_KERNEL, b.resource("cpu"), flops=flops, mem_bytes=mem)
        expected.append(cost.op_time(OpKind.GPU_KERNEL, "cpu", flops, mem))
    b.add(OpKind.GPU_KERNEL, b.resource("cpu"), flops=1e12, mem_bytes=0.0)
    expected.append(cost.cpu_time(1e12, 0.0))
    s = b.build()
    assert np.allclose(cost.op_times(s), expected, rtol=1e-12, atol=0)
    assert np.all(cost.min_times(s) <= cost.op_times(s))
    assert cost.min_times(s)[-1] == pytest.approx(1e12 / 114.7e12)


def test_trimoe_target_has_sixteen_units_and_every_value_sourced():
    t = load_target(TRIMOE)
    assert t.ndp_units == 16 and t.values["ndp.max_units"] >= 16
    assert t.values["host.amx_bf16_tflops"] == pytest.approx(1024 * 56 * 2.0e9 / 1e12, rel=1e-3)
    assert all(s.startswith(("source: ", "assumed: ")) for s in t.sources.values())
    # the dump round-trips, AMX keys included
    again = parse_target(target_toml(t), "dump.toml")
    assert again.values == t.values


def test_amx_peak_without_its_table_is_refused_with_one_message():
    with pytest.raises(NdpcError, match=r"missing key 'host.amx_compute_efficiency'") as err:
        load_target("rtx5080-ndp", ["host.amx_bf16_tflops=100"])
    assert "--set" in str(err.value)
    text = target_toml(load_target(TRIMOE))
    cut = "\n".join(ln for ln in text.splitlines() if not ln.startswith("amx_bf16_tflops"))
    with pytest.raises(NdpcError, match=r"missing key 'host.amx_bf16_tflops'"):
        parse_target(cut, "cut.toml")
