"""Real exporter output from ../shared/data/onnx (skipped when the shared folder is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ndpc.compiler.frontend import import_onnx
from ndpc.compiler.frontend.importer import import_spec
from ndpc.ir.verifier import verify

ONNX_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "onnx"
pytestmark = pytest.mark.skipif(not ONNX_DIR.is_dir(), reason="../shared/data/onnx is absent")

# file -> (layers, form, vocab, router location of layer 0)
EXPECTED = {
    "contrib_moe_swiglu.onnx": (1, "fused-moe", 0, "layers.0.moe"),
    "gpt_oss__genai_builder_fp32_cpu__fused_com.microsoft.MoE.onnx": (
        2,
        "fused-moe",
        256,
        "/model/layers.0/moe/router/MatMul",
    ),
    "mixtral__batched_mm__dynamo.onnx": (2, "gather-bmm", 256, "node_topk__1"),
    "mixtral__batched_mm__torchscript.onnx": (
        2,
        "gather-bmm",
        256,
        "/m/model/layers.0/mlp/gate/TopK",
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_export_imports(name):
    layers, form, vocab, router_loc = EXPECTED[name]
    spec = import_spec(str(ONNX_DIR / name))
    assert len(spec.layers) == layers and spec.vocab == vocab and spec.d_model == 64
    for layer in spec.layers:
        moe = layer.moe
        assert moe is not None and moe.form == form
        assert (moe.experts, moe.router.k, moe.ffn.d_ff) == (8, 2, 32)
        assert moe.router.renormalize and moe.ffn.activation.value == "swiglu"
        if vocab:  # a full decoder: attention 4 heads / 2 KV heads of 16
            att = layer.attention
            assert (att.heads, att.kv_heads, att.head_dim) == (4, 2, 16)
    assert spec.layers[0].loc_name("router") == router_loc
    verify(import_onnx(ONNX_DIR / name))


def test_gpt_oss_fused_attributes():
    spec = import_spec(
        str(ONNX_DIR / "gpt_oss__genai_builder_fp32_cpu__fused_com.microsoft.MoE.onnx")
    )
    ffn = spec.layers[1].moe.ffn
    assert ffn.bias and ffn.clamp == 7.0
    assert spec.layers[1].loc_name("experts") == "/model/layers.1/moe/MoE"
