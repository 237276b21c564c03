"""`canonicalize`: remove dead ops and put module-level declarations in canonical order."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ndpc.compiler.passes.base import ModulePass, PassContext
from ndpc.ir.core import Func, Module, Op, Value
from ndpc.ir.ops import DeviceOp, PrefetchPolicyOp, ResidentOp, ReturnOp

_DEVICE_ORDER = {"gpu": 0, "host": 1, "ndp": 2}


def remove_dead_ops(func: Func) -> Func:
    """Drop ops none of whose results is used (walking backwards, so chains die too)."""
    live: set[Value] = set()
    kept: list[Op] = []
    for op in reversed(func.ops):
        if isinstance(op, ReturnOp) or any(r in live for r in op.results):
            kept.append(op)
            live.update(op.operands)
    if len(kept) == len(func.ops):
        return func
    return dataclasses.replace(func, ops=tuple(reversed(kept)))


def _decl_key(op: Op) -> tuple:
    # devices (gpu, host, ndp by index), then the prefetch policy, then residency by layer
    if isinstance(op, DeviceOp):
        return (0, _DEVICE_ORDER.get(op.kind.value, 3), op.index, op.sym.name)
    if isinstance(op, PrefetchPolicyOp):
        return (1, 0, 0, "")
    if isinstance(op, ResidentOp):
        return (2, op.layer, 0, "")
    return (3, 0, 0, op.OP_NAME)


def canonical_decls(decls: tuple[Op, ...]) -> tuple[Op, ...]:
    """Merge moe.resident ops of one layer (sorted, unique experts; empty ones dropped), then sort."""
    resident: dict[int, tuple[ResidentOp, set[int]]] = {}
    others: list[Op] = []
    for op in decls:
        if isinstance(op, ResidentOp):
            first, experts = resident.setdefault(op.layer, (op, set()))
            experts.update(op.experts)
        else:
            others.append(op)
    for first, experts in resident.values():
        if experts:
            others.append(dataclasses.replace(first, experts=tuple(sorted(experts))))
    return tuple(sorted(others, key=_decl_key))  # sorted() is stable: ties keep input order


@dataclass(frozen=True)
class CanonicalizePass(ModulePass):
    """Remove unused ops, merge and sort moe.resident lists, order declarations canonically."""

    name: ClassVar[str] = "canonicalize"

    def run(self, module: Module, ctx: PassContext) -> Module:
        funcs = tuple(remove_dead_ops(f) for f in module.funcs)
        return dataclasses.replace(module, decls=canonical_decls(module.decls), funcs=funcs)
