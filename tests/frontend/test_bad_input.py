"""Bad input: one line naming the file and the node, exit 1, no traceback, no output file."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from onnx_fixtures import fused_moe, zoo_variant

from ndpc.compiler.cli import main


def _run(*args):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _check(path, out_path, *needles):
    code, output = _run("import", str(path), "-o", str(out_path))
    assert code == 1, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
    assert str(path) in output
    for needle in needles:
        assert needle in output, output
    assert not out_path.exists()


def _save(tmp_path, model, name="bad.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a protobuf\n" * 20)
    _check(path, tmp_path / "o.ndpir", "not an ONNX model")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    _check(path, tmp_path / "o.ndpir", "empty")


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_truncated_file(tmp_path, fraction):
    data = zoo_variant("softmax_topk_renorm")[0].SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    _check(path, tmp_path / "o.ndpir", "truncated")


def test_empty_graph(tmp_path):
    graph = helper.make_graph([], "nothing", [], [])
    _check(_save(tmp_path, helper.make_model(graph)), tmp_path / "o.ndpir", "empty", "no nodes")


def test_no_moe_layer_lists_the_op_types(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.0] * 16)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "dense", [x], [y], [w]))
    _check(_save(tmp_path, model), tmp_path / "o.ndpir", "no MoE layer", "MatMul x1", "Relu x1")


def test_inconsistent_fused_shapes(tmp_path):
    model, _ = fused_moe("concat")
    for t in model.graph.initializer:
        if t.name == "model.layers.1.moe.fc2":
            t.dims[0] = 4  # 4 experts in fc2, 8 in fc1
    _check(
        _save(tmp_path, model),
        tmp_path / "o.ndpir",
        "inconsistent shapes",
        "/model/layers.1/moe/MoE",
        "com.microsoft::MoE",
    )


def test_inconsistent_router_and_expert_weights(tmp_path):
    model, _ = zoo_variant("softmax_topk_renorm")
    for t in model.graph.initializer:
        if t.name == "model.layers.0.mlp.gate.weight":
            t.dims[1] = 6  # the gate scores 6 experts, the stacked weights have 8
    _check(
        _save(tmp_path, model),
        tmp_path / "o.ndpir",
        "inconsistent shapes",
        "/model/layers.0/mlp/gate/TopK",
        "model.layers.0.mlp.experts.gate_up_proj",
    )


def test_inconsistent_expert_widths(tmp_path):
    model, _ = zoo_variant("softmax_topk_renorm")
    for t in model.graph.initializer:
        if t.name == "model.layers.1.mlp.experts.down_proj":
            t.dims[2] = 20  # d_ff 20 for down, 32 for gate/up
    _check(_save(tmp_path, model), tmp_path / "o.ndpir", "inconsistent shapes", "widths")


def test_unknown_moe_like_custom_op(tmp_path):
    model, _ = fused_moe("concat")
    node = model.graph.node[2]
    node.domain, node.op_type = "com.example", "SparseMoeBlock"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    _check(
        _save(tmp_path, model),
        tmp_path / "o.ndpir",
        node.name,
        "com.example::SparseMoeBlock",
        "does not understand",
    )


def test_missing_required_fused_input(tmp_path):
    model, _ = fused_moe("concat")
    moe = next(n for n in model.graph.node if n.op_type == "MoE")
    del moe.input[2:]
    _check(_save(tmp_path, model), tmp_path / "o.ndpir", "required input 'fc1'")


def test_missing_file_and_unknown_zoo_name(tmp_path):
    code, output = _run("import", str(tmp_path / "absent.onnx"))
    assert code == 1 and "absent.onnx" in output and "Traceback" not in output
    code, output = _run("import", "mixtral")
    assert code == 1 and "did you mean mixtral-8x7b" in output


def test_tiny_weights_refused_for_big_models(tmp_path):
    out = tmp_path / "big.onnx"
    code, output = _run("model", "make", "mixtral-8x7b", "-o", str(out), "--tiny-weights")
    assert code == 1 and "--tiny-weights is for small models" in output
    assert not out.exists()


def test_a_valid_graph_still_checks(tmp_path):
    """Control: the unmodified fixture imports (so the failures above are the edits)."""
    model, _ = fused_moe("concat")
    code, output = _run("import", str(_save(tmp_path, model)), "--summary")
    assert code == 0, output


GENAI = (
    Path(__file__).resolve().parents[1]
    / "fixtures/onnx/gpt_oss__genai_builder_fp16_dml__decomposed.onnx"
)


def _genai():
    return onnx.load(str(GENAI), load_external_data=False)


def test_genai_decomposed_without_softmax(tmp_path):
    """The builder's top-k-then-softmax router with its Softmax replaced: no routing rule fits."""
    model = _genai()
    for node in model.graph.node:
        if node.op_type == "Softmax":
            node.op_type = "Relu"
            del node.attribute[:]
    _check(
        _save(tmp_path, model),
        tmp_path / "o.ndpir",
        "router node '/model/layers.0/moe/TopK' (TopK)",
        "neither softmax nor sigmoid",
        "'/model/layers.0/moe/router/MatMul'",
    )


@pytest.mark.parametrize(
    ("weight", "axis", "size", "needle"),
    [
        ("down_proj.weight", 0, 4, "has 4"),  # 4 experts' down weights, 8 everywhere else
        ("gate_up_proj.weight", 2, 80, "widths"),  # gate_up 80 wide, down 48: not 2 * d_ff
    ],
)
def test_genai_decomposed_inconsistent_experts(tmp_path, weight, axis, size, needle):
    model = _genai()
    for t in model.graph.initializer:
        if t.name == f"model.layers.1.moe.experts.{weight}":
            t.dims[axis] = size
    _check(
        _save(tmp_path, model),
        tmp_path / "o.ndpir",
        "inconsistent shapes",
        "/model/layers.1/moe/TopK",
        needle,
    )
