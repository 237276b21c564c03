"""Attention, norms, embedding and LM head: the dense parts around the MoE blocks.

Attention parameters come from fused attention nodes (GroupQueryAttention / MultiHeadAttention
attributes) or, in decomposed graphs, from the projection weights and the constant head_dim of the
Reshape that splits heads. MLA (DeepSeek) is recognised by its `kv_a_proj` / `kv_b_proj` weights.
"""

from __future__ import annotations

from ndpc.compiler.frontend.graph import OnnxGraph
from ndpc.compiler.frontend.mlp import matmul_weight
from ndpc.compiler.frontend.spec import AttentionSpec
from ndpc.ir.attrs import AttentionKind, NormKind

_FUSED_ATTENTION = {
    "GroupQueryAttention",
    "MultiHeadAttention",
    "Attention",
    "PackedMultiHeadAttention",
}
_NORM_OPS = {
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "RMSNormalization",
    "LayerNormalization",
    "SkipLayerNormalization",
}


def norm_nodes(g: OnnxGraph, nodes: list[int]) -> list[int]:
    """Nodes that start a norm: fused norm ops, or the ReduceMean of a decomposed one."""
    out = []
    for i in nodes:
        op = g.nodes[i].op_type
        if op in _NORM_OPS or op == "ReduceMean" and not (out and _same_norm(g, out[-1], i)):
            out.append(i)
    return out


def _same_norm(g: OnnxGraph, a: int, b: int) -> bool:
    """LayerNorm decomposes into two ReduceMeans (mean, variance) within a few nodes."""
    return g.nodes[a].op_type == "ReduceMean" and b - a <= 4


def norm_kind(g: OnnxGraph, nodes: list[int]) -> NormKind:
    """RMSNorm or LayerNorm, from a layer's norm ops."""
    ops = [g.nodes[i].op_type for i in nodes]
    if "LayerNormalization" in ops or "SkipLayerNormalization" in ops:
        return NormKind.LAYER
    if any(
        op
        in ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "RMSNormalization")
        for op in ops
    ):
        return NormKind.RMS
    for i in nodes:  # decomposed LayerNorm subtracts the mean; RMSNorm never does
        if g.nodes[i].op_type == "ReduceMean":
            users = {u.op_type for u in g.users(g.nodes[i].output[0])}
            return NormKind.LAYER if "Sub" in users else NormKind.RMS
    return NormKind.RMS


def find_attention(
    g: OnnxGraph, nodes: list[int], d_model: int, notes: list[str]
) -> tuple[AttentionSpec | None, str]:
    """The attention of one layer's `nodes` (sorted), and the node that names it."""
    for i in nodes:
        node = g.nodes[i]
        if node.op_type in _FUSED_ATTENTION and node.domain == "com.microsoft":
            return _fused_attention(g, i, nodes, d_model), node.name
    mats = [i for i in nodes if matmul_weight(g, i) is not None]
    mla = _mla(g, mats, nodes)
    if mla is not None:
        return mla
    softmax = [i for i in nodes if g.nodes[i].op_type == "Softmax" and _scores(g, i)]
    if not softmax:
        return None, ""
    head_dim = _head_dim(g, nodes)
    q_like = [
        matmul_weight(g, i)[1] for i in mats if i < softmax[0] and matmul_weight(g, i)[0] == d_model
    ]
    if not q_like:
        return None, ""
    if head_dim is None:
        head_dim = 128 if q_like[0] % 128 == 0 else 64
        notes.append(
            f"{g.nodes[softmax[0]].name}: head_dim not found in the graph; assumed {head_dim}"
        )
    heads = q_like[0] // head_dim
    kv = q_like[1] // head_dim if len(q_like) > 1 else heads
    kind = AttentionKind.MHA if kv == heads else AttentionKind.GQA
    return AttentionSpec(kind, heads, kv, head_dim), g.nodes[softmax[0]].name


def _scores(g: OnnxGraph, i: int) -> bool:
    """An attention softmax reads Q.K^T (a MatMul of two activations), not a router gate."""
    seen = 0
    name = g.nodes[i].input[0]
    while seen < 6:
        node = g.producer_of(name)
        if node is None:
            return False
        if node.op_type == "MatMul":
            return g.weight_root(node.input[1]) is None and g.weight_root(node.input[0]) is None
        if node.op_type in ("Gemm",):
            return False
        name = node.input[0]
        seen += 1
    return False


