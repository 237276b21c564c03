"""The cost model: closed-form kernel and transfer times, efficiency tables, vector == scalar."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sim_helpers import builder, ideal_target

from ndpc.backends.cost import CostModel, _interp
from ndpc.backends.schedule import OpKind
from ndpc.backends.target import EffTable, load_target


def test_roofline_in_closed_form():
    cost = CostModel(ideal_target())
    assert cost.gpu_time(0, 1e9) == pytest.approx(1e-3)  # 1 GB at 1000 GB/s
    assert cost.gpu_time(2e12, 1e9) == pytest.approx(2e-3)  # compute-bound: 2 TFLOP at 1000 TFLOP/s
    assert cost.ndp_time(1e6, 1e9) == pytest.approx(1e-2)  # 1 GB at 100 GB/s
    assert cost.link_time("pcie.h2d", 1e9) == pytest.approx(0.1)
    assert cost.link_time("pcie.h2d", 1e9, unit=0) == pytest.approx(0.1)  # min(10, 50) GB/s
    assert cost.link_time("ndplink", 1e9) == pytest.approx(0.05)
    assert cost.op_time(OpKind.SYNC, "gpu", 1e9, 1e9, 0) == 0.0


def test_overheads_and_efficiency_add_up():
    t = ideal_target(
        "gpu.launch_us=5",
        "gpu.mem_efficiency=0.5",
        "link.pcie.setup_us=8",
        "link.pcie.h2d_gbps=100",
    )
    cost = CostModel(t)
    assert cost.gpu_time(0, 1e9) == pytest.approx(5e-6 + 2e-3)
    assert cost.link_time("pcie.h2d", 1e9) == pytest.approx(8e-6 + 1e-2)
    assert cost.link_time("pcie.h2d", 1e9, unit=2) == pytest.approx(
        8e-6 + 2e-2
    )  # capped at 50 GB/s


def test_interpolation_is_log_linear_and_clamped():
    table = EffTable((1024.0, 4096.0), (0.2, 0.6))
    assert _interp(table, 10) == 0.2
    assert _interp(table, 1e9) == 0.6
    assert _interp(table, 2048) == pytest.approx(0.4)


def test_compute_efficiency_keyed_by_intensity_matches_shape():
    cost = CostModel(load_target("rtx5080-ndp"))
    m, n, k = 128, 768, 2048
    flops, nbytes = 2.0 * m * n * k, 2.0 * n * k
    assert cost.gpu_time(flops, nbytes) == cost.gpu_time(flops, nbytes, shape=(m, n, k))
    # decode (intensity ~1) is memory-bound, prefill (intensity 512) is slower per byte than memory
    assert cost.gpu_time(2.0 * n * k, nbytes) == pytest.approx(cost.gpu_time(0.0, nbytes))


def test_vectorised_times_match_scalar():
    t = load_target("rtx5080-ndp")
    cost = CostModel(t)
    b = builder(t)
    rng = np.random.default_rng(0)
    expected = []
    for _ in range(200):
        name = rng.choice(["gpu", "cpu", "ndp1", "pcie.h2d", "pcie.d2h", "ndplink"])
        flops, mem, link = (float(x) for x in 10 ** rng.uniform(2, 10, size=3))
        unit = int(rng.integers(-1, 4))
        kind = OpKind.TRANSFER if "." in name or name == "ndplink" else OpKind.GPU_KERNEL
        b.add(kind, b.resource(name), flops=flops, mem_bytes=mem, link_bytes=link, unit=unit)
        expected.append(cost.op_time(kind, name, flops, mem, link, unit))
    got = cost.op_times(b.build())
    assert np.allclose(got, expected, rtol=1e-12, atol=0)


def test_minimum_never_exceeds_modelled_time():
    t = load_target("rtx5080-ndp")
    cost = CostModel(t)
    b = builder(t)
    for mem in (0.0, 1.0, 4096.0, 1e6, 1e9):
        for r in ("gpu", "cpu", "ndp0", "pcie.h2d"):
            kind = OpKind.TRANSFER if r.startswith("pcie") else OpKind.GPU_KERNEL
            b.add(kind, b.resource(r), flops=mem * 3, mem_bytes=mem, link_bytes=mem)
    s = b.build()
    assert np.all(cost.min_times(s) <= cost.op_times(s))
    assert math.isclose(float(cost.min_times(s)[-1]), 1e9 / 50e9)  # peak pcie.h2d, no set-up
