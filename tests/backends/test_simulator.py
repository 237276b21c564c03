"""The replay engines against closed-form timings; fast == exact; shared links; determinism."""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import builder, checked, ideal_target

from ndpc.backends.check import check_timeline
from ndpc.backends.report import report_json
from ndpc.backends.schedule import OpKind, Phase, Reason
from ndpc.backends.simulator import replay, simulate
from ndpc.backends.simulator.synthetic import moe_schedule
from ndpc.backends.target import load_target
from ndpc.ir.diagnostics import NdpcError

GB = 1e9
G, N, T, S = OpKind.GPU_KERNEL, OpKind.NDP_KERNEL, OpKind.TRANSFER, OpKind.SYNC


def test_serial_chain_sums():
    t = ideal_target()
    b = builder(t)
    gpu = b.resource("gpu")
    a = b.add(G, gpu, mem_bytes=1 * GB)  # 1 ms at 1000 GB/s
    c = b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB, deps=[a])  # 100 ms at 10 GB/s
    b.add(N, b.resource("ndp2"), mem_bytes=1 * GB, deps=[c])  # 10 ms at 100 GB/s
    r = checked(b.build(), t)
    assert r.start.tolist() == pytest.approx([0, 1e-3, 0.101])
    assert r.e2e_s == pytest.approx(0.111)
    assert r.bound_s == pytest.approx(0.111)  # critical path: nothing can overlap
    assert r.efficiency == pytest.approx(1.0)


def test_one_resource_runs_its_ops_in_order_fifo():
    t = ideal_target()
    b = builder(t)
    slow = b.add(N, b.resource("ndp0"), mem_bytes=1 * GB)  # 10 ms
    b.add(G, b.resource("gpu"), mem_bytes=1 * GB, deps=[slow])  # waits for the NDP op
    b.add(G, b.resource("gpu"), mem_bytes=1 * GB)  # ready at 0 but queued behind its predecessor
    r = checked(b.build(), t)
    assert r.start.tolist() == pytest.approx([0, 0.010, 0.011])
    assert r.e2e_s == pytest.approx(0.012)


def test_fork_join_and_ndp_units_in_parallel():
    t = ideal_target()
    b = builder(t)
    head = b.add(G, b.resource("gpu"), mem_bytes=1 * GB)
    shards = [
        b.add(N, b.resource(f"ndp{u}"), mem_bytes=1 * GB, deps=[head], unit=u) for u in range(4)
    ]
    join = b.add(S, b.resource("gpu"), deps=shards)
    b.add(G, b.resource("gpu"), mem_bytes=1 * GB, deps=[join])
    r = checked(b.build(), t)
    assert r.e2e_s == pytest.approx(0.001 + 0.010 + 0.001)
    assert r.end[join] == pytest.approx(0.011) and r.end[join] == r.start[join]
    assert r.ndp_busy_s == pytest.approx([0.010] * 4) and r.ndp_busy_std == pytest.approx(0.0)
    # the same four shards on one unit take four times as long
    b = builder(t)
    for _ in range(4):
        b.add(N, b.resource("ndp1"), mem_bytes=1 * GB, unit=1)
    r = checked(b.build(), t)
    assert r.e2e_s == pytest.approx(0.040)
    assert r.ndp_busy_std == pytest.approx(np.std([0, 1, 0, 0]))


def shared_link(*extra):
    """Two slots on each host-link direction: one copy engine x 2 NDP units."""
    return ideal_target("link.pcie.copy_engines=1", "ndp.units=2", *extra)


def test_two_equal_flows_share_a_link_fairly():
    t = shared_link()
    b = builder(t)
    b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB)
    b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB)
    r = checked(b.build(), t)
    assert r.engine == "exact"
    assert r.end.tolist() == pytest.approx([0.2, 0.2])  # 5 GB/s each, then both done
    assert r.busy["pcie.h2d"] == pytest.approx(1.0)


def test_unequal_flows_rates_recomputed_when_one_ends():
    t = shared_link()
    b = builder(t)
    b.add(T, b.resource("pcie.h2d"), link_bytes=0.5 * GB)
    b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB)
    r = checked(b.build(), t)
    # both at 5 GB/s until the small one ends at 0.1 s; the big one then has 0.5 GB left at 10 GB/s
    assert r.end.tolist() == pytest.approx([0.1, 0.15])


