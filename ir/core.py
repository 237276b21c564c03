"""Core IR containers: locations, SSA values, the op base class, functions and modules.

The IR is small and immutable-ish: ops are frozen dataclasses, a function is a flat ordered op list
(an MoE model needs no regions), and passes build new modules instead of mutating old ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import ClassVar

from ndpc.ir.signature import Signature
from ndpc.ir.types import Type


@dataclass(frozen=True)
class Location:
    """Where an op came from.

    Either a position in IR text (`file:line:col`, not printed: the text itself is the location)
    or a named origin such as an ONNX node (`onnx:/model/layers.0/mlp/MoE`), printed as `loc("...")`.
    """

    file: str = "<unknown>"
    line: int = 0
    col: int = 0
    name: str | None = None

    def __str__(self) -> str:
        # A text position (parsed IR) is what the user can jump to; a named origin otherwise.
        if self.line > 0 or self.name is None:
            return f"{self.file}:{self.line}:{self.col}"
        return self.name

    @property
    def printed(self) -> bool:
        """Named locations are part of the text; file positions are re-derived when parsing."""
        return self.name is not None


UNKNOWN_LOC = Location()


@dataclass(frozen=True, eq=False)
class Value:
    """An SSA value. Identity matters (eq=False); `name_hint` is only a suggestion for the printer."""

    type: Type
    name_hint: str | None = None


@dataclass(frozen=True)
class SymbolRef:
    """A reference to a module-level symbol such as a device: `@gpu`, `@ndp0`."""

    name: str


@dataclass(frozen=True, kw_only=True)
class Op:
    """Base of every op. Subclasses add typed attribute fields and set `OP_NAME` and `SIGNATURE`.

    `operands` and `results` are SSA values; all other dataclass fields (besides `loc`) are the
    op's attributes, printed in declaration order.
    """

    OP_NAME: ClassVar[str]
    SIGNATURE: ClassVar[Signature]  # operand and result types (ndpc.ir.signature)
    operands: tuple[Value, ...] = ()
    results: tuple[Value, ...] = ()
    loc: Location = UNKNOWN_LOC

    @classmethod
    def attribute_names(cls) -> tuple[str, ...]:
        """Names of the attribute fields, in declaration (= print) order."""
        skip = {"operands", "results", "loc"}
        return tuple(f.name for f in fields(cls) if f.name not in skip)

    def attributes(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.attribute_names()}

    @property
    def result(self) -> Value:
        """The single result (ops with one result)."""
        if len(self.results) != 1:
            raise ValueError(f"{self.OP_NAME} has {len(self.results)} results, not one")
        return self.results[0]


@dataclass(frozen=True)
class Func:
    """A function: arguments, result types and a flat, ordered list of ops ending in a return."""

    name: str
    args: tuple[Value, ...]
    result_types: tuple[Type, ...]
    ops: tuple[Op, ...]
    loc: Location = UNKNOWN_LOC


@dataclass(frozen=True)
class Module:
    """One model. `decls` are module-level ops (devices, policies); `funcs` hold the computation."""

    name: str
    decls: tuple[Op, ...] = ()
    funcs: tuple[Func, ...] = ()
    loc: Location = UNKNOWN_LOC
    source: str = field(default="", compare=False)  # text it was parsed from, for diagnostics

    def walk(self) -> Iterator[Op]:
        """Every op: declarations first, then each function's ops in order."""
        yield from self.decls
        for func in self.funcs:
            yield from func.ops

    def ops_of(self, op_type: type[Op]) -> list[Op]:
        return [op for op in self.walk() if isinstance(op, op_type)]
