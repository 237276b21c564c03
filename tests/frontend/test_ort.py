"""Tiny zoo models made with --tiny-weights execute in onnxruntime (CPU), as trace capture needs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_fixtures import VARIANTS

from compiler.frontend.model_writer import make_model
from compiler.zoo import get_model

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
        (logits,) = session.run(["logits"], {"input_ids": ids})
        assert logits.shape == (length, cfg.vocab)
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
    outs = session.run(None, {"input_ids": np.arange(9, dtype=np.int64)})
    routes = outs[1:]
    assert len(routes) == 2 and all(r.shape == (9, 2) for r in routes)
    assert all(((r >= 0) & (r < 8)).all() and (r[:, 0] != r[:, 1]).all() for r in routes)
