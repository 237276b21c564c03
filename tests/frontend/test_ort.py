"""Tiny zoo models made with --tiny-weights execute in onnxruntime (CPU), as trace capture needs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_fixtures import VARIANTS

from ndpc.compiler.frontend.model_writer import make_model
from ndpc.compiler.zoo import get_model

ort = pytest.importorskip("onnxruntime")

CONFIGS = [get_model(n) for n in ("tiny-mixtral", "tiny-qwen2-moe", "tiny-deepseek-v3")]
CONFIGS += [cfg for cfg, _ in VARIANTS.values() if cfg.name not in {c.name for c in CONFIGS}]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_tiny_model_runs_in_onnxruntime(cfg, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(make_model(cfg, "m.onnx.data", tiny_weights=True).SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for length in (7, 11):
        ids = (np.arange(length, dtype=np.int64) * 37) % cfg.vocab
        (logits,) = session.run(["logits"], {"input_ids": ids[None, :]})
        assert logits.shape == (1, length, cfg.vocab)
        assert np.isfinite(logits).all() and logits.std() > 0


def test_router_indices_are_readable_from_the_graph(tmp_path):
    """Capture recipe of docs/frontend.md: expose each router TopK's indices as an output."""
    import onnx

    model = make_model(get_model("tiny-mixtral"), "m.onnx.data", tiny_weights=True)
    for node in model.graph.node:
        if node.name.endswith("/mlp/gate/TopK"):
            model.graph.output.append(onnx.ValueInfoProto(name=node.output[1]))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = session.run(None, {"input_ids": np.arange(9, dtype=np.int64)[None, :]})
    routes = outs[1:]
    assert len(routes) == 2 and all(r.shape == (9, 2) for r in routes)
    assert all(((r >= 0) & (r < 8)).all() and (r[:, 0] != r[:, 1]).all() for r in routes)


@pytest.mark.parametrize("name", ["tiny-mixtral", "tiny-deepseek-v3"])
def test_router_outputs_flag(name, tmp_path):
    """`--router-outputs` exposes router.<layer>.experts / .weights; the import is unchanged."""
    from ndpc.compiler.frontend.builder import build_module
    from ndpc.compiler.frontend.importer import import_spec
    from ndpc.ir.printer import print_module

    cfg = get_model(name)
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(
        make_model(cfg, "m.data", tiny_weights=True, router_outputs=True).SerializeToString()
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    moe = [i for i in range(cfg.layers) if i not in cfg.dense_layers]
    assert names[1:] == [f"router.{i}.{part}" for i in moe for part in ("experts", "weights")]
    outs = session.run(None, {"input_ids": np.arange(5, dtype=np.int64)[None, :]})
    outs = dict(zip(names, outs, strict=True))
    for i in moe:
        experts, weights = outs[f"router.{i}.experts"], outs[f"router.{i}.weights"]
        assert experts.shape == weights.shape == (5, cfg.top_k)
        assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-5)  # renormalised
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(make_model(cfg, "m.data", tiny_weights=True).SerializeToString())
    assert print_module(build_module(import_spec(str(path)))) == print_module(
        build_module(import_spec(str(plain)))
    ).replace("@plain", f"@{name.replace('-', '_')}")


@pytest.mark.parametrize("name", ["tiny-mixtral", "tiny-qwen2-moe"])
def test_fused_form_runs_and_imports(name, tmp_path):
    """`--form fused`: com.microsoft::MoE blocks that onnxruntime's CPU kernel executes."""
    from ndpc.compiler.frontend.importer import import_spec

    cfg = get_model(name)
    path = tmp_path / "fused.onnx"
    model = make_model(cfg, "f.data", tiny_weights=True, form="fused")
    assert sum(n.op_type == "MoE" for n in model.graph.node) == cfg.moe_layers
    path.write_bytes(model.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input_ids": np.arange(6, dtype=np.int64)[None, :]})
    assert logits.shape == (1, 6, cfg.vocab) and np.isfinite(logits).all()
    spec = import_spec(str(path))
    for layer in spec.moe_layers:
        moe = layer.moe
        assert (moe.form, moe.experts, moe.router.k, moe.ffn.d_ff) == ("fused-moe", 8, 2, 32)
        assert moe.shared_count == cfg.shared_experts


def test_fused_form_refuses_group_routing():
    from ndpc.ir.diagnostics import NdpcError

    with pytest.raises(NdpcError, match="no com.microsoft::MoE form"):
        make_model(get_model("tiny-deepseek-v3"), "x.data", form="fused")


def test_genai_decomposed_block_computes_gpt_oss_moe():
    """The runnable copy of the genai builder's decomposed GPT-OSS block: TopK of the logits,
    softmax over the k, interleaved SwiGLU clamped at 7 with alpha 1.702 and up + 1, biases."""
    from onnx import numpy_helper
    from onnx_fixtures import GENAI_DFF, H, genai_block_model

    model = genai_block_model(tiny_weights=True, seed=3)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = np.random.default_rng(1).standard_normal((5, H)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"hidden": x})
    p = "model.layers.0.moe"
    logits = x @ w[f"{p}.router.MatMul.weight"] + w[f"{p}.router.Add.bias"]
    top = np.argsort(-logits, axis=1)[:, :2]
    chosen = np.take_along_axis(logits, top, axis=1)
    mix = np.exp(chosen - chosen.max(axis=1, keepdims=True))
    mix /= mix.sum(axis=1, keepdims=True)
    want = np.zeros_like(x)
    for t, j in np.ndindex(top.shape):
        e = top[t, j]
        h = w[f"{p}.experts.gate_up_proj.weight"][e] @ x[t] + w[f"{p}.experts.gate_up_proj.bias"][e]
        assert h.shape == (2 * GENAI_DFF,)
        gate, up = np.minimum(h[0::2], 7.0), np.clip(h[1::2], -7.0, 7.0)
        act = gate / (1 + np.exp(-1.702 * gate)) * (up + 1)
        down = w[f"{p}.experts.down_proj.weight"][e] @ act + w[f"{p}.experts.down_proj.bias"][e]
        want[t] += mix[t, j] * down
    assert np.allclose(got, want, atol=1e-4)
