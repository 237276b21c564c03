"""The IR verifier: checks every invariant of a module and reports the first violation at the op.

`verify(module)` raises `NdpcError` located at the offending op (its text position, or its named
origin plus the printed op). The invariants are listed, one per bullet, in docs/ir.md
("Invariants"); each check below says which one it enforces.
"""

from __future__ import annotations

import math
import re

from ndpc.ir import ops as o
from ndpc.ir.attrs import ShardTable
from ndpc.ir.core import Func, Module, Op, SymbolRef, Value
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.printer import print_op, print_type
from ndpc.ir.schema import Kind, check_value, field_specs
from ndpc.ir.signature import SameAs, Signature
from ndpc.ir.types import DistributedType, DType, KvCacheType, RouteType, TensorType, Type
from ndpc.ir.verifier_rules import OP_CHECKS

SYMBOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
DECL_OPS = (o.DeviceOp, o.PrefetchPolicyOp, o.ResidentOp)

# Op fields that must be > 0 / >= 0 wherever they appear.
_POSITIVE = {"vocab", "d_model", "heads", "kv_heads", "head_dim", "experts", "count"}
_NON_NEGATIVE = {"index", "kv_lora_rank", "layer"}
# Sizes and ids (also inside attributes and types) stay <= MAX_SIZE: larger ones describe no model
# (the largest vocabularies are ~2^18) and only turn the cost model's products into nonsense.
MAX_SIZE = 1 << 20
_SIZES = _POSITIVE | _NON_NEGATIVE | {"d_ff", "k", "groups", "topk_groups", "degree", "units"}
# Every other integer (byte budgets, counts, intervals) stays exact as a float: |v| <= 2^53.
MAX_INT = 1 << 53


def verify(module: Module) -> None:
    """Raise NdpcError at the first op that breaks an IR invariant; return None if valid."""
    _Verifier(module).run()


