"""Zoo model -> `ModelSpec` directly from its `ModelConfig` (no ONNX round trip: fast).

Locations name the nodes `ndpc model make` writes for the same model, so this IR equals the IR of
importing that graph (tests/frontend check it).
"""

from __future__ import annotations

from ndpc.compiler.frontend.builder import build_module
from ndpc.compiler.frontend.naming import layer_locs, norm_node
from ndpc.compiler.frontend.spec import AttentionSpec, LayerSpec, ModelSpec, MoeSpec
from ndpc.compiler.zoo import ModelConfig, get_model
from ndpc.ir.attrs import Activation, AttentionKind, FfnAttr, NormKind, RouterAttr, RoutingRule
from ndpc.ir.core import Module
from ndpc.ir.types import DType


def zoo_module(name: str) -> Module:
    """The IR module of zoo model `name` (NdpcError with a did-you-mean for unknown names)."""
    return build_module(config_spec(get_model(name)))


def config_spec(cfg: ModelConfig, dtype: DType | None = None) -> ModelSpec:
    """The `ModelSpec` of `cfg` (element type `dtype`, default the config's)."""
    dtype = dtype or DType(cfg.dtype)
    act = Activation(cfg.activation)
    norm = NormKind(cfg.norm)
    kind = AttentionKind(cfg.attention)
    if kind is AttentionKind.GQA and cfg.kv_heads == cfg.heads:
        kind = AttentionKind.MHA
    attention = AttentionSpec(
        kind,
        cfg.heads,
        cfg.kv_heads,
        cfg.head_dim,
        kv_lora_rank=cfg.kv_lora_rank,
        kv_cache_dim=cfg.kv_cache_dim if kind is AttentionKind.MLA else 0,
    )
    layers = []
    for i in range(cfg.layers):
        locs = layer_locs(cfg, i)
        if i in cfg.dense_layers:
            mlp = FfnAttr(cfg.d_model, cfg.d_ff_dense, act, False, dtype)
            layers.append(
                LayerSpec(i, attention, mlp=mlp, norm=norm, anchor=locs["mlp"], locs=locs)
            )
            continue
        router = RouterAttr(
            RoutingRule(cfg.routing),
            cfg.top_k,
            cfg.renormalize,
            groups=cfg.groups,
            topk_groups=cfg.topk_groups,
        )
        ffn = FfnAttr(cfg.d_model, cfg.d_ff_expert, act, cfg.expert_bias, dtype, clamp=cfg.clamp)
        shared = None
        if cfg.shared_experts:
            shared = FfnAttr(cfg.d_model, cfg.shared_width, act, False, dtype)
        moe = MoeSpec(
            cfg.experts,
            router,
            ffn,
            cfg.shared_experts,
            shared,
            cfg.shared_gated,
            form="gather-bmm",
        )
        layers.append(LayerSpec(i, attention, moe=moe, norm=norm, anchor=locs["router"], locs=locs))
    return ModelSpec(
        name=cfg.name,
        d_model=cfg.d_model,
        vocab=cfg.vocab,
        dtype=dtype,
        layers=tuple(layers),
        source=f"zoo:{cfg.name}",
        embed_loc="/model/embed_tokens/Gather",
        final_norm_loc=norm_node(cfg, "/model/norm"),
        lm_head_loc="/lm_head/MatMul",
    )
