"""The one printer of ndpc's IR text. `ndpc.ir.parser` reads back exactly what this writes.

Format (see docs/ir.md): MLIR-like generic op syntax,

    %h1 = moe.norm(%h0) {layer = 0, kind = rms, d_model = 2048} : (tensor<?x2048xbf16>) -> tensor<?x2048xbf16>

Attributes print generically from the dataclass fields, in declaration order, leaving out fields
equal to their default. A `ShardTable` prints as rows `[experts] = #tp<...>` grouping experts with
equal specs (expert sets spelled as slices `a:b:step`), so a whole model stays a few hundred lines;
`expand=True` prints one row per expert. Comments and text positions are not printed.
"""

from __future__ import annotations

import json
import re
from enum import Enum

from ndpc.ir.attrs import Attr, ShardTable
from ndpc.ir.core import Func, Location, Module, Op, SymbolRef, Value
from ndpc.ir.schema import Kind, field_specs
from ndpc.ir.types import TensorType, Type

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.]")


def print_module(module: Module, expand: bool = False) -> str:
    """The module as IR text (ends with a newline). `expand`: one shard-table row per expert."""
    return _Printer(expand).module(module)


def print_op(op: Op, expand: bool = False) -> str:
    """One op on its own, values named by their hints (for diagnostics and tests)."""
    return _Printer(expand).op(op, indent="")


def print_type(ty: Type) -> str:
    """The textual spelling of a type: `tensor<?x2048xbf16>`, `!moe.route<k = 8, experts = 64>`."""
    if isinstance(ty, TensorType):
        dims = "".join(("?" if d is None else str(d)) + "x" for d in ty.shape)
        return f"tensor<{dims}{ty.dtype.value}>"
    params = _params(ty, lambda kind, v: _value(kind, v, None))
    return f"!moe.{type(ty).MNEMONIC}<{params}>"


def print_attr(attr: Attr, expand: bool = False) -> str:
    """The textual spelling of a structured attribute (`#ffn<...>`, `#shards<...>`)."""
    return _value(Kind("attr", type(attr)), attr, _Printer(expand))


def expert_set(ids: list[int]) -> str:
    """Spell a sorted expert-id list compactly: `0:4, 9, 12:64:4` (Python slice notation)."""
    parts: list[str] = []
    i, n = 0, len(ids)
    while i < n:
        j = i
        if i + 1 < n:
            step = ids[i + 1] - ids[i]
            while j + 1 < n and ids[j + 1] - ids[j] == step:
                j += 1
            count = j - i + 1
            if step == 1 and count >= 2:
                parts.append(f"{ids[i]}:{ids[j] + 1}")
                i = j + 1
                continue
            if count >= 3:
                parts.append(f"{ids[i]}:{ids[j] + 1}:{step}")
                i = j + 1
                continue
        parts.append(str(ids[i]))
        i += 1
    return ", ".join(parts)


def _loc_suffix(loc: Location) -> str:
    return f" loc({json.dumps(loc.name)})" if loc.name is not None else ""


