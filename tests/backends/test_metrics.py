"""Report rules: prefetch hits/misses/wasted bytes, busy fractions, bytes per link, the bound."""

from __future__ import annotations

import pytest
from sim_helpers import builder, checked, ideal_target

from ndpc.backends.bounds import lower_bound
from ndpc.backends.schedule import OpKind, Phase, Reason
from ndpc.backends.simulator.metrics import interval_union, prefetch_stats

GB = 1e9


def prefetch_case(prefetcher):
    t = ideal_target()
    b = builder(t, {"prefetcher": prefetcher} if prefetcher else {})
    gpu, h2d, ndp = b.resource("gpu"), b.resource("pcie.h2d"), b.resource("ndp0")
    b.add(
        OpKind.PREFETCH, h2d, link_bytes=100.0, layer=0, expert=3, reason=Reason.PREFETCH
    )  # used below
    b.add(
        OpKind.PREFETCH, h2d, link_bytes=7.0, layer=0, expert=9, reason=Reason.PREFETCH
    )  # never used
    b.add(
        OpKind.GPU_KERNEL,
        gpu,
        mem_bytes=1.0,
        token=5,
        layer=0,
        expert=3,
        reason=Reason.GPU_RESIDENT,
    )
    b.add(
        OpKind.NDP_KERNEL,
        ndp,
        mem_bytes=1.0,
        token=5,
        layer=0,
        expert=4,
        shard=0,
        reason=Reason.NDP,
    )
    b.add(
        OpKind.NDP_KERNEL,
        ndp,
        mem_bytes=1.0,
        token=5,
        layer=0,
        expert=4,
        shard=1,
        reason=Reason.NDP,
    )
    b.add(
        OpKind.PREFETCH, h2d, link_bytes=50.0, layer=0, expert=3, reason=Reason.PREFETCH
    )  # evicted unused
    b.add(OpKind.SYNC, gpu, layer=0, expert=3, reason=Reason.EVICT)
    b.add(
        OpKind.GPU_KERNEL,
        gpu,
        mem_bytes=1.0,
        token=6,
        layer=0,
        expert=3,
        reason=Reason.GPU_RESIDENT,
    )
    b.add(
        OpKind.GPU_KERNEL, gpu, mem_bytes=1.0, token=6, layer=1, expert=3, reason=Reason.GPU_FETCH
    )
    b.add(
        OpKind.GPU_KERNEL,
        gpu,
        mem_bytes=1.0,
        phase=Phase.PREFILL,
        token=0,
        layer=0,
        expert=8,
        reason=Reason.NDP,
    )
    return b.build(), t


def test_prefetch_rules():
    s, t = prefetch_case("paper")
    hits, misses, wasted = prefetch_stats(s)
    assert hits == 2  # (5, 0, 3) and (6, 0, 3)
    assert misses == 2  # (5, 0, 4) counted once over its two shards; (6, 1, 3); prefill ignored
    assert wasted == 57.0  # expert 9 never used; second prefetch of expert 3 evicted before use
    r = checked(s, t)
    assert (r.prefetch_hits, r.prefetch_misses, r.prefetch_wasted_bytes) == (2, 2, 57.0)


def test_no_prefetcher_means_no_misses():
    for meta in (None, "none"):
        s, _ = prefetch_case(meta)
        assert prefetch_stats(s)[:2] == (2, 0)


def test_busy_and_link_bytes():
    t = ideal_target()
    b = builder(t)
    a = b.add(OpKind.TRANSFER, b.resource("pcie.d2h"), link_bytes=1 * GB)  # 100 ms
    b.add(OpKind.GPU_KERNEL, b.resource("gpu"), mem_bytes=100 * GB, deps=[a])  # 100 ms
    r = checked(b.build(), t)
    assert r.busy["pcie.d2h"] == pytest.approx(0.5) and r.busy["gpu"] == pytest.approx(0.5)
    assert r.busy["pcie.h2d"] == 0.0
    assert r.link_bytes == {"pcie.h2d": 0.0, "pcie.d2h": 1 * GB, "ndplink": 0.0}


def test_bound_takes_the_busiest_resource_when_work_overlaps():
    t = ideal_target()
    b = builder(t)
    for _ in range(3):
        b.add(OpKind.NDP_KERNEL, b.resource("ndp0"), mem_bytes=1 * GB)  # 10 ms each, one unit
    b.add(OpKind.TRANSFER, b.resource("pcie.h2d"), link_bytes=0.2 * GB)  # 20 ms, in parallel
    s = b.build()
    bound = lower_bound(s, t)
    assert bound["bound_s"] == pytest.approx(0.030)
    assert bound["binding_resource"] == "ndp0"
    assert bound["critical_path_s"] == pytest.approx(0.020)
    assert bound["aggregate_memory_floor_s"] <= bound["bound_s"]
    r = checked(s, t)
    assert r.efficiency == pytest.approx(1.0)


def test_interval_union():
    import numpy as np

    assert interval_union(np.array([0.0, 1.0, 5.0]), np.array([2.0, 3.0, 6.0])) == 4.0


def test_critical_path_matches_plain_pass_on_random_dags():
    import numpy as np

    from ndpc.backends.bounds import _critical_path_reference, critical_path, critical_path_csr
    from ndpc.backends.schedule import from_arrays

    rng = np.random.default_rng(1)
    assert critical_path_csr(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0)) == 0.0
    for _ in range(8):
        n = 400
        counts = np.where(rng.random(n) < 0.6, 1, rng.integers(0, 4, n))
        counts[0] = 0
        deps = [rng.integers(0, i, c).tolist() if i else [] for i, c in enumerate(counts)]
        if _ % 2 == 0:  # sorted without repeats; otherwise in any order, with repeats
            deps = [sorted(set(d)) for d in deps]
        ptr = np.concatenate([[0], np.cumsum([len(d) for d in deps])])
        idx = np.array([x for d in deps for x in d], dtype=np.int32)
        s = from_arrays(["gpu"], {}, ptr, idx)
        w = rng.uniform(0, 1, n)
        ref = _critical_path_reference(s, w)
        # compiled (numba): the same recursion in the same order -> exactly equal
        assert critical_path_csr(s.dep_ptr, s.dep_idx, w, compiled=True) == ref
        # numpy + Python pass over roots: chain weights summed below the root first
        assert critical_path_csr(s.dep_ptr, s.dep_idx, w, compiled=False) == pytest.approx(
            ref, rel=1e-12
        )
        assert critical_path(s, w) == pytest.approx(ref, rel=1e-12)


def test_per_step_floors():
    t = ideal_target()
    b = builder(t)
    a = b.add(OpKind.GPU_KERNEL, b.resource("gpu"), mem_bytes=1 * GB, token=0, phase=Phase.PREFILL)
    b.add(OpKind.TRANSFER, b.resource("pcie.h2d"), link_bytes=1 * GB, deps=[a], token=4)  # 100 ms
    b.add(OpKind.NDP_KERNEL, b.resource("ndp0"), mem_bytes=1 * GB, token=4)  # 10 ms
    steps = lower_bound(b.build(), t)["steps"]
    assert steps["token"] == [0, 4] and steps["phase"] == [0, 1]
    assert steps["floor_s"] == pytest.approx([0.001, 0.1])
    assert steps["binding"] == ["gpu", "pcie.h2d"]
    total_bw = (1000 + 4 * 100 + 89.6) * 1e9
    assert steps["aggregate_s"] == pytest.approx([GB / total_bw, GB / total_bw])
