"""The pass interface: `ModulePass` (a named, typed Module -> Module transform) and `PassContext`.

A pass is a frozen dataclass: its fields are its options (`tp-split{units=4}` sets `units`), its
`name` ClassVar is the kebab-case name in pipelines, and the first line of its docstring is what
`ndpc passes` shows. A pass never mutates its input; it returns a new `Module` (usually built with
`dataclasses.replace`). Option docs come from field metadata: `field(default=..., metadata={"doc":
"..."})`. An option whose value is None means "derive it from the target" (spelled `auto`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from ndpc.backends.cost import CostModel
from ndpc.backends.target import Target
from ndpc.ir.core import Location, Module
from ndpc.ir.diagnostics import NdpcError


@dataclass
class Diagnostic:
    """A warning or remark a pass reports without failing."""

    severity: str  # "warning" or "remark"
    message: str
    loc: Location | None = None

    def render(self) -> str:
        where = f"{self.loc}: " if self.loc is not None else ""
        return f"{where}{self.severity}: {self.message}"


@dataclass(frozen=True)
class PassContext:
    """Read-only inputs every pass may consult, and the sink for its warnings.

    `target` is None when compiling without one, and then `cost` (the cost model over it) is
    None too; `seed` seeds any randomness a pass uses.
    """

    target: Target | None = None
    cost: CostModel | None = None
    seed: int = 0
    diagnostics: list[Diagnostic] = field(default_factory=list, compare=False)

    def warn(self, message: str, loc: Location | None = None) -> None:
        """Record a warning (printed by the driver on stderr; never fails the pipeline)."""
        self.diagnostics.append(Diagnostic("warning", message, loc))

    def require_target(self, pass_name: str) -> Target:
        """The target, or an NdpcError telling the user to pass --target."""
        if self.target is None:
            raise NdpcError(f"pass '{pass_name}' needs a target (use --target)")
        return self.target


@dataclass(frozen=True)
class ModulePass(ABC):
    """A named transformation Module -> Module; its options are the dataclass fields.

    Contract: the input module verifies and is not mutated; the returned module must verify (the
    pass manager checks it after every pass unless told not to).
    """

    name: ClassVar[str]

    @abstractmethod
    def run(self, module: Module, ctx: PassContext) -> Module:
        """Transform `module`; raise NdpcError (at an op's location) when it cannot."""

    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring: the pass's one-line description."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def option_fields(cls) -> tuple[dataclasses.Field, ...]:
        """The option fields, in declaration order."""
        return tuple(f for f in dataclasses.fields(cls) if f.init)
