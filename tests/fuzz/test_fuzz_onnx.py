"""Fuzzing the ONNX importer through `ndpc import FILE.onnx -o OUT`: byte edits of serialized
graphs, and structural edits that stay valid protobuf but make wrong graphs (TopK k of 0, negative
or beyond the experts, zero or negative weight dims, non-UTF-8 names, missing inputs, odd ops)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import check_outcome, count, mutate, run_cli
from onnx import numpy_helper
from onnx_fixtures import all_fixtures

REAL = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "onnx").glob("*.onnx"))
OPS = ["Relu", "TopK", "MatMul", "Gather", "Softmax", "Identity", "Constant", "ArgMax", "Div",
       "ReduceSum", "Reshape"]  # fmt: skip
BAD_UTF8 = b"\xff\xfe\x80"


def _seeds() -> list[onnx.ModelProto]:
    models = [m for m, _ in all_fixtures().values()]
    # the two smallest real exports as well: torch-style names and metadata
    real = sorted(REAL, key=lambda p: p.stat().st_size)[:2]
    return models + [onnx.load(str(p), load_external_data=False) for p in real]


def _set_int_const(g: onnx.GraphProto, name: str, value: int) -> bool:
    for t in g.initializer:
        if t.name == name:
            arr = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(np.full(arr.shape, value, arr.dtype), name))
            return True
    return False


def structural_mutate(model: onnx.ModelProto, rng: random.Random) -> bytes:
    """One to three graph edits that keep the protobuf valid; returns the serialized model."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    rename = None
    for _ in range(rng.randint(1, 3)):
        node = g.node[rng.randrange(len(g.node))]
        op = rng.randrange(9)
        if op == 0:  # TopK k: 0, negative, huge, beyond the expert count
            topks = [n for n in g.node if n.op_type == "TopK" and len(n.input) > 1]
            value = rng.choice([0, -1, -8, 1, 3, 9, 64, 2**31, 2**62])
            for a in node.attribute:  # (ArgMax rounds / fused MoE k attributes too)
                if a.type == onnx.AttributeProto.INT and a.name in ("k", "top_k", "axis"):
                    a.i = value
            if topks:
                _set_int_const(g, rng.choice(topks).input[1], value)
        elif op == 1 and g.initializer:  # zero / negative / huge weight dims
            t = g.initializer[rng.randrange(len(g.initializer))]
            if t.dims:
                t.dims[rng.randrange(len(t.dims))] = rng.choice([0, -1, -64, 2**40, 2**62])
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL
                t.external_data.add(key="location", value="missing.data")
        elif op == 2:  # a non-UTF-8 node or value name (patched into the bytes below)
            rename = node
        elif op == 3 and node.input:  # missing or wrong inputs
            i = rng.randrange(len(node.input))
            if rng.random() < 0.5:
                del node.input[i]
            else:
                node.input[i] = rng.choice(["", "nowhere", g.node[0].output[0]])
        elif op == 4 and len(g.node) > 1:
            g.node.remove(node)
        elif op == 5:
            node.op_type = rng.choice(OPS)
        elif op == 6:  # value_info / input dims: zero, negative, symbolic
            vis = [*g.input, *g.output, *g.value_info]
            if vis:
                vi = rng.choice(vis)
                for d in vi.type.tensor_type.shape.dim:
                    if rng.random() < 0.5:
                        d.dim_value = rng.choice([0, -1, -5, 2**40])
        elif op == 7:  # an attribute of another type or value
            for a in node.attribute:
                if a.type == onnx.AttributeProto.INT:
                    a.i = rng.choice([-1, 0, 2, 99, 2**40])
                elif a.type == onnx.AttributeProto.FLOAT:
                    a.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0])
        else:
            node.name = rng.choice(["", "x", "/model/layers.99999999999999999999/mlp/y",
                                    "/model/layers.-1/x", node.name + "_layers.2"])  # fmt: skip
    if rename is not None:
        marker = "Z" * len(BAD_UTF8) + str(rng.randrange(10**6)).zfill(6)
        rename.name = marker
        data = m.SerializeToString()
        return data.replace(marker.encode(), BAD_UTF8 + marker[len(BAD_UTF8) :].encode())
    return m.SerializeToString()


def _inputs(n: int, seed: int):
    rng = random.Random(seed)
    seeds = _seeds()
    raw = [s.SerializeToString() for s in seeds]
    for case in range(n):
        i = rng.randrange(len(seeds))
        yield case, structural_mutate(seeds[i], rng) if rng.random() < 0.6 else mutate(raw[i], rng)


def _campaign(tmp_path, n: int, seed: int) -> None:
    src, outdir = tmp_path / "in.onnx", tmp_path / "out"
    outdir.mkdir()
    for case, data in _inputs(n, seed):
        src.write_bytes(data)
        command = ["import", str(src), "-o", str(outdir / "m.ndpir")]
        check_outcome(run_cli(command), [str(src)], outdir, f"onnx case {case}")
        shutil.rmtree(outdir)
        outdir.mkdir()


def test_fuzz_onnx_quick(tmp_path):
    _campaign(tmp_path, count(slow=False), seed=5)


@pytest.mark.slow
def test_fuzz_onnx_slow(tmp_path):
    _campaign(tmp_path, count(slow=True), seed=105)