def test_late_flow_joins_then_gets_full_rate():
    t = shared_link()
    b = builder(t)
    b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB)
    gate = b.add(G, b.resource("gpu"), mem_bytes=50 * GB)  # 50 ms
    b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB, deps=[gate])
    r = checked(b.build(), t)
    # flow 1 alone moves 0.5 GB by 50 ms; then 5 GB/s each: flow 1 ends at 150 ms, flow 2 has 0.5 GB
    # left and finishes alone at 200 ms
    assert r.end[[0, 2]].tolist() == pytest.approx([0.15, 0.2])


def test_slots_limit_concurrent_flows_fifo():
    t = shared_link()
    b = builder(t)
    for _ in range(3):
        b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB)
    r = checked(b.build(), t)
    assert r.start.tolist() == pytest.approx([0, 0, 0.2])
    assert r.end.tolist() == pytest.approx([0.2, 0.2, 0.3])


def test_max_min_fairness_with_a_capped_flow():
    t = shared_link("link.pcie.h2d_gbps=100", "ndp.host_bandwidth_gbps=20")
    b = builder(t)
    b.add(T, b.resource("pcie.h2d"), link_bytes=2 * GB, unit=0)  # capped at 20 GB/s by the DIMM
    b.add(T, b.resource("pcie.h2d"), link_bytes=8 * GB)  # gets the other 80 GB/s
    r = checked(b.build(), t)
    assert r.end.tolist() == pytest.approx([0.1, 0.1])


def test_setup_latency_does_not_use_bandwidth():
    t = shared_link("link.pcie.setup_us=100000")  # 0.1 s set-up
    b = builder(t)
    b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB)
    gate = b.add(G, b.resource("gpu"), mem_bytes=150 * GB)  # 0.15 s
    b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB, deps=[gate])
    r = checked(b.build(), t)
    # flow 1: set-up to 0.1, alone at 10 GB/s until 0.25 (flow 2's data starts at 0.25) -> done 0.2
    assert r.end[0] == pytest.approx(0.2)
    assert r.end[2] == pytest.approx(0.15 + 0.1 + 0.1)


def test_exclusive_host_access_waits_for_ndp_compute():
    for exclusive, expected in (("true", 0.01 + 0.1), ("false", 0.1)):
        t = ideal_target(f"ndp.exclusive_host_access={exclusive}")
        b = builder(t)
        b.add(N, b.resource("ndp0"), mem_bytes=1 * GB, unit=0)  # 10 ms on unit 0
        b.add(T, b.resource("pcie.h2d"), link_bytes=1 * GB, unit=0)  # reads unit 0's memory
        b.add(T, b.resource("pcie.d2h"), link_bytes=1 * GB, unit=1)  # other unit: never blocked
        r = checked(b.build(), t)
        assert r.end[1] == pytest.approx(expected)
        assert r.end[2] == pytest.approx(0.1)


def random_schedule(t, seed, n=300, shared=False):
    rng = np.random.default_rng(seed)
    b = builder(t)
    names = ["gpu", "cpu", "ndp0", "ndp1", "ndp2", "ndp3", "pcie.h2d", "pcie.d2h", "ndplink"]
    for i in range(n):
        name = names[rng.integers(len(names))]
        deps = sorted(set(rng.integers(0, i, size=rng.integers(0, 4)).tolist())) if i else []
        if rng.random() < 0.05:
            b.add(S, b.resource("gpu"), deps=deps)
            continue
        if name in ("pcie.h2d", "pcie.d2h", "ndplink"):
            b.add(
                T,
                b.resource(name),
                link_bytes=float(rng.uniform(1e5, 1e8)),
                deps=deps,
                unit=int(rng.integers(-1, 4)),
            )
        else:
            kind = {"gpu": G, "cpu": OpKind.CPU_KERNEL}.get(name, N)
            b.add(
                kind,
                b.resource(name),
                flops=float(rng.uniform(0, 1e9)),
                mem_bytes=float(rng.uniform(1e5, 1e8)),
                deps=deps,
            )
    return b.build()


