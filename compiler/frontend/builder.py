"""Turns a `ModelSpec` into an IR module: the one place that constructs model IR.

The layout follows the IR conventions (docs/architecture.md): one `@forward` function; per decoder
layer norm -> kv_cache -> attention -> add -> norm -> (mlp | router -> experts [-> shared_experts])
-> add; an embedding first and a final norm (layer -1) and LM head last. Each op's location names
the ONNX node it came from (`onnx:<node name>`).
"""

from __future__ import annotations

import re

from ndpc.compiler.frontend.spec import LayerSpec, ModelSpec
from ndpc.ir.attrs import AttentionKind, NormKind
from ndpc.ir.core import Func, Location, Module, Op, Value
from ndpc.ir.ops import (
    AddOp,
    AttentionOp,
    EmbeddingOp,
    ExpertsOp,
    KvCacheOp,
    LmHeadOp,
    MlpOp,
    NormOp,
    ReturnOp,
    RouterOp,
    SharedExpertsOp,
)
from ndpc.ir.types import DType, KvCacheType, RouteType, TensorType


def symbol_name(name: str) -> str:
    """A module name usable as an IR symbol: letters, digits and `_` only."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "model"
    return cleaned if not cleaned[0].isdigit() else f"m_{cleaned}"


class _FuncBuilder:
    """Appends ops to a function body, creating result values with readable name hints."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.ops: list[Op] = []
        self.hidden = TensorType((None, spec.d_model), spec.dtype)

    def add(
        self,
        op_type: type[Op],
        operands: tuple[Value, ...],
        result_type,
        hint: str,
        loc: str,
        **attrs,
    ) -> Value | None:
        """Append `op_type(operands) {attrs}` located at ONNX node `loc`; returns its result."""
        results = () if result_type is None else (Value(result_type, hint),)
        op = op_type(operands=operands, results=results, loc=_loc(loc), **attrs)
        self.ops.append(op)
        return results[0] if results else None


def _loc(name: str) -> Location:
    return Location(name=f"onnx:{name}") if name else Location(name="onnx:?")


def build_module(spec: ModelSpec) -> Module:
    """The IR module of `spec` (deterministic: same spec, same module text)."""
    fb = _FuncBuilder(spec)
    if spec.vocab > 0:
        arg = Value(TensorType((None,), DType.I32), "tokens")
        h = fb.add(
            EmbeddingOp,
            (arg,),
            fb.hidden,
            "h",
            spec.embed_loc,
            vocab=spec.vocab,
            d_model=spec.d_model,
            dtype=spec.dtype,
        )
    else:
        arg = Value(fb.hidden, "x")
        h = arg
    for layer in spec.layers:
        h = _build_layer(fb, layer, h)
    out_type = fb.hidden
    if spec.vocab > 0:
        norm_kind = spec.layers[-1].norm if spec.layers else None
        h = fb.add(
            NormOp,
            (h,),
            fb.hidden,
            "final_norm",
            spec.final_norm_loc,
            layer=-1,
            kind=norm_kind or NormKind.RMS,
            d_model=spec.d_model,
        )
        out_type = TensorType((None, spec.vocab), spec.dtype)
        h = fb.add(
            LmHeadOp,
            (h,),
            out_type,
            "logits",
            spec.lm_head_loc,
            vocab=spec.vocab,
            d_model=spec.d_model,
            dtype=spec.dtype,
        )
    fb.add(
        ReturnOp,
        (h,),
        None,
        "",
        spec.lm_head_loc or (spec.layers[-1].anchor if spec.layers else ""),
    )
    func = Func(name="forward", args=(arg,), result_types=(out_type,), ops=tuple(fb.ops))
    return Module(name=symbol_name(spec.name), funcs=(func,))


def _build_layer(fb: _FuncBuilder, layer: LayerSpec, h: Value) -> Value:
    i, d = layer.index, fb.spec.d_model
    loc = layer.loc_name
    if layer.attention is not None:
        att = layer.attention
        n1 = fb.add(
            NormOp,
            (h,),
            fb.hidden,
            f"l{i}_norm1",
            loc("norm1"),
            layer=i,
            kind=layer.norm,
            d_model=d,
        )
        kv_type = _kv_type(att, fb.spec.dtype)
        kv = fb.add(KvCacheOp, (), kv_type, f"l{i}_kv", loc("kv"), layer=i)
        a = fb.add(
            AttentionOp,
            (n1, kv),
            fb.hidden,
            f"l{i}_attn",
            loc("attention"),
            layer=i,
            kind=att.kind,
            d_model=d,
            heads=att.heads,
            kv_heads=att.kv_heads,
            head_dim=att.head_dim,
            dtype=fb.spec.dtype,
            kv_lora_rank=att.kv_lora_rank,
        )
        h = fb.add(AddOp, (h, a), fb.hidden, f"l{i}_h", loc("add1"))
    n2 = h
    if layer.attention is not None or "norm2" in layer.locs:  # a bare MoE block has no norm
        n2 = fb.add(
            NormOp,
            (h,),
            fb.hidden,
            f"l{i}_norm2",
            loc("norm2"),
            layer=i,
            kind=layer.norm,
            d_model=d,
        )
    if layer.moe is None:
        m = fb.add(MlpOp, (n2,), fb.hidden, f"l{i}_mlp", loc("mlp"), layer=i, ffn=layer.mlp)
        return fb.add(AddOp, (h, m), fb.hidden, f"l{i}_out", loc("add2"))
    moe = layer.moe
    route = fb.add(
        RouterOp,
        (n2,),
        RouteType(moe.router.k, moe.experts),
        f"l{i}_route",
        loc("router"),
        layer=i,
        experts=moe.experts,
        router=moe.router,
    )
    e = fb.add(
        ExpertsOp,
        (n2, route),
        fb.hidden,
        f"l{i}_moe",
        loc("experts"),
        layer=i,
        experts=moe.experts,
        ffn=moe.ffn,
    )
    if moe.shared_ffn is not None and moe.shared_count > 0:
        s = fb.add(
            SharedExpertsOp,
            (n2,),
            fb.hidden,
            f"l{i}_shared",
            loc("shared"),
            layer=i,
            count=moe.shared_count,
            ffn=moe.shared_ffn,
            gated=moe.shared_gated,
        )
        e = fb.add(AddOp, (e, s), fb.hidden, f"l{i}_moe_sum", loc("shared"))
    return fb.add(AddOp, (h, e), fb.hidden, f"l{i}_out", loc("add2"))


def _kv_type(att, dtype: DType) -> KvCacheType:
    if att.kind is AttentionKind.MLA and att.kv_cache_dim:
        # MLA caches one latent per token (no separate V): model it as half the width per K/V.
        return KvCacheType(kv_heads=1, head_dim=att.kv_cache_dim // 2, dtype=dtype)
    return KvCacheType(kv_heads=att.kv_heads, head_dim=att.head_dim, dtype=dtype)
