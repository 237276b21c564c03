"""Low-level helpers to assemble an ONNX graph whose weights are external-data references.

Without `tiny_weights`, every weight initializer carries only dims and an external-data reference
(location, offset, length) into `<model>.onnx.data`; that file is never written, so a 1 TB model's
graph is a few hundred kB. With `tiny_weights`, weights are small seeded random float32 arrays
embedded in the file, so onnxruntime can run the model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ndpc.ir.types import DType

ONNX_TYPE = {
    DType.F32: TensorProto.FLOAT,
    DType.F16: TensorProto.FLOAT16,
    DType.BF16: TensorProto.BFLOAT16,
}


class GraphWriter:
    """Collects nodes and initializers; names outputs like the TorchScript exporter does."""

    def __init__(self, dtype: DType, data_file: str, tiny_weights: bool, seed: int = 0):
        self.dtype = dtype
        self.elem = ONNX_TYPE[dtype]
        self.data_file = data_file
        self.tiny = tiny_weights
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.offset = 0
        self._names: dict[str, int] = {}
        self._consts: dict[str, object] = {}  # constant name -> value, for reuse
        self.router_outputs = False  # expose router choices as graph outputs
        self.form = "decomposed"  # or "fused": com.microsoft::MoE blocks
        self.extra_outputs: list[str] = []

    def _const_name(self, name: str, value: object) -> tuple[str, bool]:
        """(name to use, already present): equal constants share one initializer."""
        candidate, n = name, 0
        while candidate in self._consts:
            if self._consts[candidate] == value:
                return candidate, True
            n += 1
            candidate = f"{name}_{n}"
        self._consts[candidate] = value
        return candidate, False

    def unique(self, name: str) -> str:
        """`name`, or `name_N` if already used (TorchScript's `/x/MatMul_1` style)."""
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        return name if n == 0 else f"{name}_{n}"

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.2) -> str:
        """A float weight initializer: external reference, or tiny random data."""
        if self.tiny:
            data = self.rng.normal(0.0, scale, size=shape).astype(np.float32)
            self.inits.append(onnx.numpy_helper.from_array(data, name))
            return name
        t = TensorProto(name=name, data_type=self.elem, dims=list(shape))
        t.data_location = TensorProto.EXTERNAL
        nbytes = int(np.prod(shape)) * self.dtype.bits // 8
        for key, value in (
            ("location", self.data_file),
            ("offset", str(self.offset)),
            ("length", str(nbytes)),
        ):
            t.external_data.add(key=key, value=value)
        self.offset += (nbytes + 63) // 64 * 64  # 64-byte aligned like onnx's writer
        self.inits.append(t)
        return name

    def ints(self, name: str, values: list[int]) -> str:
        """A small int64 constant (always embedded)."""
        name, present = self._const_name(name, ("i", tuple(values)))
        if present:
            return name
        self.inits.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    def scalar(self, name: str, value: float) -> str:
        """A float scalar constant in the graph's element type (always embedded)."""
        name, present = self._const_name(name, ("f", value))
        if present:
            return name
        if self.elem == TensorProto.FLOAT:
            t = onnx.numpy_helper.from_array(np.array(value, dtype=np.float32), name)
        else:
            t = helper.make_tensor(name, self.elem, [], [value])
        self.inits.append(t)
        return name

    def op(
        self,
        op_type: str,
        inputs: list[str],
        scope: str,
        outputs: int = 1,
        domain: str = "",
        **attrs,
    ) -> list[str]:
        """Add node `<scope>/<op_type>[_N]`; returns its output names."""
        name = self.unique(f"{scope}/{op_type}")
        outs = [f"{name}_output_{j}" for j in range(outputs)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outs, name=name, domain=domain, **attrs)
        )
        return outs

    def expose(self, value: str, output: str, scope: str) -> None:
        """Copy `value` to graph output `output` through an Identity node."""
        name = self.unique(f"{scope}/Identity")
        self.nodes.append(helper.make_node("Identity", [value], [output], name=name))
        self.extra_outputs.append(output)

    def op1(self, op_type: str, inputs: list[str], scope: str, **attrs) -> str:
        """`op` for single-output nodes: returns the output name."""
        return self.op(op_type, inputs, scope, **attrs)[0]

    def model(self, name: str, inputs, outputs, opsets: dict[str, int]) -> onnx.ModelProto:
        """The ModelProto of everything added (ONNX IR version 10)."""
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        imports = [helper.make_opsetid(d, v) for d, v in opsets.items()]
        model = helper.make_model(graph, opset_imports=imports, producer_name="ndpc model make")
        model.ir_version = 10
        return model