def _fused_attention(g: OnnxGraph, i: int, nodes: list[int], d_model: int) -> AttentionSpec:
    node = g.nodes[i]
    heads = int(g.attr(node, "num_heads", 1))
    kv = int(g.attr(node, "kv_num_heads", 0) or heads)
    producer = g.producer.get(node.input[0])
    width = (
        matmul_weight(g, producer)[1]
        if producer is not None and matmul_weight(g, producer)
        else None
    )
    packed = len(node.input) < 2 or not node.input[1]
    if width is None:
        head_dim = d_model // heads
    else:
        head_dim = width // (heads + 2 * kv) if packed else width // heads
    kind = AttentionKind.GQA if kv != heads else AttentionKind.MHA
    return AttentionSpec(kind, heads, kv, head_dim)


def _head_dim(g: OnnxGraph, nodes: list[int]) -> int | None:
    """The last entry of a constant head-splitting Reshape shape ([..., heads, head_dim])."""
    for i in nodes:
        node = g.nodes[i]
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        src = _projection(g, node.input[0])
        if src is None:
            continue
        last = _last_shape_entry(g, node.input[1])
        if last and last > 1 and matmul_weight(g, src)[1] % last == 0:
            return last
    return None


def _projection(g: OnnxGraph, value: str) -> int | None:
    """The const-weight MatMul/Gemm producing `value`, looking through a bias Add."""
    src = g.producer.get(value)
    if src is not None and g.nodes[src].op_type == "Add":
        inputs = [v for v in g.nodes[src].input if g.const(v) is None]
        src = g.producer.get(inputs[0]) if len(inputs) == 1 else None
    return src if src is not None and matmul_weight(g, src) is not None else None


def _last_shape_entry(g: OnnxGraph, shape: str) -> int | None:
    c = g.const(shape)
    if c is not None and c.value is not None and c.value.ndim == 1 and c.value.size >= 3:
        return int(c.value[-1])
    node = g.producer_of(shape)
    if node is not None and node.op_type == "Concat" and node.input:
        c = g.const(node.input[-1])
        if c is not None and c.value is not None and c.value.size >= 1:
            return int(c.value.reshape(-1)[-1])
    return None


def _mla(g: OnnxGraph, mats: list[int], nodes: list[int]):
    """DeepSeek multi-head latent attention, recognised by kv_a_proj / kv_b_proj weights."""
    kv_a = [i for i in mats if "kv_a_proj" in g.scope_text(i) + g.nodes[i].input[1]]
    kv_b = [i for i in mats if "kv_b_proj" in g.scope_text(i) + g.nodes[i].input[1]]
    if not kv_a or not kv_b:
        return None
    cache = matmul_weight(g, kv_a[0])[1]
    rank, kv_out = matmul_weight(g, kv_b[0])
    head_dim = _head_dim(g, nodes) or 0
    q = [i for i in mats if "q_proj" in g.scope_text(i) or "q_b_proj" in g.scope_text(i)]
    q_width = matmul_weight(g, q[-1])[1] if q else 0
    heads = q_width // head_dim if head_dim and q_width % head_dim == 0 else 0
    if not heads:
        return None
    spec = AttentionSpec(
        AttentionKind.MLA, heads, heads, head_dim, kv_lora_rank=rank, kv_cache_dim=cache
    )
    del kv_out
    return spec, g.nodes[kv_a[0]].name


def find_embedding(g: OnnxGraph) -> tuple[int, str] | None:
    """(vocab, node name) of the Gather that reads token ids from a graph input."""
    inputs = set(g.graph_inputs)
    for node in g.nodes:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in inputs:
            w = g.weight_root(node.input[0])
            if w is not None and len(w.dims) == 2:
                return w.dims[0], node.name
    return None


def find_lm_head(g: OnnxGraph, d_model: int) -> tuple[int, str] | None:
    """(vocab, node name) of the last const-weight MatMul/Gemm producing a [.., vocab] output."""
    for i in range(len(g.nodes) - 1, -1, -1):
        shape = matmul_weight(g, i)
        if shape is not None and shape[0] == d_model:
            return shape[1], g.nodes[i].name
    return None
