"""Node names of `ndpc model make` graphs that IR locations point at (no onnx import: fast).

The zoo's direct IR build (`zoo_spec`) and the ONNX writer (`model_writer`) share these, so both
paths give the same printed IR.
"""

from __future__ import annotations

from ndpc.compiler.zoo import ModelConfig


def norm_node(cfg: ModelConfig, scope: str) -> str:
    """The node of a norm that the importer reports (LayerNormalization or its ReduceMean)."""
    return f"{scope}/{'LayerNormalization' if cfg.norm == 'layer' else 'ReduceMean'}"


def router_node(cfg: ModelConfig, i: int) -> str:
    """The node the importer reports as layer `i`'s router."""
    p = f"/model/layers.{i}/mlp/gate"
    if cfg.routing in ("sparsemixer", "top1_capacity"):
        return f"{p}/ArgMax"
    return f"{p}/TopK_2" if cfg.routing == "sigmoid_group_topk" and cfg.groups > 1 else f"{p}/TopK"


def shared_scope(cfg: ModelConfig, i: int) -> str:
    """`mlp.shared_expert` (gated, Qwen2 style) or `mlp.shared_experts` (DeepSeek style)."""
    return f"/model/layers.{i}/mlp/{'shared_expert' if cfg.shared_gated else 'shared_experts'}"


def mlp_first(cfg: ModelConfig, scope: str) -> str:
    """The first MatMul of an MLP (gate_proj when gated, else up_proj)."""
    return f"{scope}/{'gate_proj' if cfg.activation in ('swiglu', 'geglu') else 'up_proj'}/MatMul"


def layer_locs(cfg: ModelConfig, i: int) -> dict[str, str]:
    """Role -> node name for decoder layer `i` (see compiler.frontend.spec.LayerSpec.locs)."""
    p = f"/model/layers.{i}"
    att = (
        f"{p}/self_attn/kv_a_proj_with_mqa/MatMul"
        if cfg.attention == "mla"
        else f"{p}/self_attn/Softmax"
    )
    locs = {
        "norm1": norm_node(cfg, f"{p}/input_layernorm"),
        "attention": att,
        "kv": att,
        "add1": att,
        "norm2": norm_node(cfg, f"{p}/post_attention_layernorm"),
    }
    if i in cfg.dense_layers:
        locs["mlp"] = mlp_first(cfg, f"{p}/mlp")
        locs["add2"] = locs["mlp"]
    else:
        locs.update(router=router_node(cfg, i), experts=f"{p}/mlp/experts/Gather")
        locs["add2"] = locs["router"]
        if cfg.shared_experts:
            locs["shared"] = mlp_first(cfg, shared_scope(cfg, i))
    return locs