def _params(obj: object, show) -> str:
    """`name = value` pairs of a dataclass's fields, defaults left out."""
    parts = []
    for spec in field_specs(type(obj)):
        value = getattr(obj, spec.name)
        if spec.kind.tag == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # an int in a float field prints (and re-parses) as a float
        if not spec.required and _same(value, spec.default):
            continue
        parts.append(f"{spec.name} = {show(spec.kind, value)}")
    return ", ".join(parts)


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def _value(kind: Kind, value: object, printer: _Printer | None) -> str:
    """Print one attribute value according to its field kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, SymbolRef):
        return f"@{value.name}"
    if value is None:
        return "none"
    if isinstance(value, Type):
        return print_type(value)
    if isinstance(value, tuple):
        inner = kind.inner if kind.inner is not None else Kind("int")
        return "[" + ", ".join(_value(inner, v, printer) for v in value) + "]"
    if isinstance(value, ShardTable):
        return (printer or _Printer(False)).shard_table(value)
    if isinstance(value, Attr):
        params = _params(value, lambda k, v: _value(k, v, printer))
        return f"#{type(value).MNEMONIC}<{params}>"
    raise TypeError(f"cannot print attribute value {value!r}")


class _Printer:
    """Printing state: value names of the current function and the indentation of the op."""

    def __init__(self, expand: bool):
        self.expand = expand
        self.names: dict[Value, str] = {}
        self.taken: set[str] = set()
        self.counter = 0
        self.indent = ""

    # --- values ----------------------------------------------------------------------------

    def define(self, value: Value) -> str:
        """Give a new value a unique name: its hint, deduplicated with `_N`, or a number."""
        hint = _NAME_CHARS.sub("_", value.name_hint) if value.name_hint else ""
        if hint:
            name, n = hint, 0
            while name in self.taken:
                n += 1
                name = f"{hint}_{n}"
        else:
            while str(self.counter) in self.taken:
                self.counter += 1
            name = str(self.counter)
        self.taken.add(name)
        self.names[value] = name
        return "%" + name

    def use(self, value: Value) -> str:
        name = self.names.get(value)
        if name is None:  # not defined in this function: the verifier reports it; print its hint
            return "%" + (_NAME_CHARS.sub("_", value.name_hint or "") or "undefined")
        return "%" + name

    # --- structure -------------------------------------------------------------------------

    def module(self, module: Module) -> str:
        lines = [f"moe.module @{module.name}{_loc_suffix(module.loc)} {{"]
        for op in module.decls:
            lines.append(self.op(op, "  "))
        for func in module.funcs:
            if len(lines) > 1:
                lines.append("")
            lines.extend(self.func(func))
        lines.append("}")
        return "\n".join(lines) + "\n"

    def func(self, func: Func) -> list[str]:
        self.names, self.taken, self.counter = {}, set(), 0
        args = ", ".join(f"{self.define(a)}: {print_type(a.type)}" for a in func.args)
        results = ", ".join(print_type(t) for t in func.result_types)
        lines = [f"  moe.func @{func.name}({args}) -> ({results}){_loc_suffix(func.loc)} {{"]
        layer = None
        for op in func.ops:
            op_layer = getattr(op, "layer", None)
            if op_layer is not None and layer is not None and op_layer != layer:
                lines.append("")  # a blank line between decoder layers, for the reader
            if op_layer is not None:
                layer = op_layer
            lines.append(self.op(op, "    "))
        lines.append("  }")
        return lines

    def op(self, op: Op, indent: str) -> str:
        self.indent = indent
        operands = ", ".join(self.use(v) for v in op.operands)
        text = op.OP_NAME
        if op.results:
            text = ", ".join(self.define(v) for v in op.results) + " = " + text
        if op.operands or op.results:
            text += f"({operands})"
        attrs = _params(op, lambda kind, v: _value(kind, v, self))
        if attrs:
            text += f" {{{attrs}}}"
        if op.operands or op.results:
            in_types = ", ".join(print_type(v.type) for v in op.operands)
            out = [print_type(v.type) for v in op.results]
            out_types = out[0] if len(out) == 1 else "(" + ", ".join(out) + ")"
            text += f" : ({in_types}) -> {out_types}"
        return indent + text + _loc_suffix(op.loc)

    def shard_table(self, table: ShardTable) -> str:
        """`#shards<[0:128] = #tp<...>>`; several rows go one per line."""
        if self.expand:
            rows = [(str(i), spec) for i, spec in enumerate(table.specs)]
        else:
            groups: dict[object, list[int]] = {}
            for i, spec in enumerate(table.specs):
                groups.setdefault(spec, []).append(i)
            rows = [(expert_set(ids), spec) for spec, ids in groups.items()]
        spelled = [f"[{ids}] = {_value(Kind('attr', type(s)), s, self)}" for ids, s in rows]
        if len(spelled) <= 1:
            return "#shards<" + "".join(spelled) + ">"
        inner = self.indent + "  "
        body = ",\n".join(inner + row for row in spelled)
        return f"#shards<\n{body}\n{self.indent}>"
