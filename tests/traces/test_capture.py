"""Capture with onnxruntime: a hand-built router graph (checked against numpy) and the shared tiny
exporter graphs (prefill + decode, KV cache and re-run, fused and decomposed routers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ndpc.traces.capture import capture_trace  # noqa: E402
from ndpc.traces.errors import TraceError  # noqa: E402

ONNX_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "onnx"
LM_GRAPHS = [
    "mixtral__batched_mm__dynamo.onnx",
    "mixtral__batched_mm__torchscript.onnx",
    "gpt_oss__genai_builder_fp32_cpu__fused_com.microsoft.MoE.onnx",
]


def router_graph(path: Path, w: np.ndarray, k: int) -> None:
    """x [n, d] -> two routers (MatMul -> Softmax -> TopK), layer 1 fed by layer 0's softmax."""
    d, e = w.shape
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["l0"]),
        helper.make_node("Softmax", ["l0"], ["p0"], axis=-1),
        helper.make_node("TopK", ["p0", "k"], ["v0", "i0"], axis=-1),
        helper.make_node("MatMul", ["p0", "w1"], ["l1"]),
        helper.make_node("Softmax", ["l1"], ["p1"], axis=-1),
        helper.make_node("TopK", ["p1", "k"], ["v1", "i1"], axis=-1),
        helper.make_node("ReduceSum", ["v1"], ["y"], keepdims=1),
    ]
    w1 = np.eye(e, dtype=np.float32)[::-1] * 3.0
    graph = helper.make_graph(
        nodes,
        "routers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(w, "w0"),
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(np.array([k], np.int64), "k"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def test_hand_built_routers_match_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 8)).astype(np.float32)
    router_graph(tmp_path / "r.onnx", w, k=3)
    trace, notes = capture_trace(tmp_path / "r.onnx", prompt_tokens=7, decode_tokens=2, seed=5)
    assert "no input_ids" in notes[0]
    assert (trace.meta.layers, trace.meta.experts, trace.meta.k, trace.tokens) == (2, 8, 3, 9)
    # the capture feeds seeded normal activations: rebuild them and route in numpy
    feed = np.random.default_rng(5)
    x = np.concatenate(
        [feed.standard_normal((7, 6)), feed.standard_normal((1, 6)), feed.standard_normal((1, 6))]
    ).astype(np.float32)
    p0 = softmax(x @ w)
    p1 = softmax(p0 @ (np.eye(8, dtype=np.float32)[::-1] * 3.0))
    for layer, p in enumerate((p0, p1)):
        want = np.argsort(-p, axis=1, kind="stable")[:, :3]
        assert np.array_equal(trace.experts[:, layer], want)
        assert np.allclose(trace.weights[:, layer], np.take_along_axis(p, want, axis=1), atol=1e-5)
    assert trace.phase.tolist() == [0] * 7 + [1] * 2


def test_not_an_onnx_model(tmp_path: Path) -> None:
    (tmp_path / "x.onnx").write_bytes(b"garbage")
    with pytest.raises(TraceError, match="x.onnx: not a readable ONNX model"):
        capture_trace(tmp_path / "x.onnx", 4)


def test_graph_without_router(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        str(tmp_path / "g.onnx"),
    )
    with pytest.raises(TraceError, match="no router found"):
        capture_trace(tmp_path / "g.onnx", 4)


needs_graphs = pytest.mark.skipif(not ONNX_DIR.is_dir(), reason="../shared/data/onnx is absent")


@needs_graphs
@pytest.mark.parametrize("name", LM_GRAPHS)
def test_decode_steps_match_one_run_over_the_whole_sequence(name: str) -> None:
    """Greedy decode fed back token by token (KV cache or re-run) routes every token exactly as a
    single prefill over the final sequence does: the model is causal."""
    trace, _ = capture_trace(ONNX_DIR / name, prompt_tokens=6, decode_tokens=5, seed=3)
    assert (trace.meta.layers, trace.meta.experts, trace.meta.k, trace.tokens) == (2, 8, 2, 11)
    assert trace.phase.tolist() == [0] * 6 + [1] * 5
    ids = trace.meta.params["token_ids"]
    assert len(ids) == 11
    whole, _ = capture_trace(ONNX_DIR / name, prompt_tokens=0, decode_tokens=0, prompt_ids=ids)
    assert np.array_equal(whole.experts, trace.experts)
    assert np.allclose(whole.weights, trace.weights, atol=1e-4)


