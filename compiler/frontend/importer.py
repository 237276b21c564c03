"""ONNX graph -> `ModelSpec`: finds every decoder layer and classifies it as MoE or dense.

Steps (docs/frontend.md): refuse unknown MoE-like custom ops; find the MoE anchors (fused MoE/QMoE
nodes, router TopKs, ArgMax routers); give every node a layer index from torch's name-scope
metadata or its module-path name, else number the MoE blocks in graph order; then match each
layer's MoE block or dense MLP, its attention and norms.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from dataclasses import replace

from ndpc.compiler.frontend.attention import (
    find_attention,
    find_embedding,
    find_lm_head,
    norm_kind,
    norm_nodes,
)
from ndpc.compiler.frontend.experts import match_block, shared_experts
from ndpc.compiler.frontend.fused import HELPER_OPS, FusedMatch, is_fused
from ndpc.compiler.frontend.graph import OnnxGraph, load_graph, op_name
from ndpc.compiler.frontend.mlp import last_mlp
from ndpc.compiler.frontend.router import (
    argmax_router_groups,
    is_router_topk,
    match_argmax_router,
    match_topk_router,
)
from ndpc.compiler.frontend.spec import LayerSpec, ModelSpec, MoeSpec
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.types import DType

_MOE_LIKE = re.compile(r"moe|expert|router|mixture|sparse_?mixer", re.IGNORECASE)
_STANDARD = ("", "ai.onnx", "ai.onnx.ml")


def import_spec(path: str) -> ModelSpec:
    """Read the ONNX file at `path` (weights never loaded) into a `ModelSpec`."""
    g = load_graph(path)
    try:
        return _import_graph(g, path)
    except ValueError as err:
        # an IR attribute refusing a value the graph gave it (e.g. a zero d_ff or group count)
        raise NdpcError(f"{path}: the graph gives an invalid model: {err}") from None


def _import_graph(g: OnnxGraph, path: str) -> ModelSpec:
    _refuse_unknown_custom_ops(g)
    anchors = _anchors(g)
    if not anchors:
        hist = g.op_histogram()
        seen = ", ".join(
            f"{op} x{n}" for op, n in sorted(hist.items(), key=lambda t: (-t[1], t[0]))
        )
        raise NdpcError(
            f"{path}: no MoE layer found (no com.microsoft::MoE/QMoE node and no "
            f"router TopK/ArgMax selecting experts); op types seen: {seen}"
        )
    layer_of = _layer_index(g)
    for a, _ in anchors:  # a fused node without a scope takes its router's or input's layer
        if layer_of[a] is None:
            layer_of[a] = _neighbour_layer(g, a, layer_of)
    scoped = all(layer_of.get(a) is not None for a, _ in anchors)
    layer_nodes = _layer_nodes(g, layer_of, anchors, scoped)
    spec = _assemble(g, path, anchors, layer_nodes, scoped, layer_of)
    _check_spec(spec, path)
    return spec


def _check_spec(spec: ModelSpec, path: str) -> None:
    """Every block reads and writes the model's hidden width (weights with odd dims break it), and
    float attributes read from the graph (a Clip limit, a SwiGLU clamp) are finite and >= 0."""
    for layer in spec.layers:
        moe = layer.moe
        where = f"{path}: layer {layer.index} (node '{layer.anchor}')"
        ffns = [layer.mlp] if moe is None else [moe.ffn, moe.shared_ffn]
        for ffn in ffns:
            if ffn is not None and ffn.d_model != spec.d_model:
                raise NdpcError(
                    f"{where}: the FFN weights are {ffn.d_model} wide but the model's hidden "
                    f"width is {spec.d_model}"
                )
        for attr in [*ffns, moe.router if moe is not None else None]:
            for f in dataclasses.fields(attr) if attr is not None else ():
                value = getattr(attr, f.name)
                if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
                    raise NdpcError(f"{where}: {f.name} = {value} must be finite and >= 0")


def _refuse_unknown_custom_ops(g: OnnxGraph) -> None:
    for node in g.nodes:
        if node.domain in _STANDARD or is_fused(node):
            continue
        if node.domain == "com.microsoft" and node.op_type in HELPER_OPS:
            continue
        if _MOE_LIKE.search(node.op_type):
            raise NdpcError(
                f"{g.path}: node '{node.name}' has MoE-like custom op "
                f"{op_name(node)}, which ndpc does not understand (supported fused "
                "ops: com.microsoft::MoE, com.microsoft::QMoE)"
            )


def _anchors(g: OnnxGraph) -> list[tuple[int, object]]:
    """(node index, matcher input) per MoE block, in graph order."""
    found: list[tuple[int, object]] = []
    for i, node in enumerate(g.nodes):
        if is_fused(node):
            found.append((i, "fused"))
        elif node.op_type == "TopK" and node.domain in _STANDARD and is_router_topk(g, i):
            found.append((i, "topk"))
    for group in argmax_router_groups(g):
        found.append((group[0], group))
    return sorted(found, key=lambda t: t[0])


def _layer_index(g: OnnxGraph) -> dict[int, int | None]:
    return {i: g.layer_of(i) for i in range(len(g.nodes))}


def _neighbour_layer(g: OnnxGraph, a: int, layer_of: dict[int, int | None]) -> int | None:
    """The layer of the nearest producer (router gate first, then the block input)."""
    for value in list(g.nodes[a].input[1:2]) + list(g.nodes[a].input[:1]):
        for _ in range(4):
            i = g.producer.get(value)
            if i is None:
                break
            if layer_of[i] is not None:
                return layer_of[i]
            value = g.nodes[i].input[0] if g.nodes[i].input else ""
    return None


def _layer_nodes(g, layer_of, anchors, scoped) -> dict[int, list[int]]:
    """Decoder-layer index -> its node indices (graph order)."""
    groups: dict[int, list[int]] = defaultdict(list)
    if scoped:
        for i, layer in layer_of.items():
            if layer is not None:
                groups[layer].append(i)
        return dict(groups)
    # No usable names: the MoE blocks in graph order are the layers; a layer runs from just
    # after the previous block's anchor to just before the next one's.
    bounds = [a for a, _ in anchors]
    for n in range(len(bounds)):
        lo = bounds[n - 1] + 1 if n > 0 else 0
        hi = bounds[n + 1] if n + 1 < len(bounds) else len(g.nodes)
        groups[n] = list(range(lo, hi))
    return dict(groups)


def _assemble(g: OnnxGraph, path, anchors, layer_nodes, scoped, layer_of) -> ModelSpec:
    notes: list[str] = []
    if not scoped:
        notes.append(
            "no layer names or torch metadata: layers numbered by the graph order of "
            "their MoE blocks; dense layers cannot be told apart"
        )
    anchor_layer = {}
    for n, (a, kind) in enumerate(anchors):
        layer = layer_of[a] if scoped else n
        if layer in anchor_layer:
            raise NdpcError(
                f"{path}: layer {layer} has two MoE blocks ('{g.nodes[anchor_layer[layer][0]].name}' "
                f"and '{g.nodes[a].name}')"
            )
        anchor_layer[layer] = (a, kind)
    layers, d_models = [], set()
    for index in sorted(layer_nodes):
        nodes = layer_nodes[index]
        try:
            if index in anchor_layer:
                layer = _moe_layer(g, index, nodes, anchor_layer[index], scoped, notes)
            else:
                layer = _dense_layer(g, index, nodes, notes)
        except ValueError as err:  # an IR attribute refused a value read from the graph
            where = anchor_layer.get(index, (nodes[0], None))[0]
            raise NdpcError(
                f"{path}: node '{g.nodes[where].name}' ({op_name(g.nodes[where])}): {err}"
            ) from None
        if layer is not None:
            layers.append(layer)
            d_models.add(_layer_d_model(layer))
    if len(d_models) != 1:
        raise NdpcError(
            f"{path}: inconsistent shapes: layers disagree on d_model ({sorted(d_models)})"
        )
    d_model = d_models.pop()
    layers = _renumber(layers)
    return _model_spec(g, path, d_model, layers, notes)


def _renumber(layers: list[LayerSpec]) -> list[LayerSpec]:
    """Layer indices from names may start anywhere; IR layers count from 0 in order."""
    return [replace(layer, index=n) for n, layer in enumerate(layers)]


def _layer_d_model(layer: LayerSpec) -> int:
    return layer.moe.ffn.d_model if layer.moe is not None else layer.mlp.d_model


def _moe_layer(g, index, nodes, anchor, scoped, notes) -> LayerSpec:
    a, kind = anchor
    node_set = set(nodes)
    locs: dict[str, str] = {}
    if kind == "fused":
        m = FusedMatch(g, a)
        notes.extend(m.notes)
        spec: MoeSpec = m.spec
        locs["router"] = m.gate_node.name if m.gate_node is not None else g.nodes[a].name
        locs["experts"] = g.nodes[a].name
        gate_idx = g.nodes.index(m.gate_node) if m.gate_node is not None else a
        shared = shared_experts(g, m.inputs["input"], gate_idx, node_set, {a}, spec.ffn)
        if shared[1] is not None:
            spec = replace(
                spec, shared_count=shared[0], shared_ffn=shared[1], shared_gated=shared[2]
            )
            locs["shared"] = shared[3]
    else:
        r = match_topk_router(g, a) if kind == "topk" else match_argmax_router(g, kind)
        block = match_block(g, r, node_set, scoped)
        notes.extend(block.notes)
        spec = block.spec
        locs.update(router=g.nodes[a].name, experts=block.experts_loc)
        if block.shared_loc:
            locs["shared"] = block.shared_loc
        gate_idx = r.gemm
    _dense_locs(g, nodes, gate_idx, spec.ffn.d_model, locs, notes)
    attention = locs.pop("_attention", None)
    return LayerSpec(
        index=index,
        attention=attention,
        moe=spec,
        norm=norm_kind(g, nodes),
        anchor=g.nodes[a].name,
        locs=locs,
    )


def _dense_layer(g, index, nodes, notes) -> LayerSpec | None:
    found = last_mlp(g, nodes, set(nodes))
    if found is None:
        return None  # e.g. a final-norm scope named like a layer
    ffn, mats = found
    locs = {"mlp": g.nodes[mats[0]].name}
    _dense_locs(g, nodes, mats[0], ffn.d_model, locs, notes)
    attention = locs.pop("_attention", None)
    return LayerSpec(
        index=index,
        attention=attention,
        mlp=ffn,
        norm=norm_kind(g, nodes),
        anchor=g.nodes[mats[-1]].name,
        locs=locs,
    )


def _dense_locs(g, nodes, ffn_start, d_model, locs, notes) -> None:
    """Attention and norm locations of a layer; the FFN part starts at node `ffn_start`."""
    before = [i for i in nodes if i < ffn_start]
    attention, att_loc = find_attention(g, before, d_model, notes)
    norms = norm_nodes(g, nodes)
    norms_before = [i for i in norms if i < ffn_start]
    if attention is not None:
        locs.update(attention=att_loc, kv=att_loc, add1=att_loc)
        if norms_before:
            locs["norm1"] = g.nodes[norms_before[0]].name
    if norms_before:
        locs["norm2"] = g.nodes[norms_before[-1]].name
    locs["add2"] = locs.get("router", locs.get("mlp", ""))
    if attention is not None and not (
        min(attention.heads, attention.kv_heads, attention.head_dim) > 0
        and attention.heads % attention.kv_heads == 0
    ):
        raise NdpcError(
            f"{g.path}: node '{att_loc}': inconsistent attention shapes: {attention.heads} "
            f"heads, {attention.kv_heads} KV heads of {attention.head_dim}"
        )
    locs["_attention"] = attention  # type: ignore[assignment]


def _model_spec(g: OnnxGraph, path, d_model, layers, notes) -> ModelSpec:
    emb = find_embedding(g)
    vocab, embed_loc, head_loc, final_loc = 0, "", "", ""
    dtype = _model_dtype(layers)
    if emb is not None:
        vocab, embed_loc = emb
        head = find_lm_head(g, d_model)
        if head is not None and head[0] == vocab:
            head_loc = head[1]
            head_idx = next(i for i, n in enumerate(g.nodes) if n.name == head_loc)
            final = norm_nodes(g, list(range(head_idx)))
            final_loc = g.nodes[final[-1]].name if final else head_loc
        else:
            notes.append("no LM head MatMul [d_model, vocab] found; using the embedding's vocab")
            head_loc = final_loc = embed_loc
    name = re.sub(r"\.onnx$", "", path.rsplit("/", 1)[-1])
    return ModelSpec(
        name=name,
        d_model=d_model,
        vocab=vocab,
        dtype=dtype,
        layers=tuple(layers),
        source=path,
        embed_loc=embed_loc,
        final_norm_loc=final_loc,
        lm_head_loc=head_loc,
        notes=tuple(notes),
    )


def _model_dtype(layers: list[LayerSpec]) -> DType:
    for layer in layers:
        ffn = layer.moe.ffn if layer.moe is not None else layer.mlp
        if ffn.dtype in (DType.F32, DType.F16, DType.BF16):
            return ffn.dtype
    return DType.BF16
