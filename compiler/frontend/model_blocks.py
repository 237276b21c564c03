"""Blocks of `ndpc model make` graphs: attention (GQA/MHA, MLA), MLPs, routers and P1 experts."""

from __future__ import annotations

import math

from ndpc.compiler.frontend.model_routers import router
from ndpc.compiler.frontend.naming import shared_scope
from ndpc.compiler.frontend.onnx_writer import GraphWriter
from ndpc.compiler.zoo import ModelConfig


def _heads_split(w: GraphWriter, x: str, heads: int, dim: int, scope: str, name: str) -> str:
    """[T, heads*dim] -> [heads, T, dim]."""
    r = w.op1("Reshape", [x, w.ints(name, [-1, heads, dim])], scope)
    return w.op1("Transpose", [r], scope, perm=[1, 0, 2])


def _attend(
    w: GraphWriter, q: str, k: str, v: str, mask: str, qk_dim: int, scope: str, param: str
) -> str:
    """softmax(q k^T / sqrt(d) + mask) v for [heads, T, d] inputs -> [T, heads*dv]."""
    kt = w.op1("Transpose", [k], scope, perm=[0, 2, 1])
    s = w.op1("MatMul", [q, kt], scope)
    s = w.op1("Mul", [s, w.scalar(f"{param}.scale", 1.0 / math.sqrt(qk_dim))], scope)
    p = w.op1("Softmax", [w.op1("Add", [s, mask], scope)], scope, axis=-1)
    o = w.op1("Transpose", [w.op1("MatMul", [p, v], scope)], scope, perm=[1, 0, 2])
    return w.op1("Reshape", [o, w.ints(f"{param}.merge", [0, -1])], scope)


