"""Energy of a simulated run: joules from the schedule's work and the run's length.

The model (docs/targets.md, "Energy"):

* dynamic energy = work x energy per unit of work, counted per op from the schedule columns:
  GPU kernels: FLOPs x `gpu.pj_per_flop` + VRAM bytes x `gpu.mem_pj_per_byte`;
  NDP kernels: FLOPs x `ndp.pj_per_flop` + bytes read inside the DIMM x `ndp.internal_pj_per_byte`;
  CPU kernels: FLOPs x `host.pj_per_flop` + host DRAM bytes x `host.dram_pj_per_byte`;
  PCIe transfers and prefetches: bytes x (`link.pcie.pj_per_byte` + the VRAM end
  `gpu.mem_pj_per_byte` + the host end: `ndp.host_pj_per_byte` when the op reads or writes an
  NDP unit, else `host.dram_pj_per_byte`); DIMM-link transfers: bytes x `link.ndp.pj_per_byte`.
* static energy = (`gpu.static_w` + `host.static_w` + units x `ndp.static_w`) x end-to-end time:
  every device is powered for the whole run, busy or not.

Per token means per output token: the trace's decode tokens (a trace of 512 prompt + 512 output
tokens has 512), or one per request when it has no decode phase. A target without the energy keys has no energy figures (`None`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ndpc.backends.schedule import OpKind, Schedule
from ndpc.backends.target import Target

PJ = 1e-12
ENERGY_KEYS = (
    "gpu.pj_per_flop", "gpu.mem_pj_per_byte", "gpu.static_w",
    "host.pj_per_flop", "host.dram_pj_per_byte", "host.static_w",
    "ndp.pj_per_flop", "ndp.internal_pj_per_byte", "ndp.host_pj_per_byte", "ndp.static_w",
    "link.pcie.pj_per_byte",
)  # fmt: skip
LINK_NDP_KEY = "link.ndp.pj_per_byte"  # required only when the target has a DIMM-link


def has_energy_model(target: Target) -> bool:
    """Whether `target` carries every energy key it needs."""
    keys = ENERGY_KEYS + ((LINK_NDP_KEY,) if target.has_ndp_link else ())
    return all(k in target.values for k in keys)


def _groups(schedule: Schedule) -> dict[str, np.ndarray]:
    """Per schedule resource, whether it is the GPU, the CPU, an NDP unit, a PCIe direction or
    the DIMM link (tables a few entries long: indexed by the resource column, one byte an op)."""
    names = list(schedule.resources)
    return {
        "gpu": np.array([r == "gpu" for r in names], dtype=bool),
        "cpu": np.array([r == "cpu" for r in names], dtype=bool),
        "ndp": np.array([r.startswith("ndp") and r[3:].isdigit() for r in names], dtype=bool),
        "pcie": np.array([r in ("pcie.h2d", "pcie.d2h") for r in names], dtype=bool),
        "ndplink": np.array([r == "ndplink" for r in names], dtype=bool),
    }


def op_energy_j(schedule: Schedule, target: Target) -> np.ndarray:
    """Dynamic energy of every op (J), in op order (the timeline's power track uses it)."""
    out = np.zeros(len(schedule))
    groups = _groups(schedule)
    step = 1 << 20  # ops per slice: each op's energy is its own, the temporaries stay small
    for lo in range(0, len(out), step):
        _op_energy_slice(out[lo : lo + step], schedule, slice(lo, lo + step), groups, target)
    return out


def _op_energy_slice(out: np.ndarray, s: Schedule, sl: slice, groups: dict[str, np.ndarray],
                     target: Target) -> None:  # fmt: skip
    v = target.values
    resource, kind, unit = s.resource[sl], s.kind[sl], s.unit[sl]
    flops, mem, link = s.flops[sl], s.mem_bytes[sl], s.link_bytes[sl]
    on = {name: table[resource] for name, table in groups.items()}
    kernel = np.isin(kind, [OpKind.GPU_KERNEL, OpKind.NDP_KERNEL, OpKind.CPU_KERNEL, OpKind.REDUCE])
    on_gpu = kernel & on["gpu"]
    on_cpu = kernel & on["cpu"]
    on_ndp = kernel & on["ndp"]
    out[on_gpu] = flops[on_gpu] * v["gpu.pj_per_flop"] + mem[on_gpu] * v["gpu.mem_pj_per_byte"]
    out[on_ndp] = flops[on_ndp] * v["ndp.pj_per_flop"] + mem[on_ndp] * v["ndp.internal_pj_per_byte"]  # fmt: skip
    out[on_cpu] = flops[on_cpu] * v["host.pj_per_flop"] + mem[on_cpu] * v["host.dram_pj_per_byte"]  # fmt: skip
    moving = np.isin(kind, [OpKind.TRANSFER, OpKind.PREFETCH])
    pcie = moving & on["pcie"]
    host_end = np.where(unit[pcie] >= 0, v["ndp.host_pj_per_byte"], v["host.dram_pj_per_byte"])
    per_byte = v["link.pcie.pj_per_byte"] + v["gpu.mem_pj_per_byte"] + host_end
    out[pcie] = link[pcie] * per_byte
    dimm_link = moving & on["ndplink"]
    if dimm_link.any():
        out[dimm_link] = link[dimm_link] * v[LINK_NDP_KEY]
    out *= PJ


def static_power_w(target: Target) -> float:
    """Power drawn by every device whether busy or not (W)."""
    v = target.values
    return v["gpu.static_w"] + v["host.static_w"] + target.ndp_units * v["ndp.static_w"]


def energy_report(schedule: Schedule, target: Target, e2e_s: float, tokens: int) -> dict[str, Any] | None:  # fmt: skip
    """Joules of the run, split by where they go, and per output token; None without a model."""
    if not has_energy_model(target):
        return None
    v, s = target.values, schedule
    per_op = op_energy_j(schedule, target)
    breakdown = {
        f"{name}_j": float(per_op[table[s.resource]].sum()) for name, table in _groups(s).items()
    }
    static = {
        "gpu_static_j": v["gpu.static_w"] * e2e_s,
        "host_static_j": v["host.static_w"] * e2e_s,
        "ndp_static_j": target.ndp_units * v["ndp.static_w"] * e2e_s,
    }
    total = float(sum(breakdown.values()) + sum(static.values()))
    return {
        "energy_j": total,
        "dynamic_j": float(per_op.sum()),
        "static_j": float(sum(static.values())),
        "breakdown_j": {**breakdown, **static},
        "static_power_w": static_power_w(target),
        "tokens": tokens,
        "energy_per_token_j": total / tokens if tokens else None,
        "tokens_per_j": tokens / total if total > 0 else None,
    }


def power_track(schedule: Schedule, target: Target, start: np.ndarray, end: np.ndarray,
                bins: int = 2000) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(bin edges in s, mean dynamic power per bin in W) over the run: each op's energy spread
    evenly over its interval (an instantaneous op lands in its bin), so the bins' energy sums to
    the run's dynamic energy exactly."""
    e2e = float(end.max()) if len(end) else 0.0
    edges = np.linspace(0.0, e2e, max(1, bins) + 1)
    if e2e <= 0:
        return edges, np.zeros(len(edges) - 1)
    energy = op_energy_j(schedule, target)
    dur = end - start
    spread = dur > 0
    power = np.where(spread, energy / np.where(spread, dur, 1.0), 0.0)

    def integral(x: np.ndarray) -> np.ndarray:
        """sum_i power_i * min(t, x_i) at every edge t."""
        order = np.argsort(x, kind="stable")
        xs, ps = x[order], power[order]
        below = np.concatenate([[0.0], np.cumsum(ps * xs)])
        above = np.concatenate([np.cumsum(ps[::-1])[::-1], [0.0]])
        k = np.searchsorted(xs, edges, side="right")
        return below[k] + edges * above[k]

    cumulative = integral(end) - integral(start)  # dynamic energy done by each edge
    per_bin = np.diff(cumulative)
    instant = ~spread & (energy > 0)
    if instant.any():
        idx = np.clip(np.searchsorted(edges, start[instant], side="right") - 1, 0, len(per_bin) - 1)
        np.add.at(per_bin, idx, energy[instant])
    return edges, per_bin / np.diff(edges)
