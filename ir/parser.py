"""Parse ndpc's IR text (ir/grammar.lark, LALR) back into a `Module`.

Every failure, syntax or meaning, raises `NdpcError` at `FILE:LINE:COL` with the source line and a
caret; no other exception escapes on bad input. Op and attribute fields are read generically from
their dataclass annotations (`ndpc.ir.schema`), mirroring `ndpc.ir.printer`.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ndpc.ir.attrs import ShardTable
from ndpc.ir.core import Func, Location, Module, Op, SymbolRef, Value
from ndpc.ir.diagnostics import NdpcError, read_source
from ndpc.ir.lexer import IrLexer
from ndpc.ir.ops import OPS
from ndpc.ir.printer import print_type
from ndpc.ir.schema import Kind, field_specs
from ndpc.ir.types import DistributedType, DType, KvCacheType, RouteType, TensorType, Type

_LARK = Lark(
    (Path(__file__).parent / "grammar.lark").read_text(),
    parser="lalr",
    lexer=IrLexer,  # one C-level regex per token: ~2x faster than lark's contextual lexer
    maybe_placeholders=True,  # positions come from tokens: propagate_positions doubles parse time
    cache=True,  # the compiled LALR tables, kept in the temp dir (keyed by grammar + lark version)
)

DIALECT_TYPES: dict[str, type[Type]] = {
    cls.MNEMONIC: cls for cls in (RouteType, KvCacheType, DistributedType)
}

# Readable names of the grammar's terminals, for "expected ..." in syntax errors.
_TERMINAL_NAMES = {
    "VALUE": "a value (%name)",
    "SYMBOL": "a symbol (@name)",
    "OP_NAME": "an op name (moe.xxx)",
    "ATTR_NAME": "an attribute (#name<...>)",
    "TYPE_NAME": "a type (!moe.xxx<...>)",
    "TENSOR_TYPE": "a tensor type",
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "$END": "end of input",
}


def parse_module(text: str, filename: str = "<string>") -> Module:
    """Parse IR text into a Module; raise NdpcError (`FILE:LINE:COL: error: ...`) on bad input."""
    with _gc_paused():
        try:
            tree = _LARK.parse(text)
        except UnexpectedInput as err:
            raise _syntax_error(err, text, filename) from None
        except LarkError as err:  # defensive: any other lark failure is still a parse error
            raise NdpcError(f"cannot parse IR: {err}", Location(filename, 1, 1), text) from None
        try:
            return _Reader(filename, text).module(tree.children[0])
        except RecursionError:
            raise NdpcError("IR nested too deeply", Location(filename, 1, 1), text) from None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: parsing builds many acyclic objects, and collections scanning the
    growing tree made parse time superlinear (2x slower at 1 MB). Reference counting still frees
    everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


MAX_IR_BYTES = 64 << 20  # the largest zoo model printed with --expand is ~2 MB


def parse_file(path: str | Path) -> Module:
    """Read and parse an `.ndpir` file (`-` reads standard input)."""
    if str(path) == "-":
        text = sys.stdin.read(MAX_IR_BYTES + 1)
        if len(text) > MAX_IR_BYTES:
            raise NdpcError(f"<stdin>: IR larger than the {MAX_IR_BYTES >> 20} MiB limit")
        return parse_module(text, "<stdin>")
    return parse_module(read_source(path, MAX_IR_BYTES, "IR file"), str(path))


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`; did you mean 'x'?` when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        pattern = _LARK.get_terminal(name).pattern
    except KeyError:
        return name
    return f"'{pattern.value}'" if pattern.type == "str" else name


def _syntax_error(err: UnexpectedInput, text: str, filename: str) -> NdpcError:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedToken):
        expected = sorted({_describe_terminal(t) for t in err.expected})
        if err.token.type == "$END":
            found = "end of input"
            lines = text.splitlines() or [""]
            line, col = len(lines), len(lines[-1]) + 1
        else:
            found = f"'{err.token.value}'"
        message = f"unexpected {found}; expected " + _or_list(expected)
    elif isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        message = f"unexpected character {char!r}"
    else:
        message = "unexpected end of input"
    return NdpcError(message, Location(filename, line, col), text)


def _or_list(items: list[str]) -> str:
    if len(items) > 6:
        items = items[:6] + ["..."]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


class _Reader:
    """Turns the lark tree into IR, resolving value names per function."""

    def __init__(self, filename: str, text: str):
        self.filename = filename
        self.text = text
        self.scope: dict[str, tuple[Value, Token]] = {}

    def error(self, message: str, node: Tree | Token | None) -> NdpcError:
        return NdpcError(message, self.position(node), self.text)

    def position(self, node: Tree | Token | None, name: str | None = None) -> Location:
        token = _first_token(node)
        line = col = 0
        if token is not None:
            line, col = token.line or 0, token.column or 0
        return Location(self.filename, line, col, name)

    # --- structure -------------------------------------------------------------------------

    def module(self, tree: Tree) -> Module:
        sym, loc, *items = tree.children
        decls: list[Op] = []
        funcs: list[Func] = []
        for item in items:
            if item.data == "func":
                funcs.append(self.func(item))
            else:
                self.scope = {}
                decls.append(self.op(item))
        return Module(
            name=sym[1:],
            decls=tuple(decls),
            funcs=tuple(funcs),
            loc=self.location(tree, loc),
            source=self.text,
        )

    def location(self, node: Tree | Token, loc: Tree | None) -> Location:
        name = None
        if loc is not None:
            name = self.string(loc.children[0])
        return self.position(node, name)

    def func(self, tree: Tree) -> Func:
        sym, *rest = tree.children
        self.scope = {}
        args: list[Value] = []
        index = 0
        while index < len(rest) and (rest[index] is None or rest[index].data == "arg"):
            if rest[index] is not None:
                args.append(
                    self.define(rest[index].children[0], self.type(rest[index].children[1]))
                )
            index += 1
        result_types = self.type_tuple(rest[index])
        loc = rest[index + 1]
        ops = tuple(self.op(op) for op in rest[index + 2 :])
        return Func(sym[1:], tuple(args), result_types, ops, self.location(tree, loc))

    def define(self, token: Token, ty: Type) -> Value:
        name = token[1:]
        if name in self.scope:
            first = self.scope[name][1]
            raise self.error(f"value %{name} is already defined (at line {first.line})", token)
        value = Value(ty, name)
        self.scope[name] = (value, token)
        return value

    def use(self, token: Token) -> Value:
        entry = self.scope.get(token[1:])
        if entry is None:
            hint = did_you_mean(token[1:], list(self.scope))
            raise self.error(f"use of undefined value {token}{hint}", token)
        return entry[0]

    # --- ops -------------------------------------------------------------------------------

    def op(self, tree: Tree) -> Op:
        results, name, operands, attrs, signature, loc = tree.children
        cls = OPS.get(str(name))
        if cls is None:
            raise self.error(f"unknown op '{name}'{did_you_mean(name, list(OPS))}", name)
        operand_values = [self.use(t) for t in (operands.children if operands else []) if t]
        result_tokens = list(results.children) if results else []
        in_types, out_types = self.signature(signature, name)
        self.check_signature(name, operands, operand_values, in_types, result_tokens, out_types)
        fields = self.fields(cls, attrs, name, f"'{cls.OP_NAME}' op")
        result_values = [self.define(t, ty) for t, ty in zip(result_tokens, out_types, strict=True)]
        try:
            return cls(
                operands=tuple(operand_values),
                results=tuple(result_values),
                loc=self.location(tree, loc),
                **fields,
            )
        except (ValueError, TypeError) as err:
            raise self.error(f"invalid '{cls.OP_NAME}' op: {err}", tree) from None

    def signature(self, tree: Tree | None, name: Token) -> tuple[list[Type], list[Type]]:
        if tree is None:
            return [], []
        ins, outs = tree.children
        out_types = self.type_tuple(outs) if outs.data == "type_tuple" else (self.type(outs),)
        return list(self.type_tuple(ins)), list(out_types)

    def check_signature(self, name, operands, values, in_types, results, out_types) -> None:
        where = operands or name
        if len(values) != len(in_types):
            raise self.error(
                f"'{name}' has {len(values)} operands but its signature lists {len(in_types)} types",
                where,
            )
        tokens = [t for t in operands.children if t] if operands else []
        for i, (value, ty, token) in enumerate(zip(values, in_types, tokens, strict=True)):
            if value.type != ty:
                raise self.error(
                    f"operand #{i} {token} has type {_spell(value.type)}, "
                    f"but the signature says {_spell(ty)}",
                    token,
                )
        if len(results) != len(out_types):
            raise self.error(
                f"'{name}' defines {len(results)} results but its signature lists "
                f"{len(out_types)} types",
                results[0] if results else name,
            )

    def fields(self, cls: type, attrs: Tree | None, where: Token, what: str) -> dict[str, object]:
        """Read `{name = value, ...}` entries into constructor keywords for `cls`."""
        entries = [e for e in (attrs.children if attrs else []) if e is not None]
        return self.entries(cls, entries, where, what)

    def entries(self, cls: type, entries: list[Tree], where, what: str) -> dict[str, object]:
        specs = {spec.name: spec for spec in field_specs(cls)}
        out: dict[str, object] = {}
        for entry in entries:
            if entry.data != "entry":
                raise self.error(f"{what} takes `name = value` entries", entry)
            key, value = entry.children
            spec = specs.get(str(key))
            if spec is None:
                hint = did_you_mean(key, list(specs))
                raise self.error(f"{what} has no attribute '{key}'{hint}", key)
            if spec.name in out:
                raise self.error(f"{what}: attribute '{key}' given twice", key)
            out[spec.name] = self.value(spec.kind, value, f"{what} attribute '{key}'")
        missing = [name for name, spec in specs.items() if spec.required and name not in out]
        if missing:
            raise self.error(f"{what} is missing attribute '{missing[0]}'", where)
        return out

    # --- values ----------------------------------------------------------------------------

    def value(self, kind: Kind, tree: Tree, what: str) -> object:
        """Convert one parsed value to the Python value a field of `kind` holds."""
        tag, data = kind.tag, tree.data
        token = tree.children[0] if tree.children else None
        if tag == "optional" and data == "kw_v" and token == "none":
            return None
        if tag == "optional":
            assert kind.inner is not None
            return self.value(kind.inner, tree, what)
        if tag == "int" and data == "int_v":
            return self.integer(token)
        if tag == "float" and data in ("int_v", "float_v"):
            return float(token)
        if tag == "bool" and data in ("true_v", "false_v"):
            return data == "true_v"
        if tag == "str" and data == "str_v":
            return self.string(token)
        if tag == "sym" and data == "sym_v":
            return SymbolRef(token[1:])
        if tag == "enum" and data == "kw_v":
            assert kind.cls is not None
            try:
                return kind.cls(str(token))
            except ValueError:
                pass
        if tag == "tuple" and data == "list_v":
            assert kind.inner is not None
            items = [c for c in tree.children if c is not None]
            return tuple(self.value(kind.inner, item, what) for item in items)
        if tag == "attr" and data == "attr_v":
            return self.attr(kind, tree, what)
        if tag == "type" and data in ("tensor_t", "dialect_t"):
            ty = self.type(tree)
            if kind.cls is None or isinstance(ty, kind.cls):
                return ty
        raise self.error(f"{what} must be {kind.describe()}", tree)

    def attr(self, kind: Kind, tree: Tree, what: str) -> object:
        cls = kind.cls
        assert cls is not None
        mnemonic, *params = tree.children
        if mnemonic[1:] != cls.MNEMONIC:
            raise self.error(f"{what} must be {kind.describe()}, not {mnemonic}<...>", mnemonic)
        params = [p for p in params if p is not None]
        if cls is ShardTable:
            return self.shard_table(params, tree, what)
        fields = self.entries(cls, params, mnemonic, mnemonic)
        try:
            return cls(**fields)
        except (ValueError, TypeError) as err:
            raise self.error(f"invalid {mnemonic}<...>: {err}", tree) from None

    def shard_table(self, rows: list[Tree], tree: Tree, what: str) -> ShardTable:
        """Rows `[0:8:2, 9] = #tp<...>`; every expert 0..n-1 must be given exactly once."""
        spec_kind = field_specs(ShardTable)[0].kind.inner
        assert spec_kind is not None
        specs: dict[int, object] = {}
        for row in rows:
            if row.data != "shard_row":
                raise self.error("#shards<...> takes rows `[experts] = #tp<...>`", row)
            *slices, value = row.children
            spec = self.value(spec_kind, value, "shard table row")
            for item in slices:
                if item is None:
                    continue
                for expert in self.expert_slice(item):
                    if expert in specs:
                        raise self.error(f"expert {expert} appears twice in #shards<...>", item)
                    specs[expert] = spec
        missing = [e for e in range(len(specs)) if e not in specs]
        if missing:
            raise self.error(f"#shards<...> has no row for expert {missing[0]}", tree)
        return ShardTable(tuple(specs[e] for e in range(len(specs))))  # type: ignore[misc]

    def expert_slice(self, tree: Tree) -> range:
        start, stop, step = (self.integer(t) if t is not None else None for t in tree.children)
        assert start is not None
        if stop is None:
            if start < 0:
                raise self.error("expert ids are non-negative", tree)
            return range(start, start + 1)
        step = 1 if step is None else step
        if start < 0 or stop <= start or step <= 0:
            raise self.error(f"bad expert range {start}:{stop}:{step}", tree)
        if stop - start > 1 << 20:
            raise self.error(f"expert range {start}:{stop} is implausibly large", tree)
        return range(start, stop, step)

    def type_tuple(self, tree: Tree) -> tuple[Type, ...]:
        return tuple(self.type(c) for c in tree.children if c is not None)

    def type(self, tree: Tree) -> Type:
        token = tree.children[0]
        if tree.data == "tensor_t":
            *dims, dtype = token[len("tensor<") : -1].split("x")
            try:
                shape = tuple(None if d == "?" else int(d) for d in dims)
                return TensorType(shape, DType(dtype))
            except ValueError:
                choices = ", ".join(d.value for d in DType)
                raise self.error(
                    f"bad tensor type {token} (element types: {choices})", token
                ) from None
        cls = DIALECT_TYPES.get(token[len("!moe.") :])
        if cls is None:
            hint = did_you_mean(token, [f"!moe.{m}" for m in DIALECT_TYPES])
            raise self.error(f"unknown type {token}{hint}", token)
        entries = [e for e in tree.children[1:] if e is not None]
        fields = self.entries(cls, entries, token, token)
        try:
            return cls(**fields)
        except (ValueError, TypeError) as err:
            raise self.error(f"invalid {token}<...>: {err}", tree) from None

    def integer(self, token: Token) -> int:
        if len(token) > 40:  # also keeps int() clear of Python's digit limit
            raise self.error(f"integer {token[:20]}... is too large", token)
        return int(token)

    def string(self, token: Token) -> str:
        try:
            value = json.loads(token)
        except ValueError:
            raise self.error(f"bad string literal {token}", token) from None
        if any("\ud800" <= ch <= "\udfff" for ch in value):  # "\ud83d" alone: no text can hold it
            raise self.error(f"string literal {token[:40]} escapes a lone surrogate", token)
        return value


def _first_token(node: Tree | Token | None) -> Token | None:
    """The first token under `node` (its position is the node's position)."""
    while isinstance(node, Tree):
        node = next((c for c in node.children if c is not None), None)
    return node


def _spell(ty: Type) -> str:
    return print_type(ty)