@needs_graphs
def test_two_exports_of_one_model_route_alike() -> None:
    a, _ = capture_trace(ONNX_DIR / LM_GRAPHS[0], 8, 4, seed=1)
    b, _ = capture_trace(ONNX_DIR / LM_GRAPHS[1], 8, 4, seed=1)
    assert np.array_equal(a.experts, b.experts)


@needs_graphs
@pytest.mark.parametrize("name", LM_GRAPHS[:2])
def test_renormalising_routers_record_the_weights_the_graph_mixes_with(name: str) -> None:
    """Mixtral exports divide the top-k softmax values by their sum (ReduceSum + Div): the trace
    holds that quotient, so each token's k weights sum to 1 (the raw top-k values do not)."""
    trace, _ = capture_trace(ONNX_DIR / name, prompt_tokens=6, decode_tokens=2, seed=1)
    assert np.allclose(trace.weights.sum(axis=2), 1.0, atol=1e-5)
    assert (trace.weights < 1.0 - 1e-3).any()  # not a degenerate one-hot


@needs_graphs
def test_fused_moe_block() -> None:
    trace, notes = capture_trace(ONNX_DIR / "contrib_moe_swiglu.onnx", 10, 3)
    assert (trace.meta.layers, trace.meta.experts, trace.meta.k, trace.tokens) == (1, 8, 2, 13)
    assert np.allclose(trace.weights.sum(axis=2), 1.0, atol=1e-5)  # normalize_routing_weights=1
    assert notes


@pytest.mark.parametrize(
    ("name", "form"),
    [("tiny-mixtral", "decomposed"), ("tiny-mixtral", "fused"), ("tiny-deepseek-v3", "decomposed")],
)
def test_zoo_tiny_models(tmp_path: Path, name: str, form: str) -> None:
    """Models from `ndpc model make --tiny-weights` (the front end's); DeepSeek-V3's group-limited
    routing has three TopKs per layer, of which only the last is the router."""
    from click.testing import CliRunner

    from ndpc.compiler.cli import main

    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(
        main, ["model", "make", name, "-o", str(out), "--tiny-weights", "--form", form]
    )
    if res.exit_code != 0:
        pytest.skip(f"ndpc model make unavailable: {res.output.strip()[:200]}")
    trace, _ = capture_trace(out, prompt_tokens=6, decode_tokens=3, seed=2)
    assert (trace.meta.layers, trace.meta.k, trace.tokens) == (2, 2, 9)
    whole, _ = capture_trace(out, 0, 0, prompt_ids=trace.meta.params["token_ids"])
    assert np.array_equal(whole.experts, trace.experts)


def test_topk_then_softmax_router_weights_are_the_softmax(tmp_path: Path) -> None:
    """The onnxruntime-genai builder's decomposed GPT-OSS block (runnable hand-built copy in
    tests/frontend/onnx_fixtures.py): TopK on the raw logits, the mixing weights are the softmax
    over the k chosen logits (not the logits the TopK returns)."""
    from onnx_fixtures import H, genai_block_model

    model = genai_block_model(tiny_weights=True, seed=4)
    onnx.save(model, str(tmp_path / "b.onnx"))
    trace, _ = capture_trace(tmp_path / "b.onnx", prompt_tokens=7, decode_tokens=2, seed=5)
    assert (trace.meta.layers, trace.meta.experts, trace.meta.k, trace.tokens) == (1, 8, 2, 9)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    feed = np.random.default_rng(5)
    x = np.concatenate([feed.standard_normal((n, H)) for n in (7, 1, 1)]).astype(np.float32)
    p = "model.layers.0.moe.router"
    logits = x @ w[f"{p}.MatMul.weight"] + w[f"{p}.Add.bias"]
    want = np.argsort(-logits, axis=1, kind="stable")[:, :2]
    assert np.array_equal(trace.experts[:, 0], want)
    chosen = softmax(np.take_along_axis(logits, want, axis=1))
    assert np.allclose(trace.weights[:, 0], chosen, atol=1e-5)
