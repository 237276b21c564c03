"""Feed-forward shapes: dense MLPs, shared experts and the activation between the matrices."""

from __future__ import annotations

from collections import deque

from ndpc.compiler.frontend.graph import OnnxGraph
from ndpc.ir.attrs import Activation, FfnAttr
from ndpc.ir.types import DType

_FLOATS = (DType.F32, DType.F16, DType.BF16)

_ACT_OPS = {
    "Relu": "relu",
    "Gelu": "gelu",
    "Erf": "gelu",
    "Tanh": "gelu",
    "FastGelu": "gelu",
    "BiasGelu": "gelu",
    "Sigmoid": "silu",
    "Silu": "silu",
    "Swish": "silu",
    "QuickGelu": "silu",
}


def matmul_weight(g: OnnxGraph, i: int) -> tuple[int, int] | None:
    """(in, out) widths of a MatMul/Gemm whose second operand is a constant matrix."""
    cache = g.cache.setdefault("matmul_weight", {})
    if i not in cache:
        cache[i] = _matmul_weight(g, i)
    return cache[i]


def _matmul_weight(g: OnnxGraph, i: int) -> tuple[int, int] | None:
    node = g.nodes[i]
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return None
    w = g.weight_root(node.input[1])
    if w is None or len(w.dims) != 2:
        return None
    if node.op_type == "Gemm" and g.attr(node, "transB", 0) == 1:
        return w.dims[1], w.dims[0]
    return w.dims[0], w.dims[1]


def weight_dtype(g: OnnxGraph, i: int) -> DType:
    """Element type of a MatMul/Gemm's constant weight (f32 when unknown)."""
    w = g.weight_root(g.nodes[i].input[1])
    return (w.dtype if w is not None else None) or DType.F32


def activation_of(g: OnnxGraph, nodes: set[int] | list[int], gated: bool) -> Activation:
    """The activation used by `nodes` (SiLU unless Relu/Gelu/Erf is seen)."""
    kinds = {_ACT_OPS[g.nodes[i].op_type] for i in nodes if g.nodes[i].op_type in _ACT_OPS}
    if "relu" in kinds and not gated:
        return Activation.RELU
    if "gelu" in kinds:
        return Activation.GEGLU if gated else Activation.GELU
    return Activation.SWIGLU if gated else (Activation.SILU if "silu" in kinds else Activation.RELU)


def clamp_of(g: OnnxGraph, nodes: set[int] | list[int]) -> float:
    """The SwiGLU clamp limit (largest constant Clip max), 0 if none."""
    limit = 0.0
    for i in nodes:
        node = g.nodes[i]
        if node.op_type == "Clip" and len(node.input) > 2 and node.input[2]:
            c = g.const(node.input[2])
            # int clips bound expert ids / offsets (grouped dispatch), not activations
            if c is not None and c.dtype in _FLOATS and c.value is not None and c.value.size == 1:
                limit = max(limit, float(c.value.reshape(-1)[0]))
    return limit


def feeders(g: OnnxGraph, value: str, allowed: set[int], depth: int = 8) -> list[int]:
    """Const-weight MatMul/Gemm nodes whose outputs reach `value` through weight-free ops."""
    found, queue, seen = [], deque([(value, 0)]), {value}
    while queue:
        name, d = queue.popleft()
        i = g.producer.get(name)
        if i is None or i not in allowed or d > depth:
            continue
        if matmul_weight(g, i) is not None:
            found.append(i)
            continue
        for inp in g.nodes[i].input:
            if inp and inp not in seen and g.const(inp) is None:
                seen.add(inp)
                queue.append((inp, d + 1))
    return sorted(found)


def ffn_from_down(
    g: OnnxGraph, down: int, allowed: set[int], bias: bool = False
) -> tuple[FfnAttr, list[int]] | None:
    """An MLP read backwards from its down projection: (shape, [up-side matmuls..., down])."""
    shape = matmul_weight(g, down)
    if shape is None:
        return None
    d_ff, d_model = shape
    ups = feeders(g, g.nodes[down].input[0], allowed)
    if not ups:
        return None
    widths = [matmul_weight(g, i)[1] for i in ups]
    gated = len(ups) >= 2 or widths[0] == 2 * d_ff
    region = set(range(min(ups), down + 1)) & allowed
    act = activation_of(g, region, gated)
    ffn = FfnAttr(
        d_model=d_model,
        d_ff=d_ff,
        activation=act,
        bias=bias,
        dtype=weight_dtype(g, down),
        clamp=clamp_of(g, region),
    )
    return ffn, [*ups, down]


def last_mlp(g: OnnxGraph, nodes: list[int], allowed: set[int]):
    """The dense MLP of a layer: the last const-weight matmul is its down projection."""
    mats = [i for i in nodes if matmul_weight(g, i) is not None]
    for down in reversed(mats):
        found = ffn_from_down(g, down, allowed)
        if found is not None:
            return found
    return None
