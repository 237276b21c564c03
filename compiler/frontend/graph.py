"""A read-only, indexed view of an ONNX graph, loaded without its weight data.

`load_graph(path)` parses the protobuf with `load_external_data=False`: initializers keep only
their dims and external-data references, so a multi-GB model loads in a fraction of a second and a
missing `.data` file does not matter. Shapes come from initializer dims and value_info.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.types import DType

# ONNX TensorProto element types ndpc can size.
ONNX_DTYPES: dict[int, DType] = {
    onnx.TensorProto.FLOAT: DType.F32,
    onnx.TensorProto.FLOAT16: DType.F16,
    onnx.TensorProto.BFLOAT16: DType.BF16,
    onnx.TensorProto.FLOAT8E4M3FN: DType.F8E4M3,
    onnx.TensorProto.INT8: DType.I8,
    onnx.TensorProto.UINT8: DType.I8,
    onnx.TensorProto.INT4: DType.I4,
    onnx.TensorProto.UINT4: DType.I4,
    onnx.TensorProto.INT32: DType.I32,
}

# Ops that pass a tensor through without changing which elements it holds (for use-def walks).
PASS_THROUGH = {
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "CastLike",
    "Identity",
    "Flatten",
    "Transpose",
    "Expand",
    "Tile",
    "Concat",
    "Split",
    "Slice",
    "Gather",
}

_LAYER_RE = re.compile(
    r"(?:^|[./_])(?:layers|layer|h|blocks|block|decoder\.layers)[._/](\d+)(?=$|[./_])"
)


class Const:
    """An initializer (or Constant node output): dims and element type; data decoded on demand
    and only for small embedded tensors (external or large weights are never read)."""

    __slots__ = ("name", "dims", "elem_type", "_proto", "_value")

    def __init__(self, name: str, dims: tuple[int, ...], elem_type: int, proto=None):
        self.name, self.dims, self.elem_type = name, dims, elem_type
        self._proto, self._value = proto, None

    @property
    def dtype(self) -> DType | None:
        """The ndpc element type (None for types ndpc cannot size, e.g. int64)."""
        return ONNX_DTYPES.get(self.elem_type)

    @property
    def value(self) -> np.ndarray | None:
        """The data of a small embedded constant, decoded once; None otherwise."""
        if self._value is None and self._proto is not None:
            proto, self._proto = self._proto, None
            try:
                self._value = numpy_helper.to_array(proto)
            except Exception:  # unusual element types: shapes are enough
                self._value = None
        return self._value


class OnnxGraph:
    """Indexes of the main graph: producers, consumers, constants, shapes and layer scopes."""

    def __init__(self, model: onnx.ModelProto, path: str):
        self.path = path
        self.model = model
        graph = model.graph
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for i, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = i
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(i)
        self.consts: dict[str, Const] = {}
        for t in graph.initializer:
            self.consts[t.name] = _const_of(t)
        for node in self.nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value":
                        self.consts[node.output[0]] = _const_of(attr.t, node.output[0])
        self.shapes: dict[str, tuple[int | None, ...]] = {}
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            shape = _shape_of(vi)
            if shape is not None:
                self.shapes[vi.name] = shape
        self.graph_inputs = [vi.name for vi in graph.input if vi.name not in self.consts]
        self.cache: dict[str, dict] = {}  # per-graph memo tables of the matchers

    # --- simple queries --------------------------------------------------------------------

    def node(self, index: int) -> onnx.NodeProto:
        """The node at `index`."""
        return self.nodes[index]

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        """Attribute `name` of `node` (bytes decoded to str), or `default`."""
        for a in node.attribute:
            if a.name == name:
                value = onnx.helper.get_attribute_value(a)
                if not isinstance(value, bytes):
                    return value
                try:
                    return value.decode()
                except UnicodeDecodeError:
                    raise NdpcError(
                        f"{self.path}: node '{node.name}': attribute '{name}' is not UTF-8 text"
                    ) from None
        return default

    def const(self, name: str) -> Const | None:
        """The constant called `name`, looking through Identity/Cast nodes."""
        seen = 0
        while name not in self.consts and name in self.producer and seen < 4:
            node = self.nodes[self.producer[name]]
            if node.op_type not in ("Identity", "Cast") or not node.input:
                return None
            name, seen = node.input[0], seen + 1
        return self.consts.get(name)

    def int_value(self, name: str) -> int | None:
        """A scalar (or one-element) integer constant, e.g. TopK's k."""
        c = self.const(name)
        if c is None or c.value is None or c.value.size != 1:
            return None
        return int(c.value.reshape(-1)[0])

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        """Dims of a constant or of a value with value_info (None = dynamic), if known."""
        c = self.consts.get(name)
        return c.dims if c is not None else self.shapes.get(name)

    def users(self, name: str) -> list[onnx.NodeProto]:
        """Nodes reading value `name`."""
        return [self.nodes[i] for i in self.consumers.get(name, ())]

    def producer_of(self, name: str) -> onnx.NodeProto | None:
        """The node writing value `name` (None for inputs and constants)."""
        i = self.producer.get(name)
        return None if i is None else self.nodes[i]

    def op_histogram(self) -> Counter[str]:
        """How many nodes of each op type (custom domains as `domain::Op`)."""
        return Counter(_op_name(n) for n in self.nodes)

    def check_dangling(self) -> None:
        """Every node input must be produced somewhere (a truncated file often breaks this)."""
        known = set(self.producer) | set(self.consts) | {vi.name for vi in self.model.graph.input}
        for node in self.nodes:
            for inp in node.input:
                if inp and inp not in known:
                    raise NdpcError(
                        f"{self.path}: node '{node.name}' ({op_name(node)}) reads '{inp}', which "
                        "no node, input or initializer provides (truncated or broken graph?)"
                    )

    # --- layer scopes ----------------------------------------------------------------------

    def layer_of(self, index: int) -> int | None:
        """The decoder-layer index a node belongs to, from torch metadata or its name."""
        node = self.nodes[index]
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                hits = _LAYER_RE.findall(prop.value)
                if hits:
                    return int(hits[-1])
        hits = _LAYER_RE.findall(node.name)
        return int(hits[-1]) if hits else None

    def scope_text(self, index: int) -> str:
        """Node name plus torch scope metadata, for keyword tests (`shared_expert`, `attn`)."""
        node = self.nodes[index]
        extra = [p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"]
        return " ".join([node.name, *extra]).lower()

    # --- walks -----------------------------------------------------------------------------

    def forward_closure(self, starts: list[str], allowed: set[int] | None = None) -> set[int]:
        """Indices of nodes reachable from the values `starts` (within `allowed` if given)."""
        seen: set[int] = set()
        stack = list(starts)
        while stack:
            value = stack.pop()
            for i in self.consumers.get(value, ()):
                if i in seen or (allowed is not None and i not in allowed):
                    continue
                seen.add(i)
                stack.extend(o for o in self.nodes[i].output if o)
        return seen

    def weight_root(self, name: str, depth: int = 6) -> Const | None:
        """The constant a weight operand comes from, through Transpose/Gather/Split/Cast/..."""
        for _ in range(depth):
            c = self.consts.get(name)
            if c is not None:
                return c
            node = self.producer_of(name)
            if node is None or node.op_type not in PASS_THROUGH | {"GatherND", "DequantizeLinear"}:
                return None
            name = node.input[0]
        return self.consts.get(name)


def _op_name(node: onnx.NodeProto) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def op_name(node: onnx.NodeProto) -> str:
    """`Domain::OpType` for custom domains, `OpType` for standard ONNX."""
    return _op_name(node)


def _const_of(t: onnx.TensorProto, name: str | None = None) -> Const:
    dims = tuple(t.dims)
    small = t.data_location != onnx.TensorProto.EXTERNAL and math.prod(dims) <= 4096
    return Const(name or t.name, dims, t.data_type, t if small else None)


def _shape_of(vi: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    return tuple(
        d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim
    )


@functools.cache
def _arity(op_type: str, domain: str, opset: int) -> tuple[int, int] | None:
    """(min inputs, min outputs) of an ONNX op at the model's opset (TopK took k as an attribute
    before opset 10); None for ops ONNX does not define."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None
    return schema.min_input, schema.min_output


def _check_names(model: onnx.ModelProto, path: Path) -> None:
    """Names must be UTF-8 text, dims >= 0 and standard ops have their required inputs. The
    protobuf parser hands back `bytes` for a string field that is not valid UTF-8, and the
    matchers compare and search names as text."""
    graph = model.graph
    opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in model.opset_import}
    for i, node in enumerate(graph.node):
        texts = [node.name, node.op_type, node.domain, *node.input, *node.output]
        texts += [a.name for a in node.attribute]
        texts += [t for p in node.metadata_props for t in (p.key, p.value)]
        if any(isinstance(t, bytes) for t in texts):
            raise NdpcError(f"{path}: node {i}: a name or attribute key is not UTF-8 text")
        domain = node.domain if node.domain != "ai.onnx" else ""
        opset = opsets.get(domain, 0)
        arity = _arity(node.op_type, domain, min(opset, 2**31 - 1)) if opset > 0 else None
        if arity is not None and (len(node.input) < arity[0] or len(node.output) < arity[1]):
            raise NdpcError(
                f"{path}: node '{node.name}' ({op_name(node)}) has {len(node.input)} inputs and "
                f"{len(node.output)} outputs; the op needs at least {arity[0]} and {arity[1]}"
            )
    for kind, items in (("initializer", graph.initializer), ("input", graph.input),
                        ("output", graph.output), ("value_info", graph.value_info)):  # fmt: skip
        for i, item in enumerate(items):
            if isinstance(item.name, bytes):
                raise NdpcError(f"{path}: {kind} {i}: the name is not UTF-8 text")
    for t in graph.initializer:
        if any(d < 0 for d in t.dims):
            raise NdpcError(f"{path}: initializer '{t.name}' has negative dims {list(t.dims)}")
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        shape = _shape_of(vi)
        if shape is not None and any(d is not None and d < 0 for d in shape):
            raise NdpcError(f"{path}: value '{vi.name}' has negative dims {list(shape)}")


def load_graph(path: str | Path) -> OnnxGraph:
    """Parse `path` without reading external data; bad input raises NdpcError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise NdpcError(f"{path}: cannot read ({err.strerror or err})") from None
    if not data:
        raise NdpcError(f"{path}: not an ONNX model (the file is empty)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (
        DecodeError,
        ValueError,
        RuntimeError,
        onnx.onnx_cpp2py_export.checker.ValidationError,
    ) as err:
        raise NdpcError(f"{path}: not an ONNX model or truncated ({err})") from None
    if not model.HasField("graph") or model.ir_version == 0:
        raise NdpcError(f"{path}: not an ONNX model (no graph / ir_version)")
    _check_names(model, path)
    if not model.graph.node:
        raise NdpcError(f"{path}: the ONNX graph '{model.graph.name}' is empty (no nodes)")
    graph = OnnxGraph(model, str(path))
    graph.check_dangling()
    return graph
