"""Fused `com.microsoft::MoE` and `QMoE` nodes (pattern P5).

Each node is read from its own inputs and attributes (the com.microsoft opset version never
changes, so it says nothing about which inputs are present). Optional inputs may be omitted or
written as "" in the middle of the list.
"""

from __future__ import annotations

import onnx

from ndpc.compiler.frontend.graph import OnnxGraph, op_name
from ndpc.compiler.frontend.router import find_gate
from ndpc.compiler.frontend.spec import MoeSpec
from ndpc.ir.attrs import Activation, FfnAttr, RouterAttr, RoutingRule
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.types import DType

FUSED_OPS = {("com.microsoft", "MoE"), ("com.microsoft", "QMoE")}
# Other com.microsoft MoE-family ops: understood as helpers of a fused node, never alone.
HELPER_OPS = {"MoEGroupRouter", "GatedAdd"}

_MOE_INPUTS = ("input", "router_probs", "fc1", "fc1_bias", "fc2", "fc2_bias", "fc3", "fc3_bias")
_QMOE_INPUTS = (
    "input",
    "router_probs",
    "fc1",
    "fc1_scales",
    "fc1_bias",
    "fc2",
    "fc2_scales",
    "fc2_bias",
    "fc3",
    "fc3_scales",
    "fc3_bias",
    "fc1_zp",
    "fc2_zp",
    "fc3_zp",
    "router_weights",
)
_ACTIVATIONS = {
    "relu": Activation.RELU,
    "gelu": Activation.GELU,
    "silu": Activation.SILU,
    "swiglu": Activation.SWIGLU,
    "geglu": Activation.GEGLU,
}
_QUANT_BITS = {"fp8": 8, "fp4": 4, "nvfp4": 4, "mxfp4": 4, "wfp4afp8": 4}


def is_fused(node: onnx.NodeProto) -> bool:
    """A com.microsoft MoE or QMoE node."""
    return (node.domain, node.op_type) in FUSED_OPS


def _inputs(node: onnx.NodeProto) -> dict[str, str]:
    names = _QMOE_INPUTS if node.op_type == "QMoE" else _MOE_INPUTS
    return {role: name for role, name in zip(names, node.input, strict=False) if name}


