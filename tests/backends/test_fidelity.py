"""The fidelity hand cases: a copy spread over several DIMMs fills the host link, demand copies
come before prefetches, and on-demand Mixtral-8x7B decode runs at bytes / PCIe bandwidth."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sim_helpers import builder, checked, ideal_target

from ndpc.backends.schedule import OpKind
from ndpc.compiler.cli import main

GB = 1e9
G, T, P = OpKind.GPU_KERNEL, OpKind.TRANSFER, OpKind.PREFETCH


def test_shards_of_one_copy_go_in_parallel_up_to_the_link():
    # 4 units, each 5 GB/s host-visible, link 10 GB/s: 4 x 1 GB shards at 2.5 GB/s each -> 0.4 s
    t = ideal_target("ndp.host_bandwidth_gbps=5")
    b = builder(t)
    for u in range(4):
        b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB, unit=u)
    r = checked(b.build(), t)
    assert r.end.tolist() == pytest.approx([0.4] * 4)  # bytes / link bandwidth
    # one shard after another (the old model) is capped by each DIMM: 4 x 0.2 s
    t1 = ideal_target("ndp.host_bandwidth_gbps=5", "link.pcie.parallel_units=false")
    b = builder(t1)
    for u in range(4):
        b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB, unit=u)
    assert checked(b.build(), t1).e2e_s == pytest.approx(0.8)


def test_demand_copy_takes_the_bandwidth_before_a_prefetch():
    t = ideal_target()  # 4 slots per direction, 10 GB/s
    b = builder(t)
    b.add(P, b.resource("pcie.h2d"), link_bytes=1 * GB)  # prefetch, alone until 50 ms
    gate = b.add(G, b.resource("gpu"), mem_bytes=50 * GB)  # 50 ms
    b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB, deps=[gate])  # demand copy
    r = checked(b.build(), t)
    # the demand copy gets all 10 GB/s from 50 ms (ends at 150 ms); the prefetch moved 0.5 GB by
    # then and finishes alone at 200 ms. Fair sharing would have ended both at 150/200 reversed.
    assert r.end[2] == pytest.approx(0.15)
    assert r.end[0] == pytest.approx(0.2)


def test_demand_copy_is_admitted_before_queued_prefetches():
    t = ideal_target("ndp.units=2")  # 2 slots
    b = builder(t)
    gate = b.add(G, b.resource("gpu"), mem_bytes=1 * GB)  # 1 ms
    for _ in range(3):
        b.add(P, b.resource("pcie.h2d"), link_bytes=1 * GB)
    demand = b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB, deps=[gate])
    r = checked(b.build(), t)
    # two prefetches hold both slots until 0.2 s; then the demand copy is admitted first (the
    # third prefetch is older) and takes all the bandwidth; the third prefetch, admitted into the
    # other slot, gets nothing until the demand copy ends
    assert r.start[demand] == pytest.approx(0.2)
    assert r.end[demand] == pytest.approx(0.3)
    assert r.end[3] == pytest.approx(0.4)


def test_ondemand_mixtral_decode_runs_at_bytes_over_pcie_bandwidth(tmp_path):
    """Hand case: on-demand offloading copies both routed experts of all 32 layers per token
    (2 x 32 x 3 x 4096 x 14336 x 2 B = 22.55 GB) over PCIe 5.0 at 50 GB/s = 451 ms; the policy
    runs each expert after its copy, so the GPU's work adds to it (serial by definition)."""
    trace = tmp_path / "t.npz"
    runner = CliRunner()
    res = runner.invoke(main, ["trace", "gen", "--model", "mixtral-8x7b", "--tokens", "3",
                               "--prompt", "0", "--seed", "0", "-o", str(trace)])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["run", "mixtral-8x7b", "--target", "rtx5080-ndp", "--trace",
                               str(trace), "--policy", "ondemand", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)["result"]
    tokens = r["decode_tokens"]
    by_hand = 2 * 32 * 3 * 4096 * 14336 * 2 / 50e9
    link_per_token = r["busy_s"]["pcie.h2d"] / tokens
    assert link_per_token == pytest.approx(by_hand, rel=0.05)  # the floor: within 5%
    assert link_per_token == pytest.approx(by_hand, rel=0.005)  # in fact: set-up only
    gpu_per_token = r["busy_s"]["gpu"] / tokens
    assert r["tpot_mean_s"] == pytest.approx(by_hand + gpu_per_token, rel=0.005)


def test_partial_sum_read_pays_the_host_sync_broadcast_pays_the_dimm_cap():
    from ndpc.backends.schedule import Reason

    t = ideal_target("ndp.host_sync_us=100000", "link.pcie.setup_us=10000")  # 0.1 s, 10 ms
    b = builder(t)
    k = b.add(OpKind.NDP_KERNEL, b.resource("ndp0"), mem_bytes=1 * GB, unit=0)  # 10 ms
    # 0.5 GB written into unit 0 at min(link 10, DIMM host 50) GB/s
    b.add(T, b.resource("pcie.d2h"), link_bytes=0.5 * GB, unit=0, reason=Reason.BROADCAST)
    b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB, deps=[k], unit=0,
          reason=Reason.PARTIAL_SUM)  # fmt: skip
    r = checked(b.build(), t)
    assert r.end[1] == pytest.approx(0.01 + 0.05)  # set-up + bytes / bandwidth, no sync
    assert r.end[2] == pytest.approx(0.01 + 0.01 + 0.1 + 0.1)  # after the kernel: set-up + sync