@pytest.mark.parametrize("seed", range(6))
def test_fast_engine_equals_event_loop(seed):
    # exclusive host access on: two-resource ops included; one flow per link direction
    t = load_target("rtx5080-ndp", ["link.pcie.parallel_units=false"])
    s = random_schedule(t, seed)
    fs, fe, used = replay(s, t, engine="fast")
    xs, xe, _ = replay(s, t, engine="exact")
    assert used == "fast"
    assert np.allclose(fs, xs, rtol=1e-12, atol=1e-15) and np.allclose(
        fe, xe, rtol=1e-12, atol=1e-15
    )
    checked(s, t)


@pytest.mark.parametrize("seed", range(4))
def test_random_shared_link_schedules_pass_the_checker(seed):
    t = load_target("rtx5080-ndp", ["link.pcie.copy_engines=3", "link.ndp.concurrent_flows=2"])
    s = random_schedule(t, seed)
    r = checked(s, t)
    assert r.bound_s <= r.e2e_s
    with pytest.raises(NdpcError, match="fast engine is not exact"):
        replay(s, t, engine="fast")


def test_latencies_per_token():
    t = ideal_target()
    b = builder(t)
    prev = b.add(G, b.resource("gpu"), mem_bytes=10 * GB, phase=Phase.PREFILL, token=0)  # 10 ms
    for tok in (4, 5, 6):
        prev = b.add(G, b.resource("gpu"), mem_bytes=tok * GB, deps=[prev], token=tok)
    r = checked(b.build(), t)
    assert r.ttft_s == pytest.approx(0.010)
    assert r.tpot_mean_s == pytest.approx(0.005) and r.tpot_p50_s == pytest.approx(0.005)
    assert r.tpot_p99_s == pytest.approx(0.00598)
    assert r.decode_tokens == 3 and r.e2e_s == pytest.approx(0.025)


def test_schedule_resource_the_target_lacks():
    t = load_target("rtx5080-ndp")
    b = builder(load_target("rtx5080-ndp", ["ndp.units=6"]))
    b.add(N, b.resource("ndp5"), mem_bytes=1.0)
    with pytest.raises(NdpcError, match="'ndp5' that target 'rtx5080-ndp' lacks"):
        simulate(b.build(), t)
    b = builder(t)
    b.add(G, b.resource("pcie.h2d"), mem_bytes=1.0)
    with pytest.raises(NdpcError, match="GPU_KERNEL cannot run on link 'pcie.h2d'"):
        simulate(b.build(), t)


def test_deterministic_reports():
    t = load_target("rtx5080-ndp")
    s1 = moe_schedule(layers=4, decode=8, prompt=16, experts=16, k=4, seed=3)
    s2 = moe_schedule(layers=4, decode=8, prompt=16, experts=16, k=4, seed=3)
    a, b = simulate(s1, t), simulate(s2, t)
    assert report_json(a) == report_json(b)
    assert np.array_equal(a.end, b.end)


def test_per_step_times_in_report():
    t = ideal_target()
    b = builder(t)
    prev = b.add(G, b.resource("gpu"), mem_bytes=10 * GB, phase=Phase.PREFILL, token=0)
    for tok in (4, 5):
        prev = b.add(G, b.resource("gpu"), mem_bytes=tok * GB, deps=[prev], token=tok)
    steps = checked(b.build(), t).bound["steps"]
    assert steps["token"] == [0, 4, 5]
    assert steps["end_s"] == pytest.approx([0.010, 0.014, 0.019])
    assert steps["time_s"] == pytest.approx([0.010, 0.004, 0.005])
    assert all(f <= x + 1e-12 for f, x in zip(steps["floor_s"], steps["time_s"], strict=True))


def test_empty_and_sync_only_schedules():
    t = ideal_target()
    r = checked(builder(t).build(), t)
    assert (r.e2e_s, r.bound_s, r.efficiency, r.decode_tokens) == (0.0, 0.0, 1.0, 0)
    b = builder(t)
    first = b.add(S, b.resource("gpu"))
    b.add(S, b.resource("gpu"), deps=[first])
    r = checked(b.build(), t)
    assert r.end.tolist() == [0.0, 0.0]