class FusedMatch:
    """A fused MoE node understood: its `MoeSpec`, the gate node and the block input."""

    def __init__(self, g: OnnxGraph, index: int):
        self.g, self.index = g, index
        self.node = g.nodes[index]
        self.where = f"{g.path}: node '{self.node.name}' ({op_name(self.node)})"
        self.notes: list[str] = []
        self.inputs = _inputs(self.node)
        for role in ("input", "router_probs", "fc1", "fc2"):
            if role not in self.inputs:
                raise NdpcError(f"{self.where}: required input '{role}' is missing")
        self.gate_node: onnx.NodeProto | None = None
        self.spec = self._spec()

    def _dims(self, role: str) -> tuple[int, ...] | None:
        name = self.inputs.get(role)
        if name is None:
            return None
        c = self.g.weight_root(name)
        if c is None:
            raise NdpcError(f"{self.where}: input '{role}' ({name}) is not a constant initializer")
        return c.dims

    def _bits(self) -> int:
        if self.node.op_type != "QMoE":
            return 0
        quant = self.g.attr(self.node, "quant_type", "int")
        if quant in _QUANT_BITS:
            return _QUANT_BITS[quant]
        bits = self.g.attr(self.node, "fc1_expert_weight_bits") or self.g.attr(
            self.node, "expert_weight_bits", 4
        )
        if bits not in (2, 3, 4, 8):
            raise NdpcError(f"{self.where}: expert_weight_bits {bits} is not 2, 3, 4 or 8")
        return int(bits)

    def _spec(self) -> MoeSpec:
        g, node = self.g, self.node
        bits = self._bits()
        fc1, fc2, fc3 = self._dims("fc1"), self._dims("fc2"), self._dims("fc3")
        for role, dims in (("fc1", fc1), ("fc2", fc2), ("fc3", fc3)):
            if dims is not None and len(dims) != 3:
                raise NdpcError(
                    f"{self.where}: {role} weights have shape {list(dims)}, "
                    "expected [experts, N, K]"
                )
        experts = fc1[0]
        pack = 8 // bits if bits in (2, 4, 8) else 1  # elements per byte along K
        d_model = fc2[1]
        d_ff = fc2[2] * pack if bits else fc2[2]
        if bits == 3:
            d_ff = fc2[2] * 8 // 3
        act_name = g.attr(node, "activation_type", "relu")
        if act_name not in _ACTIVATIONS:
            raise NdpcError(f"{self.where}: activation_type '{act_name}' is not supported")
        act = _ACTIVATIONS[act_name]
        fusion = int(g.attr(node, "swiglu_fusion", 0))
        if act is Activation.SWIGLU and fusion == 0 and fc3 is None:
            raise NdpcError(f"{self.where}: swiglu with swiglu_fusion=0 needs fc3 (up) weights")
        if fc3 is not None and act in (Activation.SILU, Activation.GELU):
            act = Activation.SWIGLU if act is Activation.SILU else Activation.GEGLU
        rows = fc1[1] // 2 if (act.gated and fc3 is None) else fc1[1]
        pack_check = 0 if bits == 3 else (pack if bits else 1)  # 3-bit rows are not byte-aligned
        self._check_shapes(experts, d_model, d_ff, rows, fc1, fc2, fc3, pack_check)
        block = int(g.attr(node, "block_size", 0) or 0)
        if bits and not block:
            scales = self._dims("fc1_scales")
            if scales is not None and len(scales) == 3 and scales[2]:
                block = d_model // scales[2]
        dtype = _expert_dtype(g, self, bits)
        ffn = FfnAttr(
            d_model=d_model,
            d_ff=d_ff,
            activation=act,
            bias="fc1_bias" in self.inputs or "fc2_bias" in self.inputs,
            dtype=dtype,
            quant_block=block,
            clamp=float(g.attr(node, "swiglu_limit", 0.0) or 0.0),
        )
        router = self._router(experts, d_model)
        form = f"fused-{node.op_type.lower()}"
        return MoeSpec(experts=experts, router=router, ffn=ffn, form=form, weight_bits=bits)

    def _check_shapes(self, experts, d_model, d_ff, rows, fc1, fc2, fc3, pack) -> None:
        if rows != d_ff:
            raise NdpcError(
                f"{self.where}: inconsistent shapes: fc1 {list(fc1)} gives d_ff "
                f"{rows} but fc2 {list(fc2)} gives d_ff {d_ff}"
            )
        if fc2[0] != experts or (fc3 is not None and fc3[0] != experts):
            raise NdpcError(
                f"{self.where}: inconsistent shapes: fc1 {list(fc1)} and fc2 "
                f"{list(fc2)} disagree on the expert count"
            )
        if pack and fc1[2] * pack != d_model:
            raise NdpcError(
                f"{self.where}: inconsistent shapes: fc1 {list(fc1)} reads "
                f"K={fc1[2] * pack} but fc2 {list(fc2)} writes d_model={d_model}"
            )

    def _router(self, experts: int, d_model: int) -> RouterAttr:
        g, node = self.g, self.node
        k = int(g.attr(node, "k", 1))
        if not 1 <= k <= experts:
            raise NdpcError(f"{self.where}: k = {k} must be in 1..{experts} (the experts)")
        renorm = bool(g.attr(node, "normalize_routing_weights", 0))
        probs = self.inputs["router_probs"]
        width = (g.shape(probs) or (None,))[-1]
        if width is not None and width != experts:
            raise NdpcError(
                f"{self.where}: inconsistent shapes: router_probs has {width} "
                f"experts but the expert weights have {experts}"
            )
        src = g.producer_of(probs)
        if src is not None and src.op_type == "MoEGroupRouter":
            self.gate_node = src
            groups = int(g.attr(src, "n_group", 1))
            return RouterAttr(
                RoutingRule.SIGMOID_GROUP_TOPK, k, True, groups, int(g.attr(src, "topk_group", 1))
            )
        if src is not None:
            gemm, _, gate_d, gate_e = find_gate(g, probs, f"node '{node.name}' ({op_name(node)})")
            self.gate_node = g.nodes[gemm]
            if gate_e != experts or gate_d != d_model:
                raise NdpcError(
                    f"{self.where}: inconsistent shapes: router gate "
                    f"'{self.gate_node.name}' is [{gate_d}, {gate_e}] but the experts "
                    f"are {experts} x d_model {d_model}"
                )
        if g.attr(node, "use_sparse_mixer", 0):
            return RouterAttr(RoutingRule.SPARSEMIXER, k, False)
        if "router_weights" in self.inputs:
            self.notes.append(
                f"'{node.name}': router_weights input: expert choice and mixing "
                "weights come from separate tensors (noaux_tc routing)"
            )
            return RouterAttr(RoutingRule.SIGMOID_GROUP_TOPK, k, renorm)
        return RouterAttr(RoutingRule.SOFTMAX_TOPK, k, renorm)


def _expert_dtype(g: OnnxGraph, m: FusedMatch, bits: int) -> DType:
    if bits:
        quant = g.attr(m.node, "quant_type", "int")
        if quant == "fp8":
            return DType.F8E4M3
        return DType.I8 if bits == 8 else DType.I4
    c = g.weight_root(m.inputs["fc1"])
    if c is None or c.dtype is None:
        raise NdpcError(f"{m.where}: fc1 has an element type ndpc cannot size")
    return c.dtype
