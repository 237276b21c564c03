"""`trimoe`: install TriMoE's three-tier GPU / host-CPU / NDP dispatch (arXiv 2603.01058).

Before -> after, per MoE layer (after `tp-split{degree=1}`, TriMoE's whole experts per DIMM):

    %r = moe.router(%h)                 %r  = moe.router(%h)
    ... uses of %r                ->    %rd = moe.dispatch(%r) {dispatch = #dispatch<rule = trimoe,
                                              host_cpu, replan_interval, refine = ...>}

The run-time rule is `backends/policies/trimoe.py`. The options are the paper's ablation steps:
`cpu=false` drops the host-CPU (AMX) tier, `refine=false` keeps the per-expert classification
without the bottleneck-aware greedy refinement, `relayout=false` never moves experts between
DIMMs (otherwise every `relayout-interval` iterations).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ndpc.compiler.passes.base import MAX_COUNT, ModulePass, PassContext, option
from ndpc.compiler.passes.dispatch import install_dispatch
from ndpc.ir.attrs import DispatchAttr, DispatchRule
from ndpc.ir.core import Module


@dataclass(frozen=True)
class TrimoePass(ModulePass):
    """Install TriMoE's hot->GPU / warm->CPU / cold->NDP dispatch with greedy makespan refinement."""

    name: ClassVar[str] = "trimoe"
    cpu: bool = option(True, "use the host CPU (AMX) tier for warm experts")
    refine: bool = option(True, "bottleneck-aware greedy refinement of the classification")
    relayout: bool = option(True, "prediction-driven relayout of experts across the DIMMs")
    relayout_interval: int = option(32, "iterations between relayout decisions", lo=1, hi=MAX_COUNT)

    def attr(self) -> DispatchAttr:
        """The `DispatchAttr` these options describe."""
        return DispatchAttr(
            DispatchRule.TRIMOE,
            replan_interval=self.relayout_interval if self.relayout else 0,
            host_cpu=bool(self.cpu),
            refine=bool(self.refine),
        )

    def run(self, module: Module, ctx: PassContext) -> Module:
        attr = self.attr()
        funcs = tuple(install_dispatch(f, attr) for f in module.funcs)
        return dataclasses.replace(module, funcs=funcs)
