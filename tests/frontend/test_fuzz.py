"""Fuzzing the importer: mutated and truncated graphs give an NdpcError or a valid module, never
another exception (which the CLI would show as a traceback)."""

from __future__ import annotations

import random

import onnx
import pytest
from onnx_fixtures import all_fixtures

from ndpc.compiler.frontend.builder import build_module
from ndpc.compiler.frontend.importer import import_spec
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.verifier import verify

FIXTURES = all_fixtures()
OPS = ["Relu", "TopK", "MatMul", "Gather", "Softmax", "Identity", "QMoE", "MoE", "ArgMax"]


def _mutate(model: onnx.ModelProto, rng: random.Random) -> None:
    g = model.graph
    node = g.node[rng.randrange(len(g.node))]
    kind = rng.randrange(6)
    if kind == 0 and len(g.node) > 1:
        g.node.remove(node)
    elif kind == 1 and g.initializer:
        t = g.initializer[rng.randrange(len(g.initializer))]
        if t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 3, 7, 64, 100])
    elif kind == 2:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.INT:
                a.i = rng.choice([-1, 0, 1, 2, 3, 99])
    elif kind == 3:
        node.op_type = rng.choice(OPS)
    elif kind == 4 and node.input:
        other = g.node[rng.randrange(len(g.node))].output[0]
        node.input[rng.randrange(len(node.input))] = rng.choice(["", node.input[0], other])
    else:
        node.name = rng.choice(["", "x", "/model/layers.7/mlp/y", node.name + "_layers.2"])


def _import(path) -> None:
    try:
        spec = import_spec(str(path))
    except NdpcError as err:  # the importer's own errors: one line naming the file
        assert str(path) in err.message and "\n" not in err.message
        return
    verify(build_module(spec))  # what the importer accepts must be valid IR


@pytest.mark.parametrize("seed", range(4))
def test_mutated_graphs(seed, tmp_path):
    rng = random.Random(seed)
    path = tmp_path / "m.onnx"
    for _ in range(40):
        model = onnx.ModelProto()
        model.CopyFrom(FIXTURES[rng.choice(sorted(FIXTURES))][0])
        for _ in range(rng.randint(1, 3)):
            _mutate(model, rng)
        path.write_bytes(model.SerializeToString())
        _import(path)


def test_truncated_at_many_offsets(tmp_path):
    data = FIXTURES["fused_moe_concat"][0].SerializeToString()
    path = tmp_path / "cut.onnx"
    for cut in range(0, len(data), max(1, len(data) // 60)):
        path.write_bytes(data[:cut])
        with pytest.raises(NdpcError):
            import_spec(str(path))
