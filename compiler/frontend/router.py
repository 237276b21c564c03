"""Router patterns: which TopK/ArgMax is a router, its gate MatMul/Gemm and its routing rule.

Recognised (docs/frontend.md): softmax -> TopK (with or without ReduceSum+Div renormalisation),
TopK -> softmax (GPT-OSS), sigmoid + bias + group-limited top-k with three TopKs (DeepSeek-V3: only
the last is the router), SparseMixer with ArgMax rounds and no TopK (PhiMoE), top-1 ArgMax
(Switch), and argsort TopKs (largest=0) that are never routers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import onnx

from ndpc.compiler.frontend.graph import OnnxGraph, op_name
from ndpc.ir.attrs import RouterAttr, RoutingRule
from ndpc.ir.diagnostics import NdpcError

# Ops a routing decision flows through between the router and the expert computation.
_INDEX_PATH = {
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Identity",
    "Flatten",
    "Concat",
    "Expand",
    "Tile",
    "Transpose",
    "Slice",
    "Split",
}
# Consumers of router indices that mean "experts are selected here".
_EXPERT_USES = {"Gather", "GatherND", "OneHot", "Equal", "TopK", "ScatterElements", "ScatterND"}


@dataclass(frozen=True)
class RouterMatch:
    """A router found in the graph."""

    anchor: int  # node index of the router TopK / first ArgMax
    indices: tuple[str, ...]  # values holding the chosen expert ids
    gemm: int  # node index of the gate MatMul/Gemm
    hidden: str  # the activation the gate reads (the MoE block's input)
    d_model: int
    experts: int
    router: RouterAttr
    weight: str  # initializer of the gate


def is_router_topk(g: OnnxGraph, i: int) -> bool:
    """A largest-k TopK whose indices select experts and that feeds no later TopK (pre-selection)."""
    node = g.nodes[i]
    if node.op_type != "TopK" or g.attr(node, "largest", 1) == 0:
        return False
    if len(node.output) < 2 or not _reaches_expert_use(g, node.output[1]):
        return False
    return not _feeds_topk(g, i)


def _reaches_expert_use(g: OnnxGraph, value: str, budget: int = 40) -> bool:
    queue, seen = deque([value]), {value}
    while queue and budget > 0:
        budget -= 1
        for user in g.users(queue.popleft()):
            if user.op_type in _EXPERT_USES:
                if user.op_type not in ("Gather", "GatherND"):
                    return True
                data = g.weight_root(user.input[0])
                if data is not None and len(data.dims) >= 2 and user.input[1] != user.input[0]:
                    return True
            if user.op_type in _INDEX_PATH | {"Gather", "GatherND", "Mul", "Add", "Sub"}:
                for out in user.output:
                    if out and out not in seen:
                        seen.add(out)
                        queue.append(out)
    return False


def _feeds_topk(g: OnnxGraph, i: int, budget: int = 60) -> bool:
    """True when another largest TopK is reached without crossing a MatMul (a group pre-selection)."""
    queue, seen = deque(o for o in g.nodes[i].output if o), set()
    while queue and budget > 0:
        budget -= 1
        for j in g.consumers.get(queue.popleft(), ()):
            if j in seen:
                continue
            seen.add(j)
            node = g.nodes[j]
            if node.op_type in ("MatMul", "Gemm", "Einsum") or node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "TopK" and g.attr(node, "largest", 1) != 0:
                return True
            queue.extend(o for o in node.output if o)
    return False


def find_gate(g: OnnxGraph, value: str, where: str, depth: int = 16):
    """The gate MatMul/Gemm upstream of `value`: (node index, weight const, d_model, experts)."""
    queue, seen = deque([(value, 0)]), {value}
    while queue:
        name, d = queue.popleft()
        i = g.producer.get(name)
        if i is None or d > depth:
            continue
        node = g.nodes[i]
        if node.op_type in ("MatMul", "Gemm"):
            w = g.weight_root(node.input[1])
            if w is not None and len(w.dims) == 2:
                trans = node.op_type == "Gemm" and g.attr(node, "transB", 0) == 1
                d_model, experts = (w.dims[1], w.dims[0]) if trans else w.dims
                return i, w, d_model, experts
        for inp in node.input:
            if inp and inp not in seen and g.const(inp) is None:
                seen.add(inp)
                queue.append((inp, d + 1))
    raise NdpcError(
        f"{g.path}: {where}: no router MatMul/Gemm with a constant [d_model, experts] "
        "weight found upstream"
    )


def _ancestors_ops(g: OnnxGraph, start: str, stop: int, depth: int = 40) -> list[onnx.NodeProto]:
    """Nodes between the gate (`stop`) and `start`, walking producers (non-constant inputs)."""
    out, queue, seen = [], deque([start]), {start}
    while queue and depth > 0:
        depth -= 1
        i = g.producer.get(queue.popleft())
        if i is None or i == stop:
            continue
        out.append(g.nodes[i])
        for inp in g.nodes[i].input:
            if inp and inp not in seen and g.const(inp) is None:
                seen.add(inp)
                queue.append(inp)
    return out


def match_topk_router(g: OnnxGraph, i: int) -> RouterMatch:
    """Classify the router TopK `i` (see module docstring)."""
    node = g.nodes[i]
    where = f"router node '{node.name}' (TopK)"
    k = g.int_value(node.input[1]) if len(node.input) > 1 else g.attr(node, "k")
    if k is None:
        raise NdpcError(f"{g.path}: {where}: k is not a constant")
    gemm, w, d_model, experts = find_gate(g, node.input[0], where)
    if not (isinstance(k, int) and 1 <= k <= experts):
        raise NdpcError(f"{g.path}: {where}: k = {k!r} must be in 1..{experts} (the experts)")
    between = _ancestors_ops(g, node.input[0], gemm)
    ops = {n.op_type for n in between}
    value_users = _users_through_casts(g, node.output[0])
    groups = topk_groups = 1
    if "Sigmoid" in ops:
        rule = RoutingRule.SIGMOID_GROUP_TOPK
        pre = [n for n in between if n.op_type == "TopK"]
        if pre:
            group_topk = pre[0] if len(pre) == 1 else _group_select(g, pre)
            topk_groups = g.int_value(group_topk.input[1]) or 1
            groups = _group_count(g, group_topk) or 1
        renorm = _renormalised_anywhere(g, i)
    elif "Softmax" in ops:
        rule, renorm = (
            RoutingRule.SOFTMAX_TOPK,
            {"ReduceSum", "Div"} <= _downstream_ops(g, node.output[0]),
        )
    elif "Softmax" in value_users:
        rule, renorm = RoutingRule.TOPK_SOFTMAX, False
    else:
        raise NdpcError(
            f"{g.path}: {where}: neither softmax nor sigmoid between gate "
            f"'{g.nodes[gemm].name}' and TopK, and no Softmax on its values (ops seen: "
            f"{sorted(ops)}; its values go to {sorted(value_users) or 'nothing'})"
        )
    attr = RouterAttr(
        rule=rule,
        k=int(k),
        renormalize=bool(renorm),
        groups=groups,
        topk_groups=min(topk_groups, groups),
    )
    return RouterMatch(
        i, (node.output[1],), gemm, g.nodes[gemm].input[0], d_model, experts, attr, w.name
    )


def _users_through_casts(g: OnnxGraph, value: str) -> set[str]:
    """Op types reading `value`, looking through Cast/Identity (the genai builder's fp16 graphs
    take TopK in fp32 and cast its values back before the Softmax)."""
    ops, frontier = set(), [value]
    for _ in range(4):
        nxt = []
        for user in (u for v in frontier for u in g.users(v)):
            if user.op_type in ("Cast", "Identity"):
                nxt.extend(o for o in user.output if o)
            else:
                ops.add(user.op_type)
        frontier = nxt
    return ops


def _group_select(g: OnnxGraph, pre: list[onnx.NodeProto]) -> onnx.NodeProto:
    """Of DeepSeek's two pre-selection TopKs, the one choosing groups reads a ReduceSum."""
    for n in pre:
        src = g.producer_of(n.input[0])
        if src is not None and src.op_type in ("ReduceSum", "ReduceMax"):
            return n
    return pre[0]


