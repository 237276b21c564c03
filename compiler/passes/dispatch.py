"""`dispatch{rule=R}`: install a run-time dispatch rule on every MoE layer.

Before -> after, per MoE layer (a layer that already has a `moe.dispatch` gets the new rule):

    %r = moe.router(%h)                 %r  = moe.router(%h)
    ... uses of %r                ->    %rd = moe.dispatch(%r) {dispatch = #dispatch<rule = R, ...>}
                                        ... uses of %rd

The rule names a policy in `backends/policies/<rule>.py` (e.g. `monde`, `duplex`, `eplb`); the
options fill `DispatchAttr` (0 = let the rule choose). Placement is a separate pass
(`tp-split{degree=1}` for expert parallelism).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ndpc.compiler.passes.base import MAX_COUNT, ModulePass, PassContext, option
from ndpc.ir.attrs import DispatchAttr, DispatchRule
from ndpc.ir.core import Func, Module, Op, Value
from ndpc.ir.ops import DispatchOp, RouterOp
from ndpc.ir.rewrite import replace_uses_iter


@dataclass(frozen=True)
class DispatchPass(ModulePass):
    """Install a run-time dispatch rule (monde, duplex, eplb, ...) on every MoE layer."""

    name: ClassVar[str] = "dispatch"
    rule: DispatchRule = option(
        DispatchRule.NDP_ONLY, "dispatch rule: " + ", ".join(r.value for r in DispatchRule)
    )
    gpu_slots: int = option(0, "MoNDE: experts to the GPU (0: the rule)", lo=0, hi=MAX_COUNT)
    token_threshold: int = option(
        0,
        "Duplex, Fiddler: tokens from which an expert runs on the GPU (0: cost)",
        lo=0,
        hi=MAX_COUNT,
    )
    replan_interval: int = option(
        0, "EPLB: decode steps between re-plans (0: the rule's default)", lo=0, hi=MAX_COUNT
    )
    drift_threshold: float = option(0.0, "re-plan on popularity drift", lo=0)

    def attr(self) -> DispatchAttr:
        """The `DispatchAttr` these options describe."""
        return DispatchAttr(
            self.rule, self.gpu_slots, self.token_threshold, self.replan_interval,
            self.drift_threshold,
        )  # fmt: skip

    def run(self, module: Module, ctx: PassContext) -> Module:
        attr = self.attr()
        funcs = tuple(install_dispatch(f, attr) for f in module.funcs)
        return dataclasses.replace(module, funcs=funcs)


def install_dispatch(func: Func, attr: DispatchAttr) -> Func:
    """`func` with a `moe.dispatch` of `attr` right after each router (or the existing one
    updated), and the router's later users reading the dispatched route."""
    ops: list[Op] = []
    mapping: dict[Value, Value] = {}
    has_dispatch = {op.layer for op in func.ops if isinstance(op, DispatchOp)}
    for op in replace_uses_iter(func.ops, mapping):
        if isinstance(op, DispatchOp):
            ops.append(dataclasses.replace(op, dispatch=attr))
            continue
        ops.append(op)
        if isinstance(op, RouterOp) and op.layer not in has_dispatch:
            route = op.results[0]
            routed = Value(route.type, f"{route.name_hint or 'route'}_d")
            ops.append(
                DispatchOp(
                    operands=(route,),
                    results=(routed,),
                    loc=op.loc,
                    layer=op.layer,
                    dispatch=attr,
                )  # fmt: skip
            )
            mapping[route] = routed
    return dataclasses.replace(func, ops=tuple(ops))
