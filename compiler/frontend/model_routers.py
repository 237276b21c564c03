"""Routers of `ndpc model make` graphs, one per `RoutingRule`, as torch exports spell them."""

from __future__ import annotations

from ndpc.compiler.frontend.onnx_writer import GraphWriter
from ndpc.compiler.zoo import ModelConfig


def router(w: GraphWriter, cfg: ModelConfig, i: int, x: str) -> tuple[str, str]:
    """The gate of layer `i`: returns (expert ids [T, k] int64, weights [T, k])."""
    s, param = f"/model/layers.{i}/mlp/gate", f"model.layers.{i}.mlp.gate"
    logits = w.op1("MatMul", [x, w.weight(f"{param}.weight", (cfg.d_model, cfg.experts))], s)
    if cfg.expert_bias:  # GPT-OSS routers have a bias too
        logits = w.op1("Add", [logits, w.weight(f"{param}.bias", (cfg.experts,), 0.05)], s)
    build = {
        "softmax_topk": _softmax_topk,
        "topk_softmax": _topk_softmax,
        "sigmoid_group_topk": _sigmoid_group,
        "sparsemixer": _sparsemixer,
        "top1_capacity": _top1,
    }[cfg.routing]
    return build(w, cfg, logits, s, param)


def _k(w: GraphWriter, param: str, k: int) -> str:
    return w.ints(f"{param}.k", [k])


def _renorm(w: GraphWriter, values: str, s: str, param: str) -> str:
    total = w.op1("ReduceSum", [values, w.ints(f"{param}.last", [-1])], s, keepdims=1)
    return w.op1("Div", [values, total], s)


def _softmax_topk(w, cfg, logits, s, param):
    probs = w.op1("Softmax", [logits], s, axis=-1)
    values, idx = w.op("TopK", [probs, _k(w, param, cfg.top_k)], s, outputs=2, axis=-1)
    return idx, _renorm(w, values, s, param) if cfg.renormalize else values


def _topk_softmax(w, cfg, logits, s, param):
    values, idx = w.op("TopK", [logits, _k(w, param, cfg.top_k)], s, outputs=2, axis=-1)
    return idx, w.op1("Softmax", [values], s, axis=-1)


def _sigmoid_group(w, cfg, logits, s, param):
    """DeepSeek-V3 noaux_tc: sigmoid + bias, top-2 per group, top groups, masked final top-k."""
    scores = w.op1("Sigmoid", [logits], s)
    biased = w.op1(
        "Add", [scores, w.weight(f"{param}.e_score_correction_bias", (cfg.experts,), 0.05)], s
    )
    if cfg.groups > 1:
        g, per = cfg.groups, cfg.experts // cfg.groups
        grouped = w.op1("Reshape", [biased, w.ints(f"{param}.groups", [-1, g, per])], s)
        top2, _ = w.op("TopK", [grouped, w.ints(f"{param}.two", [2])], s, outputs=2, axis=-1)
        group_scores = w.op1("ReduceSum", [top2, w.ints(f"{param}.last", [-1])], s, keepdims=0)
        gval, gidx = w.op(
            "TopK",
            [group_scores, w.ints(f"{param}.topk_group", [cfg.topk_groups])],
            s,
            outputs=2,
            axis=-1,
        )
        zero = w.scalar(f"{param}.zero", 0.0)
        ones = w.op1("Add", [w.op1("Mul", [gval, zero], s), w.scalar(f"{param}.one", 1.0)], s)
        mask = w.op1(
            "ScatterElements", [w.op1("Mul", [group_scores, zero], s), gidx, ones], s, axis=1
        )
        mask = w.op1(
            "Expand",
            [
                w.op1("Unsqueeze", [mask, w.ints(f"{param}.axis2", [2])], s),
                w.ints(f"{param}.per", [1, 1, per]),
            ],
            s,
        )
        mask = w.op1("Reshape", [mask, w.ints(f"{param}.flat", [-1, cfg.experts])], s)
        off = w.op1("Not", [w.op1("Cast", [mask], s, to=9)], s)
        biased = w.op1("Where", [off, w.scalar(f"{param}.neg", -1e9), biased], s)
    _, idx = w.op("TopK", [biased, _k(w, param, cfg.top_k)], s, outputs=2, axis=-1)
    weights = w.op1("GatherElements", [scores, idx], s, axis=1)
    return idx, _renorm(w, weights, s, param) if cfg.renormalize else weights


def _sparsemixer(w, cfg, logits, s, param):
    """PhiMoE-like: k ArgMax rounds, each masking the previous choices; no TopK node."""
    ids, weights, masked = [], [], logits
    for r in range(cfg.top_k):
        choice = w.op1("ArgMax", [masked], s, axis=-1, keepdims=1)
        weight = w.op1(
            "GatherElements", [w.op1("Softmax", [masked], s, axis=-1), choice], s, axis=1
        )
        ids.append(choice)
        weights.append(weight)
        if r + 1 < cfg.top_k:
            neg = w.op1(
                "Add",
                [
                    w.op1("Mul", [weight, w.scalar(f"{param}.zero{r}", 0.0)], s),
                    w.scalar(f"{param}.neg{r}", -1e9),
                ],
                s,
            )
            masked = w.op1("ScatterElements", [masked, choice, neg], s, axis=1)
    if len(ids) == 1:
        return ids[0], weights[0]
    return w.op1("Concat", ids, s, axis=1), w.op1("Concat", weights, s, axis=1)


def _top1(w, cfg, logits, s, param):
    """Switch: argmax of the softmax (expert capacity is applied at run time, not here)."""
    probs = w.op1("Softmax", [logits], s, axis=-1)
    idx = w.op1("ArgMax", [probs], s, axis=-1, keepdims=1)
    return idx, w.op1("ReduceMax", [probs, w.ints(f"{param}.last", [-1])], s, keepdims=1)
