"""The zoo: cited configs, fast direct IR builds equal to importing `ndpc model make` graphs."""

from __future__ import annotations

from dataclasses import fields

import pytest

from ndpc.compiler.frontend import load_model
from ndpc.compiler.frontend.importer import import_spec
from ndpc.compiler.frontend.model_writer import make_model
from ndpc.compiler.zoo import ZOO, get_model, real_models
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import ExpertsOp, MlpOp, RouterOp
from ndpc.ir.printer import print_module
from ndpc.ir.verifier import verify

ISSUE_MODELS = [
    "mixtral-8x7b",
    "qwen3-30b-a3b",
    "qwen1.5-moe-a2.7b",
    "deepseek-v2-lite",
    "deepseek-v3",
    "deepseek-v2",  # TriMoE's three models (issue 17)
    "glm-4.5-air",
    "qwen3-235b-a22b",
    "olmoe-1b-7b",
    "phi-3.5-moe",
    "gpt-oss-20b",
    "switch-base-8",
]


def test_every_issue_model_is_in_the_zoo():
    assert [c.name for c in real_models()] == ISSUE_MODELS
    small = [n for n in ZOO if n.startswith("small-")]
    assert len(small) == 18  # 2/4/8 experts x hidden 1024/2048/4096 x top-1/top-2


@pytest.mark.parametrize("cfg", real_models(), ids=lambda c: c.name)
def test_every_number_has_a_source(cfg):
    assert cfg.hf_id and "*" in cfg.sources
    for f in fields(cfg):
        if f.name not in ("name", "sources", "synthetic"):
            assert cfg.source_of(f.name), f"{cfg.name}.{f.name} has no source"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_module_verifies_with_the_config_shapes(name):
    cfg, module = get_model(name), load_model(name)
    verify(module)
    routers = module.ops_of(RouterOp)
    assert len(routers) == cfg.moe_layers
    assert {op.router.k for op in routers} == {cfg.top_k}
    assert {(op.experts, op.ffn.d_ff) for op in module.ops_of(ExpertsOp)} == {
        (cfg.experts, cfg.d_ff_expert)
    }
    assert sorted(op.layer for op in module.ops_of(MlpOp)) == list(cfg.dense_layers)


def test_known_facts_of_real_models():
    v3 = get_model("deepseek-v3")
    assert (v3.layers, v3.dense_layers, v3.experts, v3.top_k, v3.groups) == (
        61,
        (0, 1, 2),
        256,
        8,
        8,
    )
    q3 = get_model("Qwen3-30B-A3B")  # case-insensitive
    assert (q3.layers, q3.experts, q3.top_k, q3.d_ff_expert) == (48, 128, 8, 768)
    assert get_model("switch-base-8").moe_layers == 6


@pytest.mark.parametrize(
    ("name", "per_token"),
    [
        # 94 layers x K and V x 4 KV heads x head_dim 128 x 2 B (BF16)
        ("qwen3-235b-a22b", 94 * 2 * 4 * 128 * 2),  # 192,512 B
        # 46 layers x K and V x 8 KV heads x 128 x 2 B (the MTP layer is not modelled)
        ("glm-4.5-air", 46 * 2 * 8 * 128 * 2),  # 188,416 B
        # MLA: 60 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 B, one latent per token
        ("deepseek-v2", 60 * (512 + 64) * 2),  # 69,120 B
    ],
)
def test_trimoe_models_kv_cache_bytes_by_hand(name, per_token):
    from ndpc.backends.emit_dense import kv_cache_bytes

    module = load_model(name)
    assert kv_cache_bytes(module, 1) == per_token
    assert kv_cache_bytes(module, 4096) == 4096 * per_token


def test_trimoe_models_shapes_by_hand():
    q = get_model("qwen3-235b-a22b")
    assert (q.layers, q.moe_layers, q.experts, q.top_k, q.d_model, q.d_ff_expert) == (
        94, 94, 128, 8, 4096, 1536
    )  # fmt: skip
    g = get_model("glm-4.5-air")
    assert (g.dense_layers, g.experts, g.shared_experts, g.shared_width, g.heads) == (
        (0,), 128, 1, 1408, 96
    )  # fmt: skip
    v2 = get_model("deepseek-v2")
    assert (v2.dense_layers, v2.experts, v2.top_k, v2.shared_experts, v2.d_ff_dense) == (
        (0,), 160, 6, 2, 12288
    )  # fmt: skip
    # routed experts in BF16 (moe layers x experts x 3 matrices x d_model x d_ff x 2 B): they
    # fit trimoe-h100-spr's 16 x 64 GiB DIMMs
    for cfg, gib in ((q, 423.0), (g, 185.625), (v2, 414.84375)):
        routed = cfg.moe_layers * cfg.experts * 3 * cfg.d_model * cfg.d_ff_expert * 2
        assert routed / 2**30 == gib


def test_unknown_name_suggests_close_ones():
    with pytest.raises(NdpcError, match="did you mean qwen3-30b-a3b"):
        get_model("qwen3-30b")
    with pytest.raises(NdpcError, match="unknown model 'zzz'"):
        load_model("zzz")


@pytest.mark.parametrize(
    "name",
    [
        "tiny-mixtral",
        "tiny-qwen2-moe",
        "tiny-deepseek-v3",
        "small-4e-1024h-top2",
        "switch-base-8",
        "deepseek-v2-lite",
    ],
)
def test_direct_zoo_ir_equals_imported_model_make_graph(name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(make_model(get_model(name), f"{name}.onnx.data").SerializeToString())
    from ndpc.compiler.frontend.builder import build_module

    imported = print_module(build_module(import_spec(str(path))))
    assert imported == print_module(load_model(name))


def test_model_make_is_deterministic():
    a = make_model(get_model("tiny-mixtral"), "x.data", tiny_weights=True, seed=3)
    b = make_model(get_model("tiny-mixtral"), "x.data", tiny_weights=True, seed=3)
    assert a.SerializeToString() == b.SerializeToString()


def test_full_size_external_weights_have_true_sizes():
    model = make_model(get_model("qwen3-30b-a3b"), "q.onnx.data")
    sizes = {
        t.name: int(dict((e.key, e.value) for e in t.external_data)["length"])
        for t in model.graph.initializer
        if t.external_data
    }
    assert sizes["model.layers.0.mlp.experts.gate_up_proj"] == 128 * 2 * 768 * 2048 * 2  # bf16
    assert sum(sizes.values()) > 55e9  # ~30.5 B parameters in bf16
