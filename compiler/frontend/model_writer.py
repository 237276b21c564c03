"""`ndpc model make`: a zoo model as the ONNX graph a real exporter would produce.

Form: `torch.onnx.export(dynamo=False)` of a transformers 5.x model with
`experts_implementation="batched_mm"` (pattern P1: Gather over stacked [E, N, K] expert weights +
batched MatMul), with TorchScript module-path node names (`/model/layers.3/mlp/gate/TopK`),
simplified to one sequence: input `input_ids` int64 [1, seq], output `logits` [1, seq, vocab]. Rotary
embeddings are left out (they have no weights). `form="fused"` instead writes one
`com.microsoft::MoE` node per MoE layer fed by the router MatMul + Reshape, as the
onnxruntime-genai builder does. `ndpc.compiler.frontend.naming` gives the node each IR
op's location names, so the zoo's direct IR build and an import of this graph print the same IR.
"""

from __future__ import annotations

from onnx import TensorProto, helper

from ndpc.compiler.frontend.model_blocks import (
    dense_mlp,
    fused_moe_block,
    gqa_attention,
    mla_attention,
    moe_block,
)
from ndpc.compiler.frontend.onnx_writer import GraphWriter
from ndpc.compiler.zoo import ModelConfig
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.types import DType

OPSET = 20


def make_model(
    cfg: ModelConfig,
    data_file: str,
    tiny_weights: bool = False,
    seed: int = 0,
    router_outputs: bool = False,
    form: str = "decomposed",
):
    """The ONNX ModelProto of `cfg` (weights external unless `tiny_weights`).

    `router_outputs` adds graph outputs `router.<layer>.experts` (int64 [seq, k], best first) and
    `router.<layer>.weights` ([seq, k]) per MoE layer, through Identity nodes, for trace capture.
    `form="fused"` writes com.microsoft::MoE nodes as the onnxruntime-genai builder does.
    """
    if form not in ("decomposed", "fused"):
        raise NdpcError(f"unknown graph form '{form}' (decomposed or fused)")
    if form == "fused" and cfg.routing == "sigmoid_group_topk":
        raise NdpcError(
            f"{cfg.name}: sigmoid group-limited routing has no com.microsoft::MoE form "
            "(the op applies a softmax to router_probs); use the decomposed form"
        )
    dtype = DType.F32 if tiny_weights else DType(cfg.dtype)
    w = GraphWriter(dtype, data_file, tiny_weights, seed)
    w.router_outputs = router_outputs
    w.form = form
    x = w.op1(
        "Gather",
        [w.weight("model.embed_tokens.weight", (cfg.vocab, cfg.d_model), 1.0), "input_ids"],
        "/model/embed_tokens",
        axis=0,
    )
    x = w.op1("Reshape", [x, w.ints("rows_shape", [-1, cfg.d_model])], "/model")  # [T, H]
    mask = _causal_mask(w)
    for i in range(cfg.layers):
        x = _layer(w, cfg, i, x, mask)
    x = _norm(w, cfg, x, "/model/norm", "model.norm")
    logits = w.op1("MatMul", [x, w.weight("lm_head.weight", (cfg.d_model, cfg.vocab))], "/lm_head")
    w.op("Reshape", [logits, w.ints("logits_shape", [1, -1, cfg.vocab])], "/lm_head")
    w.nodes[-1].output[0] = "logits"
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"])]
    outputs = [helper.make_tensor_value_info("logits", w.elem, [1, "seq", cfg.vocab])]
    for name in w.extra_outputs:
        elem = TensorProto.INT64 if name.endswith(".experts") else w.elem
        outputs.append(helper.make_tensor_value_info(name, elem, ["seq", cfg.top_k]))
    opsets = {"": OPSET, "com.microsoft": 1} if form == "fused" else {"": OPSET}
    return w.model(cfg.name, inputs, outputs, opsets)


def _causal_mask(w: GraphWriter) -> str:
    s = "/model/attn_mask"
    n = w.op1("Shape", ["input_ids"], s, start=1, end=2)
    t = w.op1("Squeeze", [n, w.ints("attn_mask.axis0", [0])], s)
    pos = w.op1("Range", [w.ints("attn_mask.zero", [0]), t, w.ints("attn_mask.one", [1])], s)
    pos = w.op1("Reshape", [pos, w.ints("attn_mask.flat", [-1])], s)
    row = w.op1("Unsqueeze", [pos, w.ints("attn_mask.axis1", [1])], s)
    col = w.op1("Unsqueeze", [pos, "attn_mask.axis0"], s)
    future = w.op1("Greater", [col, row], s)
    return w.op1(
        "Where", [future, w.scalar("attn_mask.neg", -1e9), w.scalar("attn_mask.zero_f", 0.0)], s
    )


def _norm(w: GraphWriter, cfg: ModelConfig, x: str, scope: str, param: str) -> str:
    weight = w.weight(f"{param}.weight", (cfg.d_model,), 0.05)
    if cfg.norm == "layer":
        bias = w.weight(f"{param}.bias", (cfg.d_model,), 0.05)
        return w.op1("LayerNormalization", [x, weight, bias], scope, axis=-1)
    sq = w.op1("Mul", [x, x], scope)
    ms = w.op1("ReduceMean", [sq, w.ints(f"{param}.axes", [-1])], scope, keepdims=1)
    r = w.op1("Sqrt", [w.op1("Add", [ms, w.scalar(f"{param}.eps", 1e-6)], scope)], scope)
    y = w.op1("Div", [x, r], scope)
    return w.op1("Mul", [y, w.op1("Add", [weight, w.scalar(f"{param}.one", 1.0)], scope)], scope)


def _layer(w: GraphWriter, cfg: ModelConfig, i: int, x: str, mask: str) -> str:
    p, param = f"/model/layers.{i}", f"model.layers.{i}"
    n1 = _norm(w, cfg, x, f"{p}/input_layernorm", f"{param}.input_layernorm")
    attention = mla_attention if cfg.attention == "mla" else gqa_attention
    x = w.op1("Add", [x, attention(w, cfg, i, n1, mask)], p)
    n2 = _norm(w, cfg, x, f"{p}/post_attention_layernorm", f"{param}.post_attention_layernorm")
    if i in cfg.dense_layers:
        out = dense_mlp(w, cfg, i, n2)
    else:
        out = (fused_moe_block if w.form == "fused" else moe_block)(w, cfg, i, n2)
    return w.op1("Add", [x, out], p)
