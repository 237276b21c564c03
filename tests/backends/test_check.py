"""The independent checker accepts real timelines and catches deliberately corrupted ones."""

from __future__ import annotations

import numpy as np
from sim_helpers import builder, checked, ideal_target

from ndpc.backends.check import check_timeline
from ndpc.backends.schedule import OpKind

GB = 1e9


def fixture():
    t = ideal_target()
    b = builder(t)
    a = b.add(OpKind.GPU_KERNEL, b.resource("gpu"), mem_bytes=1 * GB)  # [0, 1 ms]
    c = b.add(OpKind.NDP_KERNEL, b.resource("ndp0"), mem_bytes=1 * GB, deps=[a])  # [1, 11 ms]
    b.add(OpKind.GPU_KERNEL, b.resource("gpu"), mem_bytes=1 * GB)  # [1, 2 ms] (FIFO after op 0)
    b.add(OpKind.GPU_KERNEL, b.resource("gpu"), mem_bytes=1 * GB, deps=[c])  # [11, 12 ms]
    s = b.build()
    r = checked(s, t)
    return s, t, r.start.copy(), r.end.copy()


def test_clean_timeline_passes():
    s, t, start, end = fixture()
    assert check_timeline(s, t, start, end).ok


def test_dependency_violation_is_caught():
    s, t, start, end = fixture()
    start[1] -= 0.5e-3  # NDP op starts before the GPU op it depends on ends
    end[1] -= 0.5e-3
    rep = check_timeline(s, t, start, end)
    assert rep.counts.get("dependency") == 1 and "op 1 starts" in rep.violations["dependency"][0]


def test_over_capacity_overlap_is_caught():
    s, t, start, end = fixture()
    start[2], end[2] = 0.5e-3, 1.5e-3  # overlaps op 0 on the one-at-a-time GPU
    rep = check_timeline(s, t, start, end)
    assert rep.counts.get("capacity", 0) >= 1 and "resource gpu" in rep.violations["capacity"][0]


def test_too_short_op_is_caught():
    s, t, start, end = fixture()
    end[3] = start[3] + 0.5e-3  # 1 GB in 0.5 ms on a 1000 GB/s GPU
    rep = check_timeline(s, t, start, end)
    assert rep.counts.get("physical-minimum") == 1


def test_faster_than_the_bound_is_caught():
    s, t, start, end = fixture()
    rep = check_timeline(s, t, start * 0.5, end * 0.5)
    assert rep.counts.get("lower-bound") == 1 and not rep.ok


def test_bandwidth_violation_on_shared_link_is_caught():
    t = ideal_target("link.pcie.copy_engines=2")
    b = builder(t)
    b.add(OpKind.TRANSFER, b.resource("pcie.h2d"), link_bytes=1 * GB)
    b.add(OpKind.TRANSFER, b.resource("pcie.h2d"), link_bytes=1 * GB)
    s = b.build()
    checked(s, t)
    # both flows at full rate at once: each lasts its minimum but together they exceed 10 GB/s
    rep = check_timeline(s, t, np.zeros(2), np.full(2, 0.1))
    assert rep.counts.get("bandwidth") == 1


def test_bad_times_and_shapes():
    s, t, start, end = fixture()
    end[0] = np.nan
    assert check_timeline(s, t, start, end).counts.get("times") == 1
    assert check_timeline(s, t, start[:2], end[:2]).counts.get("shape") == 1
