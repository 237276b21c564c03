"""Helpers for passes that rewrite a function's op list (the IR is immutable: they build new ops).

A pass that replaces an op's result records `old -> new` in a `mapping`; later ops read the new
value through `replace_uses` / `replace_uses_iter`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from ndpc.ir.core import Op, Value


def replace_uses(op: Op, mapping: dict[Value, Value]) -> Op:
    """`op` with every operand found in `mapping` replaced (the same object when none is)."""
    if any(v in mapping for v in op.operands):
        op = dataclasses.replace(op, operands=tuple(mapping.get(v, v) for v in op.operands))
    return op


def replace_uses_iter(ops: Iterable[Op], mapping: dict[Value, Value]) -> Iterator[Op]:
    """Yield `ops` with operands rewritten through `mapping`, which may grow while iterating."""
    for op in ops:
        yield replace_uses(op, mapping)
