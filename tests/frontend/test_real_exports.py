"""Graphs from the real exporters (torch 2.13 + transformers 5.24, tests/fixtures/onnx, made by
tests/frontend/export_real.py). Their weights' .data files are absent on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from ndpc.compiler.frontend.builder import build_module
from ndpc.compiler.frontend.importer import import_spec
from ndpc.ir.verifier import verify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "onnx"
BASE = {
    "layers": ["moe", "moe"],
    "rule": "softmax_topk",
    "renorm": False,
    "shared": None,
    "bias": False,
    "clamp": 0.0,
    "attention": ("gqa", 4, 2, 16),
    "form": "gather-bmm",
    "norm": "rms",
}
FAMILIES = {  # family -> what differs from BASE (every family: 8 experts, top-2, 64 x 32)
    "mixtral": {"renorm": True},
    "qwen3_moe": {"renorm": True},
    "olmoe": {},
    "qwen2_moe": {"layers": ["dense", "moe"], "shared": (1, 64, True), "dense_d_ff": 128},
    "deepseek_v3": {
        "layers": ["dense", "moe"],
        "rule": "sigmoid_group_topk",
        "renorm": True,
        "groups": (2, 1),
        "shared": (1, 32, False),
        "attention": ("mla", 4, 4, 24),
        "kv_lora_rank": 16,
        "dense_d_ff": 128,
    },
    "gpt_oss": {"rule": "topk_softmax", "bias": True, "clamp": 7.0},
    "phimoe": {"rule": "sparsemixer", "norm": "layer"},
}
CASES = [(f, e) for f in FAMILIES for e in ("dynamo", "torchscript")]


def _path(family: str, exporter: str, experts: str = "batched_mm") -> Path:
    return FIXTURES / f"{family}__{experts}__{exporter}.onnx"


@pytest.mark.parametrize(("family", "exporter"), CASES)
def test_real_export(family, exporter):
    path = _path(family, exporter)
    assert not path.with_name(path.name + ".data").exists()
    spec = import_spec(str(path))
    exp = {**BASE, **FAMILIES[family]}
    assert [layer.kind for layer in spec.layers] == exp["layers"]
    assert (spec.d_model, spec.vocab) == (64, 256)
    moe = spec.layers[-1].moe
    assert (moe.experts, moe.router.k, moe.ffn.d_ff, moe.form) == (8, 2, 32, exp["form"])
    assert moe.router.rule.value == exp["rule"] and moe.router.renormalize == exp["renorm"]
    assert (moe.router.groups, moe.router.topk_groups) == exp.get("groups", (1, 1))
    assert (moe.ffn.bias, moe.ffn.clamp, moe.ffn.activation.value) == (
        exp["bias"],
        exp["clamp"],
        "swiglu",
    )
    shared = (moe.shared_count, moe.shared_ffn.d_ff, moe.shared_gated) if moe.shared_ffn else None
    assert shared == exp["shared"]
    att = spec.layers[-1].attention
    assert (att.kind.value, att.heads, att.kv_heads, att.head_dim) == exp["attention"]
    assert att.kv_lora_rank == exp.get("kv_lora_rank", 0)
    assert spec.layers[0].norm.value == exp["norm"]
    if "dense_d_ff" in exp:
        assert spec.layers[0].mlp.d_ff == exp["dense_d_ff"]
    verify(build_module(spec))


def test_dynamo_layers_come_from_metadata():
    spec = import_spec(str(_path("mixtral", "dynamo")))
    assert spec.layers[1].loc_name("router").startswith("node_topk")  # opaque names
    assert spec.notes == ()  # not the graph-order fallback


def test_eager_trace_is_imported_with_a_warning():
    spec = import_spec(str(_path("mixtral", "torchscript", "eager")))
    assert [layer.moe.form for layer in spec.layers] == ["unrolled", "unrolled"]
    assert len(spec.notes) == 2 and "only 7 of 8 experts were unrolled" in spec.notes[0]
    assert spec.layers[0].moe.experts == 8  # from the router, not from the unrolled branches


@pytest.mark.parametrize(("kind", "form"), [("grouped_mm", "grouped"), ("fused_cuda", "fused-moe")])
def test_transformers_onnx_exporter(kind, form):
    """transformers' OnnxExporter: grouped_mm (P3, argsort TopKs) and the CUDA MoE fusion (fc3,
    nodes without metadata: layers from the gate's scope)."""
    spec = import_spec(str(FIXTURES / f"mixtral__{kind}__hf_exporter.onnx"))
    assert spec.notes == ()
    for layer in spec.layers:
        moe = layer.moe
        assert (moe.form, moe.experts, moe.router.k, moe.ffn.d_ff, moe.ffn.clamp) == (
            form,
            8,
            2,
            32,
            0.0,
        )
        assert moe.router.renormalize and moe.ffn.activation.value == "swiglu"
        assert (layer.attention.heads, layer.attention.kv_heads, layer.attention.head_dim) == (
            4,
            2,
            16,
        )
    assert len(spec.layers) == 2


def test_genai_builder_decomposed_gpt_oss():
    """onnxruntime-genai 0.18.0, `-e dml -p fp16` (tests/frontend/export_genai.py): TopK of the
    router logits (in fp32), Gather of the stacked weights and biases, clamped SwiGLU, Softmax of
    the top-k values. Expert width 48, so 2 * d_ff != d_model."""
    path = FIXTURES / "gpt_oss__genai_builder_fp16_dml__decomposed.onnx"
    assert not path.with_name(path.name + ".data").exists()
    spec = import_spec(str(path))
    assert spec.notes == ()
    assert [layer.kind for layer in spec.layers] == ["moe", "moe"]
    assert (spec.d_model, spec.vocab) == (64, 256)
    for i, layer in enumerate(spec.layers):
        moe = layer.moe
        assert (moe.experts, moe.router.k, moe.ffn.d_model, moe.ffn.d_ff) == (8, 2, 64, 48)
        assert (moe.router.rule.value, moe.router.renormalize) == ("topk_softmax", False)
        assert (moe.form, moe.ffn.activation.value, moe.ffn.bias, moe.ffn.clamp) == (
            "gather-bmm",
            "swiglu",
            True,
            7.0,
        )
        assert moe.ffn.dtype.value == "f16" and moe.shared_ffn is None
        assert layer.loc_name("router") == f"/model/layers.{i}/moe/TopK"
        assert layer.loc_name("experts") == f"/model/layers.{i}/moe/mlp1/weight/Gather"
        att = layer.attention
        assert (att.kind.value, att.heads, att.kv_heads, att.head_dim) == ("gqa", 4, 2, 16)
    verify(build_module(spec))