class _Verifier:
    """One verification run: module-level facts (devices, MoE layers) and per-op checks."""

    def __init__(self, module: Module):
        self.module = module
        self.devices: dict[str, o.DeviceOp] = {}
        self.ndp_units: set[int] = set()
        self.defined: set[Value] = set()
        self.layer_experts: dict[int, int] = {}  # MoE layer -> expert count (from routers)
        self.producer: dict[Value, Op] = {}

    def fail(self, op: Op | None, message: str) -> NdpcError:
        if op is None:
            return NdpcError(message, self.module.loc, self.module.source or None)
        name = f"'{op.OP_NAME}' op "
        if op.loc.line <= 0:  # no text position: show the op itself
            message += f"\n  in: {print_op(op)}"
        return NdpcError(name + message, op.loc, self.module.source or None)

    def fail_at(self, loc, message: str) -> NdpcError:
        """An error at a function's or the module's location."""
        return NdpcError(message, loc, self.module.source or None)

    def run(self) -> None:
        if not SYMBOL_NAME.match(self.module.name):
            raise self.fail(None, f"bad module name '{self.module.name}'")
        for op in self.module.walk():
            self.check_fields(op)
        self.check_decls()
        seen: set[str] = set()
        for func in self.module.funcs:
            if func.name in seen:
                raise self.fail_at(func.loc, f"function @{func.name} is defined twice")
            seen.add(func.name)
            self.collect_layers(func)
        for func in self.module.funcs:
            self.check_func(func)
        for op in self.module.decls:
            if isinstance(op, o.ResidentOp):
                self.check_resident(op)

    # --- generic field checks ----------------------------------------------------------------

    def check_fields(self, op: Op) -> None:
        """Every attribute holds a value of its declared kind, in range, floats finite."""
        for spec in field_specs(type(op)):
            value = getattr(op, spec.name)
            if not check_value(spec.kind, value):
                raise self.fail(op, f"attribute '{spec.name}' must be {spec.kind.describe()}")
            self.check_nested(op, spec.name, spec.kind, value)
            if spec.kind.tag != "int":
                continue
            if spec.name in _POSITIVE and value <= 0:
                raise self.fail(op, f"attribute '{spec.name}' must be positive, got {value}")
            low = -1 if isinstance(op, o.NormOp) and spec.name == "layer" else 0
            if spec.name in _NON_NEGATIVE and value < low:
                raise self.fail(op, f"attribute '{spec.name}' must be >= {low}, got {value}")
        for value in (*op.operands, *op.results):
            if not isinstance(value, Value) or not isinstance(value.type, Type):
                raise self.fail(op, "operands and results must be typed SSA values")
            self.check_type(op, value.type)

    def check_nested(self, op: Op, name: str, kind: Kind, value: object) -> None:
        """Floats are finite, integers in range and symbols well-formed, also inside attributes
        and lists (`name` is the dotted path of the field, e.g. `ffn.d_model`)."""
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(op, f"attribute '{name}' must be finite, got {value}")
        if isinstance(value, int) and not isinstance(value, bool):
            self.check_int(op, name, value)
        if isinstance(value, SymbolRef) and not SYMBOL_NAME.match(value.name):
            raise self.fail(op, f"attribute '{name}' is a bad symbol name '{value.name}'")
        if isinstance(value, tuple):
            for item in value:
                self.check_nested(op, name, kind.inner or kind, item)
        elif kind.tag == "attr" and not isinstance(value, ShardTable):
            for spec in field_specs(type(value)):
                self.check_nested(op, f"{name}.{spec.name}", spec.kind, getattr(value, spec.name))
        elif isinstance(value, ShardTable):
            for row in value.specs:
                self.check_nested(op, f"{name}.units", Kind("tuple"), row.units)
                self.check_nested(op, f"{name}.degree", Kind("int"), row.degree)

    def check_int(self, op: Op, name: str, value: int) -> None:
        leaf = name.rsplit(".", 1)[-1]
        limit = MAX_SIZE if leaf in _SIZES else MAX_INT
        if abs(value) > limit:
            shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:20]}..."
            raise self.fail(
                op, f"attribute '{name}' is out of range (|{leaf}| <= {limit}), got {shown}"
            )

    def check_type(self, op: Op, ty: Type) -> None:
        bad = None
        sizes = [v for v in vars(ty).values() if isinstance(v, int) and not isinstance(v, bool)]
        if isinstance(ty, TensorType):
            sizes = [d for d in ty.shape if d is not None]
        if any(not 0 <= size <= MAX_SIZE for size in sizes):
            bad = f"sizes must be in 0..{MAX_SIZE}, got {_spell(ty)}"
        elif isinstance(ty, TensorType):
            if not isinstance(ty.dtype, DType):
                bad = "tensor element type"
        elif isinstance(ty, RouteType):
            if not 0 < ty.k <= ty.experts:
                bad = f"route type needs 0 < k <= experts, got k = {ty.k}, experts = {ty.experts}"
        elif isinstance(ty, KvCacheType):
            if ty.kv_heads <= 0 or ty.head_dim <= 0:
                bad = "kv cache type needs positive kv_heads and head_dim"
        elif isinstance(ty, DistributedType) and ty.units <= 0:
            bad = "distributed type needs units > 0"
        if bad:
            raise self.fail(op, f"bad type: {bad}")

    # --- module-level declarations ------------------------------------------------------------

    def check_decls(self) -> None:
        """Declarations: devices unique by symbol and index; one prefetch policy; no SSA values."""
        policies = 0
        for op in self.module.decls:
            if not isinstance(op, DECL_OPS):
                raise self.fail(op, "cannot appear at module level (only inside a function)")
            if op.operands or op.results:
                raise self.fail(op, "module-level ops take no operands and define no values")
            policies += isinstance(op, o.PrefetchPolicyOp)
            if policies > 1:
                raise self.fail(op, "a module has at most one prefetch policy")
            if isinstance(op, o.DeviceOp):
                self.add_device(op)
            self.check_signature(op, op.SIGNATURE)
            check = OP_CHECKS.get(type(op))
            if check is not None:
                check(self, op)

    def add_device(self, op: o.DeviceOp) -> None:
        if op.sym.name in self.devices:
            raise self.fail(op, f"device @{op.sym.name} is declared twice")
        for other in self.devices.values():
            if other.kind == op.kind and other.index == op.index:
                raise self.fail(op, f"{op.kind.value} device index {op.index} is declared twice")
        self.devices[op.sym.name] = op
        if op.kind.value == "ndp":
            self.ndp_units.add(op.index)

    def check_resident(self, op: o.ResidentOp) -> None:
        """Resident experts name an MoE layer's experts, each once, in increasing order."""
        experts = self.layer_experts.get(op.layer)
        if experts is None:
            raise self.fail(op, f"layer {op.layer} is not an MoE layer (no moe.router)")
        if list(op.experts) != sorted(set(op.experts)):
            raise self.fail(op, "experts must be listed in increasing order, each once")
        if op.experts and not 0 <= op.experts[0] <= op.experts[-1] < experts:
            raise self.fail(op, f"expert ids must be in 0..{experts - 1}")
        layers = [d.layer for d in self.module.decls if isinstance(d, o.ResidentOp)]
        if layers.count(op.layer) > 1:
            raise self.fail(op, f"layer {op.layer} has more than one moe.resident")

    # --- functions ---------------------------------------------------------------------------

    def collect_layers(self, func: Func) -> None:
        for op in func.ops:
            if isinstance(op, o.RouterOp):
                if op.layer in self.layer_experts:
                    raise self.fail(op, f"layer {op.layer} has a second moe.router")
                self.layer_experts[op.layer] = op.experts

    def check_func(self, func: Func) -> None:
        """SSA order, one return at the end, layers in order, then each op's own rules."""
        if not SYMBOL_NAME.match(func.name):
            raise self.fail_at(func.loc, f"bad function name '{func.name}'")
        scope: set[Value] = set()
        for arg in func.args:
            self.define(None, arg, scope)
        if not func.ops:
            raise self.fail_at(func.loc, f"function @{func.name} must end with moe.return")
        if not isinstance(func.ops[-1], o.ReturnOp):
            raise self.fail(func.ops[-1], f"function @{func.name} must end with moe.return")
        last_layer = None
        for op in func.ops:
            if isinstance(op, DECL_OPS):
                raise self.fail(op, "is a module-level declaration, not allowed in a function")
            if isinstance(op, o.ReturnOp) and op is not func.ops[-1]:
                raise self.fail(op, "must be the last op of its function")
            for i, value in enumerate(op.operands):
                if value not in scope:
                    raise self.fail(op, f"operand #{i} is used before it is defined")
            for value in op.results:
                self.define(op, value, scope)
                self.producer[value] = op
            last_layer = self.check_layer_order(op, last_layer)
            self.check_signature(op, op.SIGNATURE)
            check = OP_CHECKS.get(type(op))
            if check is not None:
                check(self, op)
        ret = func.ops[-1]
        types = tuple(v.type for v in ret.operands)
        if types != func.result_types:
            raise self.fail(
                ret, f"returns {len(types)} values whose types differ from @{func.name}'s results"
            )

    def define(self, op: Op | None, value: Value, scope: set[Value]) -> None:
        if value in self.defined:
            raise self.fail(op, f"value %{value.name_hint} is defined twice")
        self.defined.add(value)
        scope.add(value)

    def check_layer_order(self, op: Op, last: int | None) -> int | None:
        """Decoder-layer indices never decrease; layer -1 (final norm) comes after every layer."""
        layer = getattr(op, "layer", None)
        if layer is None:
            return last
        if last == -1 and layer != -1:
            raise self.fail(op, f"layer {layer} comes after the final norm (layer -1)")
        if last is not None and layer != -1 and layer < last:
            raise self.fail(op, f"layer {layer} comes after layer {last}; layers must be in order")
        return layer

    # --- op signatures (ndpc.ir.signature) ------------------------------------------------------

    def check_signature(self, op: Op, sig: Signature) -> None:
        """Counts, then `same`, then each operand's and result's constraint, in order."""
        if sig.operands is None:
            if len(op.results) != len(sig.results):
                raise self.fail(op, _defines(len(sig.results)))
        else:
            self.arity(op, len(sig.operands), len(sig.results))
            if sig.same:
                self.same_types(op)
            single = len(sig.operands) == 1
            for i, (value, want) in enumerate(zip(op.operands, sig.operands, strict=True)):
                what = want.name or ("the operand" if single else f"operand #{i}")
                self.expect(op, what, value, want.cls)
        for value, want in zip(op.results, sig.results, strict=True):
            if isinstance(want, SameAs):
                if value.type != op.operands[want.operand].type:
                    raise self.fail(op, f"result must have the type of operand #{want.operand}")
            else:
                self.expect(op, want.name or "the result", value, want.cls)

    # --- shared checks used by the per-op rules -------------------------------------------------

    def arity(self, op: Op, operands: int, results: int) -> None:
        if len(op.operands) != operands or len(op.results) != results:
            raise self.fail(
                op,
                f"takes {operands} operand(s) and defines {results} result(s), "
                f"got {len(op.operands)} and {len(op.results)}",
            )

    def expect(self, op: Op, what: str, value: Value, cls: type) -> Type:
        if not isinstance(value.type, cls):
            raise self.fail(op, f"{what} must be a {cls.__name__}, got {_spell(value.type)}")
        return value.type

    def same_types(self, op: Op) -> None:
        types = {v.type for v in (*op.operands, *op.results)}
        if len(types) != 1:
            raise self.fail(op, "operands and result must all have the same type")

    def width(self, op: Op, what: str, ty: TensorType, expected: int) -> None:
        if not ty.shape or ty.shape[-1] != expected:
            raise self.fail(op, f"{what} must end in {expected}, got {_spell(ty)}")

    def unit_set(self, op: Op, units: tuple[int, ...], what: str) -> None:
        if len(set(units)) != len(units):
            raise self.fail(op, f"{what} repeat NDP units {list(units)}")
        unknown = sorted(set(units) - self.ndp_units)
        if unknown:
            declared = sorted(self.ndp_units) or "none"
            raise self.fail(
                op, f"{what} name NDP unit {unknown[0]}, not declared (declared: {declared})"
            )

    def route_layer(self, op: Op, route: Value) -> RouteType:
        ty = self.expect(op, "the route operand", route, RouteType)
        source = self.producer.get(route)
        source_layer = getattr(source, "layer", None)
        if source_layer is not None and source_layer != op.layer:
            raise self.fail(op, f"uses the route of layer {source_layer} in layer {op.layer}")
        return ty  # type: ignore[return-value]


def _defines(results: int) -> str:
    return "defines no results" if results == 0 else f"defines {results} result(s)"


def _spell(ty: Type) -> str:
    return print_type(ty)
