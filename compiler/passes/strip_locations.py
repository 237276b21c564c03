"""`strip-locations`: drop the named origins (`loc("...")`) of every op, function and module."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ndpc.compiler.passes.base import ModulePass, PassContext
from ndpc.ir.core import Location, Module, Op


def _strip(loc: Location) -> Location:
    # Keep the text position (diagnostics still point into the input file); drop the name.
    return dataclasses.replace(loc, name=None) if loc.name is not None else loc


def _strip_op(op: Op) -> Op:
    return dataclasses.replace(op, loc=_strip(op.loc)) if op.loc.name is not None else op


@dataclass(frozen=True)
class StripLocationsPass(ModulePass):
    """Remove named source locations (loc("...")) from the IR, keeping text positions."""

    name: ClassVar[str] = "strip-locations"

    def run(self, module: Module, ctx: PassContext) -> Module:
        funcs = tuple(
            dataclasses.replace(f, ops=tuple(_strip_op(op) for op in f.ops), loc=_strip(f.loc))
            for f in module.funcs
        )
        decls = tuple(_strip_op(op) for op in module.decls)
        return dataclasses.replace(module, decls=decls, funcs=funcs, loc=_strip(module.loc))
