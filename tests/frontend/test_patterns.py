"""Every fixture pattern imports with the right layers, experts, k, widths and variants."""

from __future__ import annotations

import pytest
from onnx_fixtures import all_fixtures

from ndpc.compiler.frontend.builder import build_module
from ndpc.compiler.frontend.importer import import_spec
from ndpc.ir.parser import parse_module
from ndpc.ir.printer import print_module
from ndpc.ir.verifier import verify

FIXTURES = all_fixtures()


def _facts(spec) -> dict:
    """What the fixtures' `expected` dicts talk about, read from an imported spec."""
    moe = next(layer.moe for layer in spec.layers if layer.moe is not None)
    dense = [layer.mlp.d_ff for layer in spec.layers if layer.mlp is not None]
    last_att = spec.layers[-1].attention
    return {
        "layers": len(spec.layers),
        "kinds": [layer.kind for layer in spec.layers],
        "experts": moe.experts,
        "k": moe.router.k,
        "d_model": spec.d_model,
        "d_ff": moe.ffn.d_ff,
        "form": moe.form,
        "rule": moe.router.rule.value,
        "renorm": moe.router.renormalize,
        "groups": (moe.router.groups, moe.router.topk_groups),
        "bias": moe.ffn.bias,
        "clamp": moe.ffn.clamp,
        "activation": moe.ffn.activation.value,
        "shared": (moe.shared_count, moe.shared_ffn.d_ff, moe.shared_gated)
        if moe.shared_ffn
        else None,
        "bits": moe.weight_bits,
        "block": moe.ffn.quant_block,
        "norm": spec.layers[0].norm.value,
        "attention": last_att.kind.value if last_att else None,
        "d_ff_dense": dense[0] if dense else None,
        "notes": " | ".join(spec.notes),
    }


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx_fixtures")
    for name, (model, _) in FIXTURES.items():
        (folder / f"{name}.onnx").write_bytes(model.SerializeToString())
    return folder


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_imports_as_expected(name, fixture_dir):
    path = fixture_dir / f"{name}.onnx"
    assert not path.with_suffix(".onnx.data").exists()  # weights are never needed
    facts = _facts(import_spec(str(path)))
    expected = FIXTURES[name][1]
    for key, value in expected.items():
        if key == "notes":
            assert value in facts["notes"], facts["notes"]
        else:
            assert facts[key] == value, f"{key}: got {facts[key]!r}, expected {value!r}"
    if "shared" not in expected:
        assert facts["shared"] is None


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_ir_verifies_and_round_trips(name, fixture_dir):
    module = build_module(import_spec(str(fixture_dir / f"{name}.onnx")))
    verify(module)
    text = print_module(module)
    assert print_module(parse_module(text, name)) == text
    assert 'loc("onnx:' in text  # every op names the ONNX node it came from


def test_dense_layer_indices_follow_the_graph(fixture_dir):
    spec = import_spec(str(fixture_dir / "zoo_switch_top1_relu_alternating.onnx"))
    assert [layer.index for layer in spec.layers] == [0, 1, 2, 3]
    assert spec.layers[1].loc_name("router") == "/model/layers.1/mlp/gate/ArgMax"


def test_deepseek_router_is_the_last_of_three_topks(fixture_dir):
    spec = import_spec(str(fixture_dir / "zoo_deepseek_group_topk_shared.onnx"))
    assert spec.layers[1].loc_name("router").endswith("/mlp/gate/TopK_2")
