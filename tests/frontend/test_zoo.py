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
