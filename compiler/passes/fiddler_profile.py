"""`fiddler-profile{calib=PATH}`: Fiddler's offline popularity profile -> static GPU residency.

Fiddler (ICLR 2025) profiles expert popularity on a calibration data set before deployment and
fills spare GPU memory greedily with the most popular experts. This pass reads a *calibration*
trace or popularity file (never the trace being evaluated), counts selections per (MoE layer,
expert), and writes one `moe.resident` declaration per MoE layer with the experts that fit the
GPU expert budget (GPU memory - dense weights - KV cache for `context` tokens - working space,
unless `budget-gib` is given). Ties go to the lower layer, then the lower expert id.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ndpc.backends.emit import DEFAULT_CONTEXT
from ndpc.backends.emit_dense import expert_budget_bytes  # the emitter's own budget rule
from ndpc.backends.static_placement import popularity, resident_sets
from ndpc.compiler.passes.base import MAX_COUNT, MAX_GIB, ModulePass, PassContext, option
from ndpc.ir.core import Module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import ExpertShardsOp, ExpertsOp, ResidentOp, RouterOp
from ndpc.traces.format import iter_chunks, load_any, meta_from_header, read_header

GIB = 1 << 30
ORACLE_CALIB = "@trace"  # placeholder for the evaluated trace (oracle-profile)


@dataclass(frozen=True)
class FiddlerProfilePass(ModulePass):
    """Pin the experts most popular on a calibration trace in GPU memory (Fiddler's offline profile)."""

    name: ClassVar[str] = "fiddler-profile"
    calib: str = option("", "calibration trace or popularity file")
    budget_gib: float | None = option(
        None, "GPU memory for experts (auto: from the target)", lo=0, hi=MAX_GIB
    )
    context: int | None = option(
        None, "KV-cache tokens reserved (auto: the emitter's default)", lo=0, hi=MAX_COUNT
    )

    def needs_target(self) -> str | None:
        return "budget-gib=N" if self.budget_gib is None else None

    def run(self, module: Module, ctx: PassContext) -> Module:
        if not self.calib:
            raise NdpcError("fiddler-profile: give calib=PATH (a calibration trace or popularity)")
        if self.calib == ORACLE_CALIB:
            raise NdpcError(
                f"fiddler-profile: calib={ORACLE_CALIB} (the evaluated trace itself, an oracle) is "
                "filled in by ndpc compare / ndpc reproduce; with ndpc run give calib=FILE"
            )
        counts = calibration_counts(self.calib)
        layers = [op for op in module.walk() if isinstance(op, RouterOp)]
        if counts.shape[0] != len(layers):
            raise NdpcError(
                f"fiddler-profile: {self.calib} has {counts.shape[0]} MoE layers, "
                f"the model {len(layers)}"
            )
        experts = layers[0].experts if layers else 0
        if counts.shape[1] != experts:
            raise NdpcError(
                f"fiddler-profile: {self.calib} has {counts.shape[1]} experts, the model {experts}"
            )
        slots = self.budget(module, ctx) // max(1, _expert_bytes(module))
        sets = resident_sets(counts, slots)
        kept = [d for d in module.decls if not isinstance(d, ResidentOp)]
        resident = [
            ResidentOp(layer=op.layer, experts=s) for op, s in zip(layers, sets, strict=True)
        ]
        return dataclasses.replace(module, decls=(*kept, *resident))

    def budget(self, module: Module, ctx: PassContext) -> int:
        """The GPU expert budget in bytes."""
        if self.budget_gib is not None:
            return int(self.budget_gib * GIB)
        target = ctx.require_target(self.name)
        context = DEFAULT_CONTEXT if self.context is None else self.context
        return expert_budget_bytes(module, target.gpu_memory_bytes, context)


def calibration_counts(path: str) -> np.ndarray:
    """Selection counts [L, E] from a calibration trace or popularity file.

    Memory stays bounded whatever the file holds: only a regular file is read (`/dev/zero` or a
    FIFO never ends), and a trace is counted chunk by chunk, never loaded whole.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as err:  # missing, a name too long, a NUL in it, ...
        why = getattr(err, "strerror", None) or str(err)
        raise NdpcError(f"fiddler-profile: calib={_short(path)}: {why}") from None
    if not stat.S_ISREG(mode):
        raise NdpcError(f"fiddler-profile: calib={_short(path)}: not a regular file")
    if read_header(path)["kind"] != "trace":
        return np.asarray(load_any(path).counts, dtype=np.int64)
    counts = None
    for chunk in iter_chunks(path):
        part = popularity(np.asarray(chunk.experts), chunk.meta.experts)
        counts = part if counts is None else counts + part
    if counts is None:  # an empty trace: nothing was ever selected
        meta = meta_from_header(read_header(path))
        return np.zeros((meta.layers, meta.experts), dtype=np.int64)
    return counts


def _short(path: str) -> str:
    return path if len(path) <= 200 else f"{path[:197]}..."


def _expert_bytes(module: Module) -> int:
    for op in module.walk():
        if isinstance(op, ExpertsOp | ExpertShardsOp):
            return op.ffn.weight_bytes
    return 0
