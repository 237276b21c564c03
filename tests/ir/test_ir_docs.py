"""docs/ir.md documents every op, type, attribute and enum value the IR has."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest

import ndpc.ir.attrs
from ndpc.ir.ops import OPS
from ndpc.ir.parser import DIALECT_TYPES
from ndpc.ir.types import DType

DOC = (Path(__file__).resolve().parents[2] / "docs" / "ir.md").read_text()
ENUMS = [
    c
    for c in vars(ndpc.ir.attrs).values()
    if isinstance(c, type) and issubclass(c, enum.Enum) and c.__module__ == "ndpc.ir.attrs"
]
ATTRS = [
    c
    for c in vars(ndpc.ir.attrs).values()
    if isinstance(c, type) and issubclass(c, ndpc.ir.attrs.Attr) and c is not ndpc.ir.attrs.Attr
]


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_is_documented_with_an_example(name):
    assert f"`{name}`" in DOC
    assert f"{name}(" in DOC or f"{name} {{" in DOC, f"no example of {name}"


@pytest.mark.parametrize("cls", ATTRS, ids=lambda c: c.__name__)
def test_every_attribute_is_documented(cls):
    assert f"#{cls.MNEMONIC}<" in DOC and cls.__name__ in DOC


@pytest.mark.parametrize("mnemonic", sorted(DIALECT_TYPES))
def test_every_type_is_documented(mnemonic):
    assert f"!moe.{mnemonic}<" in DOC


@pytest.mark.parametrize("cls", [*ENUMS, DType], ids=lambda c: c.__name__)
def test_every_enum_value_is_documented(cls):
    missing = [m.value for m in cls if f"`{m.value}`" not in DOC]
    assert not missing, f"{cls.__name__}: {missing}"
