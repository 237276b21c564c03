"""The energy model (backends/energy.py): hand arithmetic on a small schedule, targets without it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ndpc.backends.energy import ENERGY_KEYS, has_energy_model
from ndpc.backends.report import report_text
from ndpc.backends.schedule import OpKind, Phase, ScheduleBuilder
from ndpc.backends.simulator import simulate
from ndpc.backends.target import list_targets, load_target, resource_names

PJ = 1e-12


def _schedule(target):
    b = ScheduleBuilder(resource_names(target))
    gpu, ndp0, h2d, link = (b.resource(n) for n in ("gpu", "ndp0", "pcie.h2d", "ndplink"))
    a = b.add(OpKind.GPU_KERNEL, gpu, flops=2e9, mem_bytes=1e8, phase=Phase.PREFILL, token=0)
    c = b.add(OpKind.NDP_KERNEL, ndp0, flops=3e9, mem_bytes=4e8, deps=[a], token=1, unit=0)
    d = b.add(OpKind.TRANSFER, h2d, link_bytes=5e7, deps=[c], token=1, unit=0)  # from a DIMM
    e = b.add(OpKind.TRANSFER, h2d, link_bytes=2e6, deps=[d], token=1)  # from host DRAM
    b.add(OpKind.TRANSFER, link, link_bytes=1e6, deps=[e], token=1)
    return b.build()


def test_energy_matches_hand_arithmetic():
    t = load_target("rtx5080-ndp")
    v = t.values
    r = simulate(_schedule(t), t)
    e = r.energy
    pcie = v["link.pcie.pj_per_byte"] + v["gpu.mem_pj_per_byte"]
    want = {
        "gpu_j": (2e9 * v["gpu.pj_per_flop"] + 1e8 * v["gpu.mem_pj_per_byte"]) * PJ,
        "ndp_j": (3e9 * v["ndp.pj_per_flop"] + 4e8 * v["ndp.internal_pj_per_byte"]) * PJ,
        "pcie_j": (
            5e7 * (pcie + v["ndp.host_pj_per_byte"]) + 2e6 * (pcie + v["host.dram_pj_per_byte"])
        )
        * PJ,  # fmt: skip
        "ndplink_j": 1e6 * v["link.ndp.pj_per_byte"] * PJ,
        "cpu_j": 0.0,
    }
    for key, value in want.items():
        assert e["breakdown_j"][key] == pytest.approx(value, rel=1e-12), key
    static = (v["gpu.static_w"] + v["host.static_w"] + t.ndp_units * v["ndp.static_w"]) * r.e2e_s
    assert e["static_j"] == pytest.approx(static, rel=1e-12)
    assert e["energy_j"] == pytest.approx(sum(want.values()) + static, rel=1e-12)
    assert e["tokens"] == 1  # one decode token
    assert e["energy_per_token_j"] == pytest.approx(e["energy_j"])
    assert e["tokens_per_j"] == pytest.approx(1 / e["energy_j"])
    assert "J/token" in report_text(r)


def test_more_units_cost_more_static_power():
    one = simulate(_schedule(load_target("rtx5080-ndp")), load_target("rtx5080-ndp"))
    six_t = load_target("rtx5080-ndp", ["ndp.units=6"])
    six = simulate(_schedule(six_t), six_t)
    assert six.energy["static_power_w"] - one.energy["static_power_w"] == pytest.approx(
        2 * six_t["ndp.static_w"]
    )


@pytest.mark.parametrize("name", list_targets())
def test_shipped_targets_have_sourced_energy_keys(name):
    t = load_target(name)
    assert has_energy_model(t)
    for key in ENERGY_KEYS:
        assert t.sources[key].startswith(("source: http", "assumed: ")), key


def test_target_without_energy_keys_reports_none(tmp_path: Path):
    text = (Path(load_target("rtx5080-ndp").path)).read_text()
    stripped = "\n".join(line for line in text.splitlines()
                         if not re.match(r"(pj_per_flop|\w*pj_per_byte|static_w) =", line))  # fmt: skip
    path = tmp_path / "no-energy.toml"
    path.write_text(stripped)
    t = load_target(str(path))
    assert not has_energy_model(t)
    r = simulate(_schedule(t), t)
    assert r.energy is None
    assert "J/token" not in report_text(r)


def test_power_track_integrates_to_the_dynamic_energy():
    import numpy as np

    from ndpc.backends.energy import power_track
    from ndpc.backends.timeline import build_trace

    t = load_target("rtx5080-ndp")
    s = _schedule(t)
    r = simulate(s, t)
    edges, watts = power_track(s, t, r.start, r.end, bins=7)
    assert float(np.sum(watts * np.diff(edges))) == pytest.approx(r.energy["dynamic_j"], rel=1e-9)
    counters = [
        e for e in build_trace(s, r.start, r.end, target=t)["traceEvents"] if e["ph"] == "C"
    ]
    assert len(counters) == 2001 and counters[0]["args"]["static"] == r.energy["static_power_w"]
    assert not [e for e in build_trace(s, r.start, r.end)["traceEvents"] if e["ph"] == "C"]