def _group_count(g: OnnxGraph, group_topk: onnx.NodeProto) -> int | None:
    shape = g.shape(group_topk.input[0])
    if shape and shape[-1]:
        return shape[-1]
    # Walk back to the Reshape(T, G, E/G) that made the groups.
    for n in _ancestors_ops(g, group_topk.input[0], -1, depth=8):
        if n.op_type == "Reshape":
            c = g.const(n.input[1])
            if c is not None and c.value is not None and c.value.size == 3:
                return int(c.value.reshape(-1)[1])
    return None


def _downstream_ops(g: OnnxGraph, value: str, depth: int = 3) -> set[str]:
    ops, frontier = set(), [value]
    for _ in range(depth):
        nxt = []
        for v in frontier:
            for u in g.users(v):
                ops.add(u.op_type)
                nxt.extend(o for o in u.output if o)
        frontier = nxt
    return ops


def _renormalised_anywhere(g: OnnxGraph, topk: int) -> bool:
    """DeepSeek gathers the sigmoid scores by the indices, then ReduceSum + Div."""
    ops = _downstream_ops(g, g.nodes[topk].output[1], depth=4)
    return {"ReduceSum", "Div"} <= ops


def match_argmax_router(g: OnnxGraph, argmaxes: list[int]) -> RouterMatch:
    """SparseMixer (k ArgMax rounds, no TopK) or a top-1 ArgMax router (Switch)."""
    first = g.nodes[argmaxes[0]]
    where = f"router node '{first.name}' (ArgMax)"
    gemm, w, d_model, experts = find_gate(g, first.input[0], where)
    k = len(argmaxes)
    rule = RoutingRule.SPARSEMIXER if k > 1 else RoutingRule.TOP1_CAPACITY
    attr = RouterAttr(rule=rule, k=k, renormalize=False)
    indices = tuple(g.nodes[a].output[0] for a in argmaxes)
    return RouterMatch(
        argmaxes[0], indices, gemm, g.nodes[gemm].input[0], d_model, experts, attr, w.name
    )


def argmax_router_groups(g: OnnxGraph) -> list[list[int]]:
    """ArgMax nodes that select experts, grouped per gate (one group = one router)."""
    by_gate: dict[int, list[int]] = {}
    for i, node in enumerate(g.nodes):
        if node.op_type != "ArgMax" or not _reaches_expert_use(g, node.output[0]):
            continue
        try:
            gemm = find_gate(g, node.input[0], node.name)[0]
        except NdpcError:
            continue
        by_gate.setdefault(gemm, []).append(i)
    return [sorted(v) for _, v in sorted(by_gate.items())]


def describe(node: onnx.NodeProto) -> str:
    """`'name' (OpType)` for messages."""
    return f"'{node.name}' ({op_name(node)})"
