"""Helpers to build IR in code: a function builder with fresh SSA values, and synthetic models.

`FuncBuilder` appends ops and creates their result values; `synthetic_module` builds a whole
decoder stack (optionally already split across NDP units) for tests and benchmarks, following the
per-layer op order fixed in docs/ir.md. Real models come from `ndpc.compiler.frontend`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ndpc.ir import ops as o
from ndpc.ir.attrs import (
    Activation,
    AttentionKind,
    DeviceKind,
    FfnAttr,
    NormKind,
    ReduceSite,
    RouterAttr,
    RoutingRule,
    ShardAxis,
    ShardSpec,
    ShardTable,
)
from ndpc.ir.core import Func, Location, Module, Op, SymbolRef, Value
from ndpc.ir.types import DistributedType, DType, KvCacheType, RouteType, TensorType, Type


class FuncBuilder:
    """Builds one function: `add` appends an op and returns its fresh result values."""

    def __init__(self, name: str, arg_types: Sequence[Type], arg_names: Sequence[str] = ()):
        self.name = name
        names = list(arg_names) or [f"arg{i}" for i in range(len(arg_types))]
        self.args = tuple(Value(t, n) for t, n in zip(arg_types, names, strict=True))
        self.ops: list[Op] = []

    def add(
        self,
        cls: type[Op],
        operands: Sequence[Value] = (),
        result_types: Sequence[Type] = (),
        names: Sequence[str | None] = (),
        loc: Location | None = None,
        **attrs: object,
    ) -> tuple[Value, ...]:
        """Append `cls(operands, attrs)` with one new result per type; return the results."""
        hints = list(names) + [None] * (len(result_types) - len(names))
        results = tuple(Value(t, h) for t, h in zip(result_types, hints, strict=False))
        extra = {"loc": loc} if loc is not None else {}
        self.ops.append(cls(operands=tuple(operands), results=results, **extra, **attrs))
        return results

    def one(
        self,
        cls: type[Op],
        operands: Sequence[Value],
        ty: Type,
        name: str | None = None,
        **attrs: object,
    ) -> Value:
        """`add` for ops with exactly one result."""
        return self.add(cls, operands, [ty], [name], **attrs)[0]

    def ret(self, values: Sequence[Value]) -> Func:
        """Append the return and finish the function."""
        self.add(o.ReturnOp, values)
        return Func(self.name, self.args, tuple(v.type for v in values), tuple(self.ops))


def uniform_table(experts: int, units: int) -> ShardTable:
    """Every expert tensor-parallel across all `units` (partials reduced on the GPU)."""
    spec = ShardSpec(
        units, tuple(range(units)), ShardAxis.FFN if units > 1 else ShardAxis.NONE, ReduceSite.GPU
    )
    return ShardTable((spec,) * experts)


def mixed_table(experts: int, units: int, rng: random.Random) -> ShardTable:
    """A random degree and unit set per expert: the worst case for the compact printer."""
    specs = []
    for _ in range(experts):
        degree = rng.choice([d for d in (1, 2, 3, 6) if d <= units] or [1])
        chosen = tuple(sorted(rng.sample(range(units), degree)))
        axis = ShardAxis.FFN if degree > 1 else ShardAxis.NONE
        specs.append(ShardSpec(degree, chosen, axis, ReduceSite.GPU))
    return ShardTable(tuple(specs))


def synthetic_module(
    layers: int,
    experts: int,
    *,
    k: int = 8,
    d_model: int = 2048,
    d_ff: int = 768,
    dense_layers: Sequence[int] = (),
    units: int = 0,
    tables: str = "uniform",
    seed: int = 0,
    name: str = "synthetic",
) -> Module:
    """A decoder stack with `experts` experts per MoE layer; `units > 0` also splits every MoE
    layer across that many NDP units (broadcast -> expert_shards -> reduce) with `tables`
    ("uniform" or "mixed") shard tables."""
    rng = random.Random(seed)
    hidden = TensorType((None, d_model), DType.BF16)
    vocab = 32000
    b = FuncBuilder("forward", [TensorType((None,), DType.I32)], ["ids"])
    ffn = FfnAttr(d_model, d_ff, Activation.SWIGLU, False, DType.BF16)
    x = b.one(o.EmbeddingOp, b.args, hidden, "h", vocab=vocab, d_model=d_model, dtype=DType.BF16)
    for layer in range(layers):
        n = b.one(
            o.NormOp, [x], hidden, f"n{layer}", layer=layer, kind=NormKind.RMS, d_model=d_model
        )
        kv_type = KvCacheType(4, 128, DType.BF16)
        kv = b.one(o.KvCacheOp, [], kv_type, f"kv{layer}", layer=layer)
        attn = b.one(
            o.AttentionOp, [n, kv], hidden, f"a{layer}", layer=layer, kind=AttentionKind.GQA,
            d_model=d_model, heads=32, kv_heads=4, head_dim=128, dtype=DType.BF16,
        )  # fmt: skip
        r = b.one(o.AddOp, [x, attn], hidden, f"r{layer}")
        m = b.one(
            o.NormOp, [r], hidden, f"m{layer}", layer=layer, kind=NormKind.RMS, d_model=d_model
        )
        if layer in dense_layers:
            y = b.one(
                o.MlpOp,
                [m],
                hidden,
                f"f{layer}",
                layer=layer,
                ffn=FfnAttr(d_model, 4 * d_ff, Activation.SWIGLU, False, DType.BF16),
            )
        else:
            y = _moe_block(b, m, layer, experts, k, ffn, units, tables, rng)
        x = b.one(o.AddOp, [r, y], hidden, f"o{layer}")
    fin = b.one(o.NormOp, [x], hidden, "final", layer=-1, kind=NormKind.RMS, d_model=d_model)
    logits = b.one(
        o.LmHeadOp,
        [fin],
        TensorType((None, vocab), DType.BF16),
        "logits",
        vocab=vocab,
        d_model=d_model,
        dtype=DType.BF16,
    )
    decls: list[Op] = []
    if units:
        decls.append(o.DeviceOp(sym=SymbolRef("gpu"), kind=DeviceKind.GPU))
        decls += [
            o.DeviceOp(sym=SymbolRef(f"ndp{i}"), kind=DeviceKind.NDP, index=i) for i in range(units)
        ]
    return Module(name, tuple(decls), (b.ret([logits]),))


def _moe_block(
    b: FuncBuilder,
    m: Value,
    layer: int,
    experts: int,
    k: int,
    ffn: FfnAttr,
    units: int,
    tables: str,
    rng: random.Random,
) -> Value:
    hidden = m.type
    router = RouterAttr(RoutingRule.SOFTMAX_TOPK, k, True)
    route = b.one(
        o.RouterOp,
        [m],
        RouteType(k, experts),
        f"route{layer}",
        layer=layer,
        experts=experts,
        router=router,
    )
    if not units:
        return b.one(
            o.ExpertsOp, [m, route], hidden, f"e{layer}", layer=layer, experts=experts, ffn=ffn
        )
    assert isinstance(hidden, TensorType)
    dist = DistributedType(hidden, units)
    xb = b.one(
        o.BroadcastOp,
        [m],
        dist,
        f"xb{layer}",
        layer=layer,
        src=SymbolRef("gpu"),
        units=tuple(range(units)),
    )
    table = (
        uniform_table(experts, units) if tables == "uniform" else mixed_table(experts, units, rng)
    )
    partial = DistributedType(hidden, units, True)
    p = b.one(
        o.ExpertShardsOp,
        [xb, route],
        partial,
        f"p{layer}",
        layer=layer,
        experts=experts,
        ffn=ffn,
        shards=table,
    )
    return b.one(o.ReduceOp, [p], hidden, f"e{layer}", layer=layer, site=ReduceSite.GPU)