def test_tp_broadcast_writes_each_unit_and_reads_each_partial(tmp_path):
    """Full TP over 4 DIMMs, one decode token of Mixtral: per layer 4 broadcast writes and 4
    partial-sum reads of d_model x 2 B = 8 KiB each (reduce on the GPU)."""
    trace = tmp_path / "t.npz"
    out = tmp_path / "s.ndps"
    runner = CliRunner()
    res = runner.invoke(main, ["trace", "gen", "--model", "mixtral-8x7b", "--tokens", "1",
                               "--prompt", "0", "--seed", "0", "-o", str(trace)])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["compile", "mixtral-8x7b", "--target", "rtx5080-ndp", "--trace",
                               str(trace), "-p", "tp-split{degree=4 reduce=gpu}", "-o",
                               str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    from ndpc.backends.schedule import Reason, load_schedule

    s = load_schedule(str(out))
    d2h, h2d = s.resources.index("pcie.d2h"), s.resources.index("pcie.h2d")
    bc = (s.reason == Reason.BROADCAST) & (s.resource == d2h)
    ps = (s.reason == Reason.PARTIAL_SUM) & (s.resource == h2d)
    assert bc.sum() == ps.sum() == 32 * 4
    assert sorted(set(s.unit[bc].tolist())) == [0, 1, 2, 3]
    assert set(s.link_bytes[bc].tolist()) == set(s.link_bytes[ps].tolist()) == {4096 * 2.0}


def test_quantize_pass_shrinks_expert_bytes_by_bits(tmp_path):
    trace = tmp_path / "t.npz"
    runner = CliRunner()
    res = runner.invoke(main, ["trace", "gen", "--model", "mixtral-8x7b", "--tokens", "1",
                               "--prompt", "0", "--seed", "0", "-o", str(trace)])  # fmt: skip
    assert res.exit_code == 0, res.output
    moved = {}
    for w in ("bf16", "i8", "i4"):
        res = runner.invoke(main, ["run", "mixtral-8x7b", "--target", "rtx5080-ndp", "--trace",
                                   str(trace), "-p", f"quantize{{weights={w}}},stripe,"
                                   "dispatch{rule=ondemand}", "--json"])  # fmt: skip
        assert res.exit_code == 0, res.output
        moved[w] = json.loads(res.output)["result"]["link_bytes"]["pcie.h2d"]
    assert moved["bf16"] == pytest.approx(2 * moved["i8"], rel=1e-3)
    assert moved["bf16"] == pytest.approx(4 * moved["i4"], rel=1e-3)
    res = runner.invoke(main, ["run", "mixtral-8x7b", "--target", "rtx5080-ndp", "--trace",
                               str(trace), "-p", "quantize{weights=i3},stripe"])  # fmt: skip
    assert res.exit_code == 1 and "i3" in res.output and "Traceback" not in res.output


def _compile(tmp_path, model: str, tokens: int, prompt: int, *args: str):
    from ndpc.backends.schedule import load_schedule

    trace, out = tmp_path / "t.npz", tmp_path / "s.ndps"
    runner = CliRunner()
    res = runner.invoke(main, ["trace", "gen", "--model", model, "--tokens", str(tokens),
                               "--prompt", str(prompt), "--seed", "0", "-o", str(trace)])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["compile", model, "--target", "rtx5080-ndp", "--trace",
                               str(trace), *args, "-o", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return load_schedule(str(out))


def test_warmup_copies_of_the_prefill_count_in_ttft(tmp_path):
    """The prefetch set the prompt selects is copied as part of the prefill step (TTFT waits for
    it), also the part that the deferring target queues past the last layer."""
    from ndpc.backends.cost import CostModel
    from ndpc.backends.schedule import Phase
    from ndpc.backends.simulator import simulate
    from ndpc.backends.target import load_target

    s = _compile(tmp_path, "qwen3-30b-a3b", 6, 4, "--policy", "paper")
    pf = s.kind == P
    warm = pf & (s.phase == Phase.PREFILL)
    assert warm.sum() > 0
    assert (s.token[warm] >= 0).all()  # tagged with the prefill step, none background
    assert s.meta["emit"]["warmup_flushed"] > 0  # queued copies issued at the step's end
    assert (s.token[pf & (s.phase == Phase.DECODE)] == -1).all()  # decode swaps: background
    target = load_target("rtx5080-ndp")
    r = simulate(s, target, CostModel(target))
    assert r.ttft_s >= r.end[warm].max() - 1e-12


def test_static_residency_is_loaded_untimed_and_its_copy_time_reported(tmp_path):
    calib = tmp_path / "calib.npz"
    res = CliRunner().invoke(main, ["trace", "gen", "--model", "mixtral-8x7b", "--tokens", "64",
                                    "--prompt", "32", "--seed", "1", "-o", str(calib)])  # fmt: skip
    assert res.exit_code == 0, res.output
    s = _compile(tmp_path, "mixtral-8x7b", 3, 2, "-p",
                 f"stripe,fiddler-profile{{calib={calib}}},dispatch{{rule=fiddler}}")  # fmt: skip
    emit = s.meta["emit"]
    resident = emit["static_resident_bytes"]
    assert resident > 0 and resident % (3 * 4096 * 14336 * 2) == 0  # whole Mixtral experts
    # striped over 4 DIMMs, each expert's shards fill PCIe 5.0 (50 GB/s) plus a set-up per expert
    experts = resident // (3 * 4096 * 14336 * 2)
    assert emit["static_load_s"] == pytest.approx(resident / 50e9 + experts * 8e-6, rel=1e-6)
    assert not (s.kind == P).any()  # nothing copied for it in the schedule
    res = CliRunner().invoke(main, ["run", "mixtral-8x7b", "--target", "rtx5080-ndp", "--trace",
                                    str(tmp_path / "t.npz"), "-p",
                                    f"stripe,fiddler-profile{{calib={calib}}},dispatch{{rule=fiddler}}"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"static residency {resident / 1e9:.3f} GB" in res.output and "not timed" in res.output