def _shuffled_deps(s, seed):
    """The same schedule with every op's dependency list shuffled and some entries repeated."""
    from ndpc.backends.schedule import COLUMNS, from_arrays

    rng = np.random.default_rng(seed)
    lists = []
    for i in range(len(s)):
        d = s.deps(i).tolist()
        if d and rng.random() < 0.3:
            d.append(d[rng.integers(len(d))])
        rng.shuffle(d)
        lists.append(d)
    ptr = np.concatenate([[0], np.cumsum([len(d) for d in lists])])
    idx = np.array([x for d in lists for x in d], dtype=np.int32)
    return from_arrays(
        s.resources, s.meta, ptr, idx, **{name: getattr(s, name) for name, _, _ in COLUMNS}
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("overrides", [(), ("ndp.exclusive_host_access=false",)])
def test_pruned_dependencies_give_bit_identical_times(seed, overrides):
    """run_fast looks only at the dependencies prune_deps keeps; the times must equal, bit for
    bit, a pass over all dependencies (in any order, with repeats)."""
    from ndpc.backends.simulator import prepare
    from ndpc.backends.simulator.engine import _run_fast_general, prune_deps, run_fast

    t = load_target("rtx5080-ndp", ["link.pcie.parallel_units=false", *overrides])
    s = random_schedule(t, seed, n=400)
    if seed % 2:
        s = _shuffled_deps(s, seed)
    p = prepare(s, t)
    special = (p.is_sync | (p.res2 >= 0)).tolist()
    full = _run_fast_general(p, p.dep_ptr.tolist(), p.dep_idx.tolist(), special)
    assert full is not None
    for compiled in (False, True):  # pure Python and numba: same arithmetic, same order
        fast = run_fast(p, compiled=compiled)
        assert fast is not None
        assert np.array_equal(full[0], fast[0]) and np.array_equal(full[1], fast[1])
    qptr, _ = prune_deps(p)
    assert len(np.diff(qptr)) == len(s) and np.diff(qptr).sum() < len(p.dep_idx)


def test_pruning_keeps_the_latest_dependency_per_resource():
    """Of two GPU dependencies only the later one can end later; a GPU op's GPU dependencies
    ended before the GPU became free for it, so it keeps none of them."""
    from ndpc.backends.simulator import prepare
    from ndpc.backends.simulator.engine import prune_deps

    t = ideal_target()
    b = builder(t)
    g0 = b.add(G, b.resource("gpu"), flops=1.0)
    g1 = b.add(G, b.resource("gpu"), flops=1.0)
    x = b.add(T, b.resource("pcie.h2d"), link_bytes=1.0)
    n0 = b.add(N, b.resource("ndp0"), flops=1.0, deps=[g0, g1, x])
    b.add(G, b.resource("gpu"), flops=1.0, deps=[g1, g0, n0])
    ptr, idx = prune_deps(prepare(b.build(), t))
    assert idx[ptr[n0] : ptr[n0 + 1]].tolist() == [g1, x]
    assert idx[ptr[n0 + 1] : ptr[n0 + 2]].tolist() == [n0]


@pytest.mark.parametrize("seed", range(4))
def test_compiled_replay_equals_python_and_detects_overlap(seed):
    """The numba pass returns the pure-Python pass's times bit for bit, and None exactly when
    it does (flows overlapping on a shared link)."""
    from ndpc.backends.simulator import prepare
    from ndpc.backends.simulator.engine import run_fast, run_fast_python

    for overrides in ([], ["link.pcie.copy_engines=2"]):
        t = load_target("rtx5080-ndp", overrides)
        s = random_schedule(t, seed, n=300, shared=bool(overrides))
        p = prepare(s, t)
        py, nb = run_fast_python(p), run_fast(p, compiled=True)
        assert (py is None) == (nb is None)
        if py is not None:
            assert np.array_equal(py[0], nb[0]) and np.array_equal(py[1], nb[1])


def _busy_schedule(t, seed: int, n: int):
    """Random ops exercising every rule of the event engine: shared links with demand and
    prefetch flows (capped ones for a unit's copies), partial-sum reads (host sync), two-resource
    host copies, SYNC joins, release waits (with and without dependencies), zero-length ops,
    repeated dependencies and ops ready at time 0."""
    rng = np.random.default_rng(seed)
    b = builder(t)
    links = ["pcie.h2d", "pcie.d2h", "ndplink"]
    devices = ["gpu", "cpu", "ndp0", "ndp1", "ndp2", "ndp3"]
    release = []
    for i in range(n):
        k = int(rng.integers(0, 4)) if i else 0
        deps = sorted(rng.integers(max(0, i - 30), i, size=k).tolist()) if i else []
        x = rng.random()
        if x < 0.08:
            op = b.add(S, b.resource("gpu"), deps=deps if rng.random() < 0.7 else [])
            if rng.random() < 0.3:
                release.append([op, float(rng.uniform(0, 2e-3))])
        elif x < 0.55:
            kind = OpKind.PREFETCH if rng.random() < 0.4 else T
            b.add(kind, b.resource(links[rng.integers(3)]), deps=deps,
                  link_bytes=float(rng.choice([0.0, rng.uniform(1e3, 1e7)])),
                  unit=int(rng.integers(-1, 4)),
                  reason=int(Reason.PARTIAL_SUM if rng.random() < 0.3 else Reason.NONE))  # fmt: skip
        else:
            name = devices[rng.integers(len(devices))]
            kind = {"gpu": G, "cpu": OpKind.CPU_KERNEL}.get(name, N)
            b.add(kind, b.resource(name), deps=deps, flops=float(rng.uniform(0, 1e9)),
                  mem_bytes=float(rng.uniform(0, 1e7)))  # fmt: skip
    if release:
        b.meta["serving"] = {"release": release}
    return b.build()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("link.pcie.copy_engines=2", "link.ndp.concurrent_flows=3"),
        ("ndp.exclusive_host_access=false", "link.ndp.concurrent_flows=2"),
        ("link.pcie.parallel_units=false", "ndp.host_sync_us=0"),
    ],
)
def test_compiled_event_engine_equals_python(seed, overrides):
    """The compiled event loop gives the pure-Python loop's times bit for bit (and the fast
    pass the same as its reference, None included) on schedules that share links."""
    from ndpc.backends.simulator import prepare
    from ndpc.backends.simulator.engine import (
        run_exact,
        run_exact_python,
        run_fast,
        run_fast_python,
    )

    t = load_target("rtx5080-ndp", overrides)
    s = _busy_schedule(t, seed, n=600)
    p = prepare(s, t)
    py, nb = run_exact_python(p), run_exact(p, compiled=True)
    assert np.array_equal(py[0], nb[0]) and np.array_equal(py[1], nb[1])
    fpy, fnb = run_fast_python(p), run_fast(p, compiled=True)
    assert (fpy is None) == (fnb is None)
    if fpy is not None:
        assert np.array_equal(fpy[0], fnb[0]) and np.array_equal(fpy[1], fnb[1])
    report = check_timeline(s, t, nb[0], nb[1])
    assert report.ok, report.summary()


def test_compiled_event_engine_fails_on_a_changed_rule():
    """The comparison above can fail: the Python loop with fair sharing turned into FIFO-only
    (one slot per link) gives other times on the same schedule."""
    from dataclasses import replace

    from ndpc.backends.simulator import prepare
    from ndpc.backends.simulator.engine import run_exact, run_exact_python, run_fast_python

    t = load_target("rtx5080-ndp", ("link.pcie.copy_engines=2",))
    p = prepare(_busy_schedule(t, 3, n=600), t)
    assert run_fast_python(p) is None  # flows overlap: only the event loop is exact here
    one = replace(p, slots=[1] * len(p.slots), shared=[False] * len(p.shared))
    assert not np.array_equal(run_exact_python(one)[1], run_exact(p, compiled=True)[1])


def test_kernel_constants_match_the_enums():
    from ndpc.backends.simulator import kernels

    assert (kernels._SYNC, kernels._PREFETCH) == (OpKind.SYNC, OpKind.PREFETCH)
    assert kernels._PARTIAL_SUM == Reason.PARTIAL_SUM
