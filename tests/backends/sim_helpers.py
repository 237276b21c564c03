"""Shared helpers for the backends tests: an idealised target and a checked simulate."""

from __future__ import annotations

from ndpc.backends.check import check_timeline
from ndpc.backends.schedule import ScheduleBuilder
from ndpc.backends.simulator import simulate
from ndpc.backends.target import load_target, resource_names

# Round numbers, no overheads, efficiency 1: every time below is closed-form.
IDEAL = (
    "gpu.bandwidth_gbps=1000",
    "gpu.fp16_tflops=1000",
    "gpu.launch_us=0",
    "gpu.mem_efficiency=1",
    "gpu.compute_efficiency=1",
    "ndp.internal_bandwidth_gbps=100",
    "ndp.host_bandwidth_gbps=50",
    "ndp.gflops=100",
    "ndp.launch_us=0",
    "ndp.mem_efficiency=1",
    "ndp.compute_efficiency=1",
    "host.cpu_launch_us=0",
    "host.mem_efficiency=1",
    "host.compute_efficiency=1",
    "link.pcie.h2d_gbps=10",
    "link.pcie.d2h_gbps=10",
    "link.pcie.setup_us=0",
    "link.ndp.gbps=20",
    "link.ndp.latency_us=0",
    "ndp.exclusive_host_access=false",
)


def ideal_target(*extra: str):
    """rtx5080-ndp with IDEAL overrides plus `extra`."""
    return load_target("rtx5080-ndp", (*IDEAL, *extra))


def builder(target, meta=None) -> ScheduleBuilder:
    return ScheduleBuilder(resource_names(target), meta or {})


def checked(schedule, target, engine="auto"):
    """simulate() and assert that the independent checker accepts the timeline."""
    result = simulate(schedule, target, engine=engine)
    report = check_timeline(schedule, target, result.start, result.end)
    assert report.ok, report.summary()
    return result
