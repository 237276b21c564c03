"""What kind of value each dataclass field holds, read from the type annotations.

The printer, the parser and the verifier are generic over ops, attributes and types: they walk
`dataclasses.fields` and ask this module what each field's annotation means (an int, an enum, a
tuple of ints, a structured attribute, ...). Adding a field to an op needs no printer change.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import MISSING, dataclass
from enum import Enum

from ndpc.ir.core import SymbolRef
from ndpc.ir.types import Type


@dataclass(frozen=True)
class Kind:
    """A field's value kind: `tag` is one of int, float, bool, str, enum, sym, attr, type, tuple,
    optional; `cls` is the enum/attr/type class, `inner` the element kind of tuple/optional."""

    tag: str
    cls: type | None = None
    inner: Kind | None = None

    def describe(self) -> str:
        """Human spelling for error messages ('an integer', 'one of (a, b)', ...)."""
        if self.tag == "enum":
            assert self.cls is not None
            return "one of (" + ", ".join(m.value for m in self.cls) + ")"
        if self.tag == "tuple":
            assert self.inner is not None
            return f"a list of {self.inner.describe()}"
        if self.tag == "optional":
            assert self.inner is not None
            return f"{self.inner.describe()} or none"
        if self.tag in ("attr", "type") and self.cls is not None:
            mnemonic = getattr(self.cls, "MNEMONIC", self.cls.__name__)
            prefix = "#" if self.tag == "attr" else "!moe."
            return f"a {prefix}{mnemonic}<...>"
        return _DESCRIBE[self.tag]


_DESCRIBE = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "sym": "a symbol (@name)",
    "type": "a type",
    "attr": "an attribute",
}


@dataclass(frozen=True)
class FieldSpec:
    """One dataclass field: its name, value kind and default (MISSING when required)."""

    name: str
    kind: Kind
    default: object = MISSING

    @property
    def required(self) -> bool:
        return self.default is MISSING


_SKIP = frozenset({"operands", "results", "loc"})


def kind_of(annotation: object) -> Kind:
    """Map a resolved annotation (`int`, `tuple[int, ...]`, `DType`, `int | None`) to a Kind."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        args = typing.get_args(annotation)
        return Kind("tuple", inner=kind_of(args[0]))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return Kind("optional", inner=kind_of(args[0]))
        if all(isinstance(a, type) and issubclass(a, Type) for a in args):
            return Kind("type")
        raise TypeError(f"unsupported union annotation {annotation!r}")
    if annotation in (int, float, bool, str):
        return Kind(annotation.__name__)  # type: ignore[union-attr]
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return Kind("enum", annotation)
        if issubclass(annotation, SymbolRef):
            return Kind("sym")
        if issubclass(annotation, Type):
            return Kind("type", annotation if annotation is not Type else None)
        if dataclasses.is_dataclass(annotation) and hasattr(annotation, "MNEMONIC"):
            return Kind("attr", annotation)
    raise TypeError(f"unsupported field annotation {annotation!r}")


@functools.cache
def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The printable fields of an op, attribute or type class, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in _SKIP:
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        out.append(FieldSpec(f.name, kind_of(hints[f.name]), default))
    return tuple(out)


def check_value(kind: Kind, value: object) -> bool:
    """Whether `value` is a well-typed Python value for `kind` (used by the verifier)."""
    tag = kind.tag
    if tag == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if tag == "float":
        return isinstance(value, float | int) and not isinstance(value, bool)
    if tag == "bool":
        return isinstance(value, bool)
    if tag == "str":
        return isinstance(value, str)
    if tag == "sym":
        return isinstance(value, SymbolRef)
    if tag == "type":
        return isinstance(value, kind.cls or Type)
    if tag in ("enum", "attr"):
        assert kind.cls is not None
        return isinstance(value, kind.cls)
    assert kind.inner is not None
    if tag == "optional":
        return value is None or check_value(kind.inner, value)
    return isinstance(value, tuple) and all(check_value(kind.inner, v) for v in value)
