"""The pass interface: `ModulePass` (a named, typed Module -> Module transform) and `PassContext`.

A pass is a frozen dataclass: its fields are its options (`tp-split{units=4}` sets `units`), its
`name` ClassVar is the kebab-case name in pipelines, and the first line of its docstring is what
`ndpc passes` shows. A pass never mutates its input; it returns a new `Module` (usually built with
`dataclasses.replace`). Options are declared with `option(default, doc, lo=, hi=)`: the doc is what
`ndpc passes` shows, `lo`/`hi` the inclusive range every numeric value must lie in (floats must
also be finite); enum-typed options take one of the enum's values. The pipeline parser checks each
option as it reads it (error at its column); constructing a pass in code checks them too. An option
whose value is None means "derive it from the target" (spelled `auto`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

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


MAX_UNITS = 64  # as the target schema's ndp.units
MAX_COUNT = (1 << 31) - 1  # steps, tokens, counts: anything larger is no run we could simulate
MAX_GIB = float(1 << 20)  # 1 PiB: a budget beyond any GPU memory
MAX_FLOAT = 1e9  # thresholds and margins: finite and far from float overflow


def option(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None) -> Any:
    """A pass option field: its default, its `ndpc passes` doc and its inclusive value range."""
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi})


def check_option(fld: dataclasses.Field, value: Any) -> None:
    """ValueError (what is wrong, without the option's name) unless `value` suits `fld`."""
    if value is None or isinstance(value, bool | str | Enum):
        return
    if isinstance(value, tuple):
        for item in value:
            check_option(fld, item)
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    lo, hi = fld.metadata.get("lo"), fld.metadata.get("hi")
    if isinstance(value, float) and hi is None:
        hi = MAX_FLOAT
    if lo is not None and value < lo:
        raise ValueError(f"must be >= {_num(lo)}, got {_num(value)}")
    if hi is not None and value > hi:
        raise ValueError(f"must be <= {_num(hi)}, got {_num(value)}")


def _num(value: float) -> str:
    """A bound or value as a user wrote it: 1048576, 0.5, 1e+308; long integers cut short."""
    if isinstance(value, int):
        text = str(value)
    else:
        text = str(int(value)) if value.is_integer() and abs(value) < 1e16 else f"{value:g}"
    return text if len(text) <= 24 else f"{text[:20]}..."


@dataclass(frozen=True)
class ModulePass(ABC):
    """A named transformation Module -> Module; its options are the dataclass fields.

    Contract: the input module verifies and is not mutated; the returned module must verify (the
    pass manager checks it after every pass unless told not to).
    """

    name: ClassVar[str]
    # What the pipeline checker (`check_needs`) knows of a pass before it runs: whether it needs
    # `moe.expert_shards` in its input, and whether it produces them.
    needs_shards: ClassVar[bool] = False
    makes_shards: ClassVar[bool] = False
    # Where the pass was spelled in a pipeline string (set by the parser; no option, not compared):
    # errors a pass raises without a location of their own are reported there.
    where: Location | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for fld in self.option_fields():
            value = getattr(self, fld.name)
            enum = _enum_of(type(self), fld.name)
            if enum is not None and value is not None and not isinstance(value, enum):
                choices = ", ".join(m.value for m in enum)
                raise ValueError(f"option '{fld.name}' must be one of {choices}, got {value!r}")
            try:
                check_option(fld, value)
            except ValueError as err:
                raise ValueError(f"option '{fld.name.replace('_', '-')}' {err}") from None

    def needs_target(self) -> str | None:
        """None if this pass, with these options, runs without a target; else the options that
        would spare it (e.g. "units=N"), so a pipeline is refused before any pass runs. Passes
        whose `auto` options come from the target override this."""
        return None

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


@functools.cache
def _enum_of(cls: type, name: str) -> type[Enum] | None:
    """The Enum an option field holds (`X` or `X | None`), or None."""
    hint = typing.get_type_hints(cls)[name]
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and issubclass(arg, Enum):
            return arg
    return None
