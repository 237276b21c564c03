"""Op signatures: the operand and result types an op takes, declared on the op class.

Each op class in `ndpc.ir.ops` sets `SIGNATURE = Signature(operands=..., results=...)`, one
constraint per position (`Is(TensorType)`: the value's type is a tensor; `SameAs(0)`: the same type
as operand #0), as xDSL ops declare `operand_def`/`result_def`. The verifier checks every op against
its signature first (counts, then `same`, then each position in order); `ndpc.ir.verifier_rules`
keeps only the checks a signature cannot state, those that relate types to attributes
(`d_model`, route `k`/`experts`, broadcast `units`) or to other ops (layer of a route).
"""

from __future__ import annotations

from dataclasses import dataclass

from ndpc.ir.types import Type


@dataclass(frozen=True)
class Is:
    """The value's type is a `cls` (`TensorType`, `RouteType`, ...); `name` is how errors call
    the value (default: "the operand", "operand #i" or "the result")."""

    cls: type[Type]
    name: str = ""

    def describe(self) -> str:
        return self.cls.__name__


@dataclass(frozen=True)
class SameAs:
    """The value's type equals that of operand #`operand`."""

    operand: int = 0

    def describe(self) -> str:
        return f"type of operand #{self.operand}"


Constraint = Is | SameAs


@dataclass(frozen=True)
class Signature:
    """Operand and result constraints of an op. `operands = None`: any number of operands of any
    type (`moe.return`, whose operands are the function's results). `same`: operands and results
    all have one type."""

    operands: tuple[Is, ...] | None
    results: tuple[Constraint, ...]
    same: bool = False

    def describe(self) -> str:
        """`(TensorType, RouteType) -> (type of operand #0)`: the form docs/ir.md uses."""
        ins = "..." if self.operands is None else ", ".join(c.describe() for c in self.operands)
        outs = ", ".join(c.describe() for c in self.results)
        return f"({ins}) -> ({outs})" + (", all one type" if self.same else "")


NO_VALUES = Signature(operands=(), results=())  # module-level declarations
