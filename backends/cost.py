"""The cost model: the only place in ndpc that turns work into time.

A kernel on a device (GPU, one NDP unit, the host CPU) takes

    launch + max(flops / (peak_flops * eta_c(flops / mem_bytes)),
                 mem_bytes / (peak_bandwidth * eta_m(mem_bytes)))

(on a host CPU with a matrix engine, `host.amx_*`, the compute term is the smaller of the vector
units' and the matrix engine's, each at its own peak and efficiency table), where eta_c and eta_m
are the target's efficiency tables (piecewise linear in log2 of the key,
clamped at both ends). Compute efficiency is keyed by arithmetic intensity (FLOP per byte read),
which for an FP16 GEMM is about the number of rows M, so a caller that only knows work totals (the
simulator) gets exactly the time a caller that knows the shape gets.

A transfer of n bytes over a link takes `setup + n / bandwidth`; when it reads or writes an NDP
unit's memory (`unit >= 0`) over the host link, the bandwidth is capped by the unit's host-visible
bandwidth. Transfers that run at once share a link's bandwidth (the simulator's engine does that);
`copy_time` is the uncontended time of one copy spread over several units. The *physical minimum* of an op (`min_times`) drops launch/set-up and efficiency: it is
what the hardware's peak numbers allow, and what the lower bound and the checker use.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

from ndpc.backends.target import EffTable, Target, resource_specs

# Op kind codes (mirrors backends.schedule.OpKind; kept here so the cost model has no import cycle).
_SYNC = 6
_PARTIAL_SUM = 11  # backends.schedule.Reason.PARTIAL_SUM
_LINK_KINDS = {3, 5}  # TRANSFER, PREFETCH


def _interp(table: EffTable, x: float) -> float:
    """Scalar piecewise-linear interpolation in log2(x), clamped (same rule as `_interp_vec`)."""
    keys, fr = table.keys, table.fractions
    if x <= keys[0] or len(keys) == 1:
        return fr[0]
    if x >= keys[-1]:
        return fr[-1]
    j = bisect_right(keys, x)
    lo, hi = math.log2(keys[j - 1]), math.log2(keys[j])
    w = (math.log2(x) - lo) / (hi - lo)
    return fr[j - 1] + w * (fr[j] - fr[j - 1])


def _interp_vec(table: EffTable, x: np.ndarray) -> np.ndarray:
    if len(table.keys) == 1:
        return np.full(x.shape, table.fractions[0])
    xs = np.log2(np.maximum(x, 1e-300))
    return np.interp(xs, np.log2(table.keys), table.fractions)


class _Device:
    """Peak numbers and efficiency tables of one compute device kind.

    `matrix` = (peak FLOP/s, efficiency table) of an optional second compute engine next to the
    vector units (a CPU's AMX tiles): a kernel's compute part runs on whichever engine is faster
    at its intensity, as a kernel library that picks AMX or AVX-512 per shape does."""

    def __init__(
        self,
        flops: float,
        bandwidth: float,
        launch_s: float,
        eta_c: EffTable,
        eta_m: EffTable,
        matrix: tuple[float, EffTable] | None = None,
    ):
        self.flops, self.bandwidth, self.launch = flops, bandwidth, launch_s
        self.eta_c, self.eta_m = eta_c, eta_m
        self.matrix = matrix
        self.peak = max(flops, matrix[0]) if matrix else flops

    def time(self, flops: float, mem_bytes: float) -> float:
        """Kernel time: launch + max(compute, memory) at the tables' efficiencies."""
        if flops <= 0 and mem_bytes <= 0:
            return self.launch
        intensity = flops / mem_bytes if mem_bytes > 0 else math.inf
        t_c = flops / (self.flops * _interp(self.eta_c, intensity)) if flops > 0 else 0.0
        if self.matrix is not None and flops > 0:
            mx_flops, mx_eta = self.matrix
            t_c = min(t_c, flops / (mx_flops * _interp(mx_eta, intensity)))
        t_m = (
            mem_bytes / (self.bandwidth * _interp(self.eta_m, mem_bytes)) if mem_bytes > 0 else 0.0
        )
        return self.launch + max(t_c, t_m)

    def times(self, flops: np.ndarray, mem: np.ndarray) -> np.ndarray:
        """`time` over arrays."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # (inf: compute-bound)
            intensity = np.where(mem > 0, flops / np.where(mem > 0, mem, 1.0), np.inf)
        intensity = np.minimum(intensity, 1e300)
        eta_c = _interp_vec(self.eta_c, intensity)
        eta_m = _interp_vec(self.eta_m, np.maximum(mem, 1.0))
        t_c = np.where(flops > 0, flops / (self.flops * eta_c), 0.0)
        if self.matrix is not None:
            mx_flops, mx_eta = self.matrix
            t_c = np.minimum(t_c, flops / (mx_flops * _interp_vec(mx_eta, intensity)))
        t_m = np.where(mem > 0, mem / (self.bandwidth * eta_m), 0.0)
        return self.launch + np.maximum(t_c, t_m)

    def min_times(self, flops: np.ndarray, mem: np.ndarray) -> np.ndarray:
        """Physical minimum: peak numbers (the faster engine), no launch, no efficiency."""
        return np.maximum(flops / self.peak, mem / self.bandwidth)


class CostModel:
    """Uncontended time (seconds) of work on a target's devices and links.

    Methods take FLOPs and bytes as floats; `op_times`/`min_times` are the vectorised forms the
    simulator uses over whole schedules.
    """

    def __init__(self, target: Target):
        self.target = target
        v = target.values
        self.gpu = _Device(v["gpu.fp16_tflops"] * 1e12, v["gpu.bandwidth_gbps"] * 1e9, v["gpu.launch_us"] * 1e-6,
                           v["gpu.compute_efficiency"], v["gpu.mem_efficiency"])  # fmt: skip
        self.ndp = _Device(v["ndp.gflops"] * 1e9, v["ndp.internal_bandwidth_gbps"] * 1e9, v["ndp.launch_us"] * 1e-6,
                           v["ndp.compute_efficiency"], v["ndp.mem_efficiency"])  # fmt: skip
        amx = None  # the host's matrix engine, when the target has one
        if "host.amx_bf16_tflops" in v:
            amx = (v["host.amx_bf16_tflops"] * 1e12, v["host.amx_compute_efficiency"])
        self.cpu = _Device(v["host.cpu_gflops"] * 1e9, v["host.dram_bandwidth_gbps"] * 1e9, v["host.cpu_launch_us"] * 1e-6,
                           v["host.compute_efficiency"], v["host.mem_efficiency"], amx)  # fmt: skip
        self.ndp_host_bandwidth = v["ndp.host_bandwidth_gbps"] * 1e9
        self.specs = resource_specs(target)
        self._spec = {s.name: s for s in self.specs}
        self._setup = {
            "pcie.h2d": v["link.pcie.setup_us"] * 1e-6,
            "pcie.d2h": v["link.pcie.setup_us"] * 1e-6,
        }
        if target.has_ndp_link:
            self._setup["ndplink"] = v["link.ndp.latency_us"] * 1e-6
        # the host learns that a unit's kernels are done (status poll) before it reads the result
        self.host_sync = v.get("ndp.host_sync_us", 0.0) * 1e-6

    # -- scalar API (contracts.md) -------------------------------------------------------------
    def gpu_time(self, flops: float, mem_bytes: float, shape: Sequence[int] | None = None) -> float:
        """GPU kernel time. `shape` (M, N, K) only matters when mem_bytes is 0 (intensity = M)."""
        if shape is not None and mem_bytes <= 0 and flops > 0:
            m = max(1, int(shape[0]))
            return self.gpu.launch + flops / (self.gpu.flops * _interp(self.gpu.eta_c, m))
        return self.gpu.time(flops, mem_bytes)

    def ndp_time(self, flops: float, mem_bytes: float) -> float:
        """Kernel time on one NDP unit reading `mem_bytes` from its own memory."""
        return self.ndp.time(flops, mem_bytes)

    def cpu_time(self, flops: float, mem_bytes: float) -> float:
        """Host-CPU kernel time reading `mem_bytes` from host DRAM."""
        return self.cpu.time(flops, mem_bytes)

    def link_bandwidth(self, link_name: str, unit: int = -1) -> float:
        """Bytes/s of one uncontended flow on `link_name` (capped by an NDP unit's host bandwidth)."""
        spec = self._spec.get(link_name)
        if spec is None or spec.kind != "link":
            raise ValueError(f"'{link_name}' is not a link of target {self.target.name}")
        if unit >= 0 and link_name.startswith("pcie."):
            return min(spec.bandwidth_Bps, self.ndp_host_bandwidth)
        return spec.bandwidth_Bps

    def link_setup(self, link_name: str) -> float:
        """Fixed set-up latency (s) of one transfer on `link_name`."""
        return self._setup[link_name]

    def copy_time(self, link_name: str, nbytes: float, units: int = 0) -> float:
        """One host copy of `nbytes` spread evenly over `units` NDP units (0: plain host memory),
        as the simulator runs it: one flow per unit, all at once (`resource_specs` gives the link
        a slot per unit), sharing the link; the copy ends when its slowest flow does."""
        if units <= 0:
            return self.link_time(link_name, nbytes)
        if not self.target.values.get("link.pcie.parallel_units", True):  # one shard at a time
            return units * self.link_time(link_name, nbytes / units, 0)
        rate = min(self.link_bandwidth(link_name), units * self.link_bandwidth(link_name, 0))
        return self._setup[link_name] + nbytes / rate

    def link_time(self, link_name: str, nbytes: float, unit: int = -1) -> float:
        """Transfer time: set-up latency + bytes / bandwidth."""
        return self._setup[link_name] + nbytes / self.link_bandwidth(link_name, unit)

    def op_time(self, kind: int, resource_name: str, flops: float = 0.0, mem_bytes: float = 0.0,
                link_bytes: float = 0.0, unit: int = -1) -> float:  # fmt: skip
        """Time of one schedule op (see backends.schedule for the meaning of the work fields)."""
        if int(kind) == _SYNC:
            return 0.0
        spec = self._spec.get(resource_name)
        if spec is None:
            raise ValueError(f"target {self.target.name} has no resource '{resource_name}'")
        if spec.kind == "link":
            return self.link_time(resource_name, link_bytes, unit)
        return self._device(resource_name).time(flops, mem_bytes)

    def _device(self, resource_name: str) -> _Device:
        if resource_name == "gpu":
            return self.gpu
        if resource_name == "cpu":
            return self.cpu
        return self.ndp

    # -- vectorised API (simulator) ------------------------------------------------------------
    # Ops per slice of the vectorised work: its temporaries stay small next to a schedule of
    # millions of ops (every value is per op, so slicing changes none of them).
    SLICE = 1 << 20

    def _per_resource(self, schedule_resources: Sequence[str], resource: np.ndarray, kind: np.ndarray,
                      flops: np.ndarray, mem: np.ndarray, link: np.ndarray, unit: np.ndarray,
                      minimum: bool) -> np.ndarray:  # fmt: skip
        out = np.zeros(len(resource), dtype=np.float64)
        for lo in range(0, len(resource), self.SLICE):
            sl = slice(lo, lo + self.SLICE)
            self._per_resource_slice(out[sl], schedule_resources, resource[sl], kind[sl],
                                     flops[sl], mem[sl], link[sl], unit[sl], minimum)  # fmt: skip
        return out

    def _per_resource_slice(self, out: np.ndarray, schedule_resources: Sequence[str],
                            resource: np.ndarray, kind: np.ndarray, flops: np.ndarray,
                            mem: np.ndarray, link: np.ndarray, unit: np.ndarray,
                            minimum: bool) -> None:  # fmt: skip
        for r, name in enumerate(schedule_resources):
            sel = np.flatnonzero(resource == r)
            if len(sel) == 0:
                continue
            spec = self._spec.get(name)
            if spec is None:
                raise ValueError(
                    f"schedule uses resource '{name}' that target {self.target.name} lacks"
                )
            if spec.kind == "link":
                cap = np.where(
                    unit[sel] >= 0, self.link_bandwidth(name, 0), self.link_bandwidth(name)
                )
                t = link[sel] / cap
                out[sel] = t if minimum else t + self._setup[name]
            else:
                dev = self._device(name)
                f, m = flops[sel], mem[sel]
                out[sel] = dev.min_times(f, m) if minimum else dev.times(f, m)
        out[kind == _SYNC] = 0.0

    def op_times(self, schedule) -> np.ndarray:
        """Uncontended duration of every op of `schedule` (a backends.schedule.Schedule)."""
        s = schedule
        out = self._per_resource(
            s.resources, s.resource, s.kind, s.flops, s.mem_bytes, s.link_bytes, s.unit, False
        )
        out += self._host_syncs(schedule)  # in place: one n-sized array less at a time
        return out

    def op_setups(self, schedule) -> np.ndarray:
        """Per op: the fixed latency before its bytes move (0 for kernels and SYNC ops): the
        link's set-up, plus the host's synchronisation with a unit before reading its partial
        sum (`ndp.host_sync_us`)."""
        out = np.zeros(len(schedule), dtype=np.float64)
        for r, name in enumerate(schedule.resources):
            spec = self._spec.get(name)
            if spec is not None and spec.kind == "link":
                out[schedule.resource == r] = self._setup[name]
        out += self._host_syncs(schedule)
        out[schedule.kind == _SYNC] = 0.0
        return out

    def _host_syncs(self, schedule) -> np.ndarray:
        """`host_sync` on every host-link read of an NDP unit's partial sum, else 0."""
        out = np.zeros(len(schedule), dtype=np.float64)
        if self.host_sync <= 0 or "pcie.h2d" not in schedule.resources:
            return out
        h2d = schedule.resources.index("pcie.h2d")
        sel = (schedule.resource == h2d) & (schedule.reason == _PARTIAL_SUM) & (schedule.unit >= 0)
        out[sel & (schedule.kind != _SYNC)] = self.host_sync
        return out

    def min_times(self, schedule) -> np.ndarray:
        """Physical minimum duration of every op: peak numbers only, no launch/set-up, no efficiency."""
        s = schedule
        return self._per_resource(
            s.resources, s.resource, s.kind, s.flops, s.mem_bytes, s.link_bytes, s.unit, True
        )

    def link_shares(self, schedule) -> np.ndarray:
        """Per op: its link bytes over the link's full bandwidth (0 for kernels). Summed over a
        link this is the least time the link must be active, however flows share it."""
        out = np.zeros(len(schedule), dtype=np.float64)
        for r, name in enumerate(schedule.resources):
            spec = self._spec.get(name)
            if spec is not None and spec.kind == "link":
                sel = schedule.resource == r
                out[sel] = schedule.link_bytes[sel] / spec.bandwidth_Bps
        return out

    def memory_floor(self, nbytes):
        """`nbytes` read at the summed peak bandwidth of every memory (VRAM, each NDP unit, host DRAM)."""
        total = sum(s.bandwidth_Bps for s in self.specs if s.kind == "compute")
        return nbytes / total
