"""`stripe`: every expert's weights spread over all NDP units, as interleaved host memory.

For the baselines that do not compute on NDP units (`ondemand`, `lru`, `fiddler`), the NDP-DIMMs
are just host memory, and ordinary host memory interleaves pages over every channel and DIMM:
each expert is spread over all units (a copy to the GPU reads every DIMM's share, as the emitter
charges it), not kept on the one DIMM an expert-parallel placement would use. This is `tp-split`
with degree = the unit count and partial sums to the GPU; the IR is the same as `tp-split`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ndpc.compiler.passes.base import MAX_UNITS, ModulePass, PassContext, option
from ndpc.compiler.passes.tp_split import TpSplitPass
from ndpc.ir.attrs import ReduceSite
from ndpc.ir.core import Module
from ndpc.ir.diagnostics import NdpcError


@dataclass(frozen=True)
class StripePass(ModulePass):
    """Spread every expert over all NDP units (interleaved host memory for non-NDP baselines)."""

    name: ClassVar[str] = "stripe"
    makes_shards: ClassVar[bool] = True
    units: int | None = option(
        None, "NDP units (auto: the target's unit count)", lo=1, hi=MAX_UNITS
    )

    def needs_target(self) -> str | None:
        return "units=N" if self.units is None else None

    def run(self, module: Module, ctx: PassContext) -> Module:
        units = self.units
        if units is None:
            units = ctx.require_target(self.name).ndp_units
        if units < 1:
            raise NdpcError(f"stripe: units must be >= 1, got {units}")
        return TpSplitPass(units=units, degree=units, reduce=ReduceSite.GPU).run(module, ctx)