def gqa_attention(w: GraphWriter, cfg: ModelConfig, i: int, x: str, mask: str) -> str:
    """Multi-head / grouped-query attention without KV-cache inputs (use_cache=False export)."""
    s, param = f"/model/layers.{i}/self_attn", f"model.layers.{i}.self_attn"
    h, nh, kv, hd = cfg.d_model, cfg.heads, cfg.kv_heads, cfg.head_dim

    def proj(name: str, width: int, inp: str = x, rows: int = h) -> str:
        return w.op1(
            "MatMul", [inp, w.weight(f"{param}.{name}.weight", (rows, width))], f"{s}/{name}"
        )

    q = _heads_split(w, proj("q_proj", nh * hd), nh, hd, s, f"{param}.q_shape")
    k = _heads_split(w, proj("k_proj", kv * hd), kv, hd, s, f"{param}.kv_shape")
    v = _heads_split(w, proj("v_proj", kv * hd), kv, hd, s, f"{param}.kv_shape2")
    if kv != nh:  # repeat_kv: [kv, T, d] -> [kv, rep, T, d] -> [heads, T, d]
        rep = w.ints(f"{param}.repeat", [1, nh // kv, 1, 1])
        grow = w.ints(f"{param}.unsq", [1])
        back = w.ints(f"{param}.heads_shape", [nh, -1, hd])
        k = w.op1("Reshape", [w.op1("Expand", [w.op1("Unsqueeze", [k, grow], s), rep], s), back], s)
        v = w.op1("Reshape", [w.op1("Expand", [w.op1("Unsqueeze", [v, grow], s), rep], s), back], s)
    o = _attend(w, q, k, v, mask, hd, s, param)
    return proj("o_proj", h, o, nh * hd)


def mla_attention(w: GraphWriter, cfg: ModelConfig, i: int, x: str, mask: str) -> str:
    """DeepSeek multi-head latent attention (q_proj or q_a/q_b, kv_a_proj_with_mqa, kv_b_proj)."""
    s, param = f"/model/layers.{i}/self_attn", f"model.layers.{i}.self_attn"
    h, nh, qk = cfg.d_model, cfg.heads, cfg.head_dim
    rope = cfg.kv_cache_dim - cfg.kv_lora_rank
    v_dim = qk - rope  # qk_nope_head_dim == v_head_dim in DeepSeek-V2/V3

    def mm(name: str, inp: str, rows: int, width: int) -> str:
        return w.op1(
            "MatMul", [inp, w.weight(f"{param}.{name}.weight", (rows, width))], f"{s}/{name}"
        )

    kv_a = mm("kv_a_proj_with_mqa", x, h, cfg.kv_cache_dim)
    if cfg.q_lora_rank:
        q = mm("q_b_proj", mm("q_a_proj", x, h, cfg.q_lora_rank), cfg.q_lora_rank, nh * qk)
    else:
        q = mm("q_proj", x, h, nh * qk)
    q = _heads_split(w, q, nh, qk, s, f"{param}.q_shape")
    axis1 = w.ints(f"{param}.axis1", [1])
    latent = w.op1(
        "Slice",
        [kv_a, w.ints(f"{param}.s0", [0]), w.ints(f"{param}.s1", [cfg.kv_lora_rank]), axis1],
        s,
    )
    k_rope = w.op1(
        "Slice", [kv_a, f"{param}.s1", w.ints(f"{param}.s2", [cfg.kv_cache_dim]), axis1], s
    )
    kv = mm("kv_b_proj", latent, cfg.kv_lora_rank, nh * 2 * v_dim)
    kv = w.op1("Reshape", [kv, w.ints(f"{param}.kv_shape", [-1, nh, 2 * v_dim])], s)
    k_nope, v = w.op("Split", [kv, w.ints(f"{param}.split", [v_dim, v_dim])], s, outputs=2, axis=2)
    k_rope = w.op1(
        "Expand",
        [w.op1("Unsqueeze", [k_rope, axis1], s), w.ints(f"{param}.rope_heads", [1, nh, 1])],
        s,
    )
    k = w.op1("Transpose", [w.op1("Concat", [k_nope, k_rope], s, axis=2)], s, perm=[1, 0, 2])
    v = w.op1("Transpose", [v], s, perm=[1, 0, 2])
    o = _attend(w, q, k, v, mask, qk, s, param)
    return mm("o_proj", o, nh * v_dim, h)


def mlp(w: GraphWriter, cfg: ModelConfig, x: str, scope: str, param: str, d_ff: int) -> str:
    """gate/up/down (SwiGLU/GeGLU) or up/down (ReLU/GELU/SiLU) with 2-D weights."""
    h = cfg.d_model

    def mm(name: str, inp: str, rows: int, width: int) -> str:
        return w.op1(
            "MatMul", [inp, w.weight(f"{param}.{name}.weight", (rows, width))], f"{scope}/{name}"
        )

    if cfg.activation in ("swiglu", "geglu"):
        gate = _act(w, cfg.activation, mm("gate_proj", x, h, d_ff), scope)
        y = w.op1("Mul", [gate, mm("up_proj", x, h, d_ff)], scope)
    else:
        y = _act(w, cfg.activation, mm("up_proj", x, h, d_ff), scope)
    return mm("down_proj", y, d_ff, h)


def _act(w: GraphWriter, activation: str, x: str, scope: str) -> str:
    if activation == "relu":
        return w.op1("Relu", [x], scope)
    if activation in ("gelu", "geglu"):
        return w.op1("Gelu", [x], scope)
    return w.op1("Mul", [x, w.op1("Sigmoid", [x], scope)], scope)


def dense_mlp(w: GraphWriter, cfg: ModelConfig, i: int, x: str) -> str:
    """The dense MLP of layer `i` (d_ff_dense wide)."""
    return mlp(w, cfg, x, f"/model/layers.{i}/mlp", f"model.layers.{i}.mlp", cfg.d_ff_dense)


def moe_block(w: GraphWriter, cfg: ModelConfig, i: int, x: str) -> str:
    """Router + P1 experts (+ shared experts) of layer `i`."""

    p, param = f"/model/layers.{i}/mlp", f"model.layers.{i}.mlp"
    idx, weights = router(w, cfg, i, x)
    if w.router_outputs:
        w.expose(idx, f"router.{i}.experts", f"{p}/gate")
        w.expose(weights, f"router.{i}.weights", f"{p}/gate")
    out = _experts(w, cfg, x, idx, weights, f"{p}/experts", f"{param}.experts")
    return _with_shared_experts(w, cfg, i, x, out, p, param)


def fused_moe_block(w: GraphWriter, cfg: ModelConfig, i: int, x: str) -> str:
    """The onnxruntime-genai builder's form: router MatMul (+Add) -> Reshape -> com.microsoft::MoE.

    Gated experts use fc1 = interleaved gate/up rows (swiglu_fusion=1, the only SwiGLU layout the
    CPU kernel runs); top-k-then-softmax routing is written as softmax -> top-k -> renormalise,
    which is the same function.
    """
    s, param = f"/model/layers.{i}/moe", f"model.layers.{i}.moe"
    e, h, d_ff = cfg.experts, cfg.d_model, cfg.d_ff_expert
    logits = w.op1("MatMul", [x, w.weight(f"{param}.router.MatMul.weight", (h, e))], f"{s}/router")
    if cfg.expert_bias:
        logits = w.op1(
            "Add", [logits, w.weight(f"{param}.router.Add.bias", (e,), 0.05)], f"{s}/router"
        )
    probs = w.op1("Reshape", [logits, w.ints(f"{param}.router.shape", [-1, e])], f"{s}/router")
    gated = cfg.activation in ("swiglu", "geglu")
    rows = 2 * d_ff if gated else d_ff
    bias = cfg.expert_bias
    inputs = [
        x,
        probs,
        w.weight(f"{param}.experts.gate_up_proj.weight", (e, rows, h)),
        w.weight(f"{param}.experts.gate_up_proj.bias", (e, rows), 0.05) if bias else "",
        w.weight(f"{param}.experts.down_proj.weight", (e, h, d_ff)),
        w.weight(f"{param}.experts.down_proj.bias", (e, h), 0.05) if bias else "",
    ]
    attrs = {
        "k": cfg.top_k,
        "activation_type": cfg.activation if cfg.activation != "geglu" else "geglu",
        "normalize_routing_weights": int(cfg.renormalize or cfg.routing == "topk_softmax"),
        "use_sparse_mixer": int(cfg.routing == "sparsemixer"),
    }
    if gated:
        attrs["swiglu_fusion"] = 1
    if cfg.clamp:
        attrs.update(swiglu_limit=cfg.clamp, activation_alpha=1.702, activation_beta=1.0)
    out = w.op1("MoE", inputs, s, domain="com.microsoft", **attrs)
    return _with_shared_experts(w, cfg, i, x, out, s, param)


def _with_shared_experts(
    w: GraphWriter, cfg: ModelConfig, i: int, x: str, out: str, scope: str, param: str
) -> str:
    """`out` plus layer i's shared experts (sigmoid-gated when the model gates them), if any."""
    if not cfg.shared_experts:
        return out

    shared_at = shared_scope(cfg, i)
    name = shared_at.rsplit("/", 1)[-1]
    shared = mlp(w, cfg, x, shared_at, f"{param}.{name}", cfg.shared_experts * cfg.shared_width)
    if cfg.shared_gated:
        g = w.op1(
            "MatMul",
            [x, w.weight(f"{param}.shared_expert_gate.weight", (cfg.d_model, 1))],
            f"{scope}/shared_expert_gate",
        )
        shared = w.op1("Mul", [shared, w.op1("Sigmoid", [g], scope)], scope)
    return w.op1("Add", [out, shared], scope)


def _experts(
    w: GraphWriter, cfg: ModelConfig, x: str, idx: str, weights: str, s: str, param: str
) -> str:
    """Pattern P1: gather each routed row's expert weights, then batched MatMuls."""
    e, h, d_ff, k = cfg.experts, cfg.d_model, cfg.d_ff_expert, cfg.top_k
    gated = cfg.activation in ("swiglu", "geglu")
    rows = 2 * d_ff if gated else d_ff
    w_up = w.weight(f"{param}.gate_up_proj" if gated else f"{param}.up_proj", (e, rows, h))
    w_down = w.weight(f"{param}.down_proj", (e, h, d_ff))
    flat = w.op1("Reshape", [idx, w.ints(f"{param}.flat", [-1])], s)
    g_up = w.op1("Gather", [w_up, flat], s, axis=0)  # [S, rows, H]: first use = IR location
    ax1, ax2 = w.ints(f"{param}.axis1", [1]), w.ints(f"{param}.axis2", [2])
    xs = w.op1("Expand", [w.op1("Unsqueeze", [x, ax1], s), w.ints(f"{param}.k", [1, k, 1])], s)
    xs = w.op1("Unsqueeze", [w.op1("Reshape", [xs, w.ints(f"{param}.rows", [-1, h])], s), ax2], s)
    y = w.op1("Squeeze", [w.op1("MatMul", [g_up, xs], s), ax2], s)
    if cfg.expert_bias:
        b = w.weight(f"{param}.gate_up_proj_bias", (e, rows), 0.05)
        y = w.op1("Add", [y, w.op1("Gather", [b, flat], s, axis=0)], s)
    y = _expert_act(w, cfg, y, rows, s, param) if gated else _act(w, cfg.activation, y, s)
    g_down = w.op1("Gather", [w_down, flat], s, axis=0)
    o = w.op1("Squeeze", [w.op1("MatMul", [g_down, w.op1("Unsqueeze", [y, ax2], s)], s), ax2], s)
    if cfg.expert_bias:
        b = w.weight(f"{param}.down_proj_bias", (e, h), 0.05)
        o = w.op1("Add", [o, w.op1("Gather", [b, flat], s, axis=0)], s)
    o = w.op1("Mul", [o, w.op1("Reshape", [weights, w.ints(f"{param}.col", [-1, 1])], s)], s)
    o = w.op1("Reshape", [o, w.ints(f"{param}.tkh", [-1, k, h])], s)
    return w.op1("ReduceSum", [o, ax1], s, keepdims=0)


def _expert_act(w: GraphWriter, cfg: ModelConfig, y: str, rows: int, s: str, param: str) -> str:
    if not cfg.clamp:  # [gate | up] halves, SiLU/GELU(gate) * up
        gate, up = w.op(
            "Split", [y, w.ints(f"{param}.halves", [rows // 2, rows // 2])], s, outputs=2, axis=1
        )
        return w.op1("Mul", [_act(w, cfg.activation, gate, s), up], s)
    # GPT-OSS: interleaved gate/up rows, clamped, gate * sigmoid(1.702 gate) * (up + 1)
    axis, two = w.ints(f"{param}.ax", [1]), w.ints(f"{param}.step", [2])
    end = w.ints(f"{param}.end", [rows])
    gate = w.op1("Slice", [y, w.ints(f"{param}.even", [0]), end, axis, two], s)
    up = w.op1("Slice", [y, w.ints(f"{param}.odd", [1]), end, axis, two], s)
    lim = w.scalar(f"{param}.limit", cfg.clamp)
    gate = w.op1("Clip", [gate, "", lim], s)
    up = w.op1("Clip", [up, w.scalar(f"{param}.neg_limit", -cfg.clamp), lim], s)
    glu = w.op1(
        "Mul",
        [gate, w.op1("Sigmoid", [w.op1("Mul", [gate, w.scalar(f"{param}.alpha", 1.702)], s)], s)],
        s,
    )
    return w.op1("Mul", [w.op1("Add", [up, w.scalar(f"{param}.one", 1.0)], s), glu], s)
