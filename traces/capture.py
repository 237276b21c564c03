"""Capture real routing from an ONNX MoE model with onnxruntime (CPU).

The graph is rewritten so every router's choice becomes a graph output:
- fused `com.microsoft::MoE`/`QMoE` nodes: Softmax(axis=-1) -> TopK(k) is added on the router-logits
  input (input 1); the weights are the softmax values, renormalised over the k when the node's
  `normalize_routing_weights` is set (as the kernel does);
- decomposed exporter graphs: every TopK with a constant K whose input comes from a Softmax,
  Sigmoid, MatMul, Gemm or Add (the router) has its values and indices exposed; weights are the
  values as the graph computes them, or, when the values go (through Casts) into a Softmax, that
  Softmax's output: top-k-then-softmax routers (GPT-OSS, e.g. the onnxruntime-genai builder's
  decomposed form) select on raw logits and mix with the softmax over the k chosen; when they go
  into values / ReduceSum(values), that quotient: renormalising routers (Mixtral, Qwen3 exports).
Router order = graph (topological) order = trace layer order.

Inputs: language models (an `input_ids` input) get a seeded random prompt; decode steps feed the
greedy next token back, through `past_key_values.*` / `present.*` when the graph has a KV cache,
otherwise by re-running the grown sequence and keeping the last position. Graphs without token
inputs (a bare MoE block) get seeded random activations, one fresh row per decode step (documented
limit: no feedback is possible there). onnx and onnxruntime are imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ndpc.traces.errors import TraceError
from ndpc.traces.types import Trace, TraceMeta, experts_dtype
from ndpc.traces.validate import check_trace

PathLike = str | os.PathLike[str]
_FUSED = {"MoE", "QMoE"}
_ROUTER_PRODUCERS = {"Softmax", "Sigmoid", "MatMul", "Gemm", "Add", "Cast", "Reshape"}
_NP_TYPES = {1: np.float32, 10: np.float16, 11: np.float64, 6: np.int32, 7: np.int64, 9: np.bool_}


def _routers(model: Any) -> list[dict[str, Any]]:
    """Add router top-k outputs to `model.graph`; returns one dict per router in graph order."""
    import onnx  # lazy (here and below): onnx loads only when a trace is captured
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    routers, new_nodes = [], []
    for i, node in enumerate(list(graph.node)):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.domain == "com.microsoft" and node.op_type in _FUSED:
            k, logits = int(attrs.get("k", 1)), node.input[1]
            base = f"ndpc_router{len(routers)}"
            k_name = f"{base}_k"
            graph.initializer.append(numpy_helper.from_array(np.array([k], np.int64), k_name))
            new_nodes.append(helper.make_node("Softmax", [logits], [f"{base}_probs"], axis=-1))
            new_nodes.append(
                helper.make_node(
                    "TopK", [f"{base}_probs", k_name], [f"{base}_w", f"{base}_e"], axis=-1
                )
            )
            routers.append(
                {
                    "node": node.name or f"node{i}",
                    "k": k,
                    "values": f"{base}_w",
                    "indices": f"{base}_e",
                    "scores": f"{base}_probs",
                    "renorm": bool(attrs.get("normalize_routing_weights", 0)),
                }
            )
        elif node.op_type == "TopK" and len(node.input) > 1 and node.input[1] in consts:
            src = producer.get(node.input[0])
            if src is None or src.op_type not in _ROUTER_PRODUCERS and src.op_type != "Where":
                continue
            if _feeds_another_topk(node, consumers):
                continue  # a stage of group-limited routing (DeepSeek-V3), not the final choice
            k = int(np.asarray(consts[node.input[1]]).ravel()[0])
            routers.append(
                {
                    "node": node.name or f"node{i}",
                    "k": k,
                    "values": _mixing_weights(node.output[0], consumers),
                    "indices": node.output[1],
                    "scores": node.input[0],
                    "renorm": False,
                }
            )
    graph.node.extend(new_nodes)
    existing = {o.name for o in graph.output}
    for r in routers:
        for key in ("values", "indices", "scores"):
            if r[key] not in existing:
                graph.output.append(onnx.ValueInfoProto(name=r[key]))
                existing.add(r[key])
    return routers


def _mixing_weights(values: str, consumers: dict[str, list[Any]]) -> str:
    """The tensor the graph mixes expert outputs with, found from the TopK values (through Casts:
    fp16 graphs take TopK in fp32): Softmax(values) for top-k-then-softmax routers, values /
    ReduceSum(values) for renormalising softmax-then-top-k routers (Mixtral, Qwen3 exports), else
    the values themselves."""
    frontier = [values]
    for _ in range(3):
        nxt = []
        users = [u for v in frontier for u in consumers.get(v, [])]
        sums = {u.output[0] for u in users if u.op_type == "ReduceSum" and u.input[0] in frontier}
        for user in users:
            if user.op_type == "Softmax":
                return user.output[0]
            if user.op_type == "Div" and user.input[0] in frontier and user.input[1] in sums:
                return user.output[0]
            if user.op_type in ("Cast", "Identity"):
                nxt.extend(user.output)
        frontier = nxt
    return values


def _feeds_another_topk(node: Any, consumers: dict[str, list[Any]]) -> bool:
    """True if another TopK is reachable from `node` without passing an expert or router matmul
    (so it is reached within the same router, as in group-limited routing)."""
    seen, todo = set(), list(node.output)
    while todo:
        for user in consumers.get(todo.pop(), []):
            if id(user) in seen or user.op_type in ("MatMul", "Gemm", "MoE", "QMoE", "GatherND"):
                continue
            if user.op_type == "TopK":
                return True
            seen.add(id(user))
            todo.extend(user.output)
    return False


class _Runner:
    """Feeds one model: builds inputs, runs prefill and decode steps, collects router rows."""

    def __init__(self, path: PathLike, seed: int):
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as err:
            raise TraceError(
                path, f"capture needs onnx and onnxruntime ({err}); pip install 'ndpc[capture]'"
            ) from None
        try:
            model = onnx.load(str(path))
        except Exception as err:  # onnx raises several types for malformed files
            raise TraceError(path, f"not a readable ONNX model: {err}") from None
        self.path = path
        self.head_size = _kv_head_sizes(model)
        self.routers = _routers(model)
        if not self.routers:
            raise TraceError(
                path, "no router found (no com.microsoft::MoE node and no router TopK)"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        try:
            self.sess = ort.InferenceSession(
                model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise TraceError(path, f"onnxruntime cannot load the rewritten graph: {err}") from None
        self.inputs = {i.name: i for i in self.sess.get_inputs()}
        self.outputs = [o.name for o in self.sess.get_outputs()]
        self.rng = np.random.default_rng(seed)
        self.notes: list[str] = []
        self.token_ids: list[int] = []

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One onnxruntime run; every output by name."""
        try:
            return dict(zip(self.outputs, self.sess.run(self.outputs, feed), strict=True))
        except Exception as err:
            raise TraceError(self.path, f"onnxruntime failed to run the model: {err}") from None

    def rows(
        self, out: dict[str, np.ndarray], last: int | None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Experts [n, L, k] and weights of the run's tokens (the `last` n when given)."""
        ex, ws, experts = [], [], 0
        for r in self.routers:
            e = np.asarray(out[r["indices"]]).reshape(-1, r["k"])
            w = np.asarray(out[r["values"]], dtype=np.float64).reshape(-1, r["k"])
            if r["renorm"]:
                w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-30)
            experts = max(experts, int(np.asarray(out[r["scores"]]).shape[-1]))
            ex.append(e[-last:] if last else e)
            ws.append(w[-last:] if last else w)
        return np.stack(ex, axis=1), np.stack(ws, axis=1), experts


def _past_dim(dim: Any, axis: int, sizes: tuple[int, int] | None) -> int:
    """A concrete size for one axis of an empty past-KV input: batch 1, lengths 0 (a sliding
    window cache: its fixed window), head size from the attention node."""
    if isinstance(dim, int):
        return dim
    name = str(dim).lower()
    head, window = sizes or (0, -1)
    if "sliding" in name and window > 0:
        return window
    if "length" in name or "seq" in name:
        return 0
    if axis == 3 and head:
        return head
    return 1


def _kv_head_sizes(model: Any) -> dict[str, tuple[int, int]]:
    """Head size of each past-KV input read by a GroupQueryAttention/MultiHeadAttention node."""
    from onnx import helper

    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    sizes: dict[str, tuple[int, int]] = {}
    for node in model.graph.node:
        if node.op_type not in ("GroupQueryAttention", "MultiHeadAttention") or len(node.input) < 5:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        heads, kv_heads = (
            int(attrs.get("num_heads", 0)),
            int(attrs.get("kv_num_heads", attrs.get("num_heads", 0))),
        )
        qkv = producer.get(node.input[0])
        width = (
            shapes.get(qkv.input[1], [0])[-1]
            if qkv is not None and qkv.op_type == "MatMul" and len(qkv.input) > 1
            else 0
        )
        packed = not node.input[1]  # empty key input: query holds packed q, k, v
        if heads and width:
            size = width // (heads + 2 * kv_heads) if packed else width // heads
            window = (
                int(attrs.get("local_window_size", -1)) if attrs.get("sliding_window_cache") else -1
            )
            for name in node.input[3:5]:
                sizes[name] = (size, window)
    return sizes


def _lm_capture(
    run: _Runner, prompt: int, decode: int, ids: np.ndarray | None
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Prefill + greedy decode of a language model (input_ids [batch, seq])."""
    logits_name = next((o for o in run.outputs if "logits" in o), run.outputs[0])
    past = [n for n in run.inputs if n.startswith("past")]
    if ids is None:
        ids = run.rng.integers(0, _vocab(run), size=prompt).astype(np.int64)
    cache: dict[str, np.ndarray] = {}
    for n in past:
        info = run.inputs[n]
        shape = [_past_dim(d, i, run.head_size.get(n)) for i, d in enumerate(info.shape)]
        cache[n] = np.zeros(shape, dtype=_NP_TYPES.get(_elem(info), np.float32))
    exs, ws, experts = [], [], 0
    seq = ids
    for step in range(decode + 1):
        fresh = seq if step == 0 or not past else seq[-1:]
        feed = _lm_feed(run, fresh, len(seq), cache)
        out = run.run(feed)
        e, w, experts = run.rows(out, None if step == 0 else 1)
        exs.append(e)
        ws.append(w)
        nxt = int(np.argmax(out[logits_name].reshape(-1, out[logits_name].shape[-1])[-1]))
        seq = np.append(seq, nxt)
        for n in past:
            present = n.replace("past_key_values", "present")
            if present in out:
                cache[n] = out[present]
    if past and not all(n.replace("past_key_values", "present") in run.outputs for n in past):
        run.notes.append("some past_key_values inputs have no matching present output; fed empty")
    run.token_ids = [int(t) for t in seq[: prompt + decode]]
    return exs, ws, experts


def _vocab(run: _Runner) -> int:
    """Vocabulary size: the logits' last dim when static (else 256, with a note)."""
    for out in run.sess.get_outputs():
        if "logits" in out.name and isinstance(out.shape[-1], int):
            return int(out.shape[-1])
    run.notes.append("vocabulary size unknown; prompt ids drawn from [0, 256)")
    return 256


def _elem(info: Any) -> int:
    names = {
        "tensor(float)": 1,
        "tensor(float16)": 10,
        "tensor(double)": 11,
        "tensor(int32)": 6,
        "tensor(int64)": 7,
        "tensor(bool)": 9,
    }
    return names.get(info.type, 1)


def _lm_feed(
    run: _Runner, fresh: np.ndarray, total: int, cache: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    feed: dict[str, np.ndarray] = {}
    for name, info in run.inputs.items():
        dtype = _NP_TYPES.get(_elem(info), np.int64)
        if name == "input_ids":
            feed[name] = fresh[None, :].astype(dtype)
        elif name == "attention_mask":
            feed[name] = np.ones((1, total), dtype=dtype)
        elif name == "position_ids":
            feed[name] = np.arange(total - len(fresh), total)[None, :].astype(dtype)
        elif name in cache:
            feed[name] = cache[name]
        else:
            raise TraceError(run.path, f"capture does not know how to feed input {name!r}")
    return feed


def _block_capture(
    run: _Runner, prompt: int, decode: int, ids: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """A graph without token inputs: seeded random activations; decode = one fresh row per step."""
    run.notes.append(
        "graph has no input_ids: inputs are random activations, decode steps are not fed back"
    )
    exs, ws, experts = [], [], 0
    for step in range(decode + 1):
        n = prompt if step == 0 else 1
        feed = {}
        for name, info in run.inputs.items():
            shape = [d if isinstance(d, int) else n for d in info.shape]
            feed[name] = run.rng.standard_normal(shape).astype(
                _NP_TYPES.get(_elem(info), np.float32)
            )
        e, w, experts = run.rows(run.run(feed), None)
        exs.append(e)
        ws.append(w)
    return exs, ws, experts


def capture_trace(
    path: PathLike,
    prompt_tokens: int,
    decode_tokens: int = 0,
    seed: int = 0,
    prompt_ids: Sequence[int] | None = None,
) -> tuple[Trace, list[str]]:
    """Run the ONNX model and record its routers' top-k; returns the trace and notes on limits.

    `prompt_ids` fixes the prompt of a language model (default: seeded random ids).
    """
    if prompt_ids is not None:
        prompt_tokens = len(prompt_ids)
    if prompt_tokens < 1 or decode_tokens < 0:
        raise ValueError("--prompt-tokens must be >= 1 and --decode-tokens >= 0")
    run = _Runner(path, seed)
    ks = {r["k"] for r in run.routers}
    if len(ks) > 1:
        raise TraceError(path, f"routers disagree on top-k: {sorted(ks)}")
    capture = _lm_capture if "input_ids" in run.inputs else _block_capture
    ids = np.asarray(prompt_ids, dtype=np.int64) if prompt_ids is not None else None
    exs, ws, experts = capture(run, prompt_tokens, decode_tokens, ids)
    ex, w = np.concatenate(exs), np.concatenate(ws)
    n = len(ex)
    phase = (np.arange(n) >= prompt_tokens).astype(np.uint8)
    k = ks.pop()
    params = {
        "routers": [r["node"] for r in run.routers],
        "prompt_tokens": prompt_tokens,
        "decode_tokens": decode_tokens,
        "notes": run.notes,
        "token_ids": run.token_ids,
    }
    meta = TraceMeta(
        os.path.basename(str(path)),
        len(run.routers),
        experts,
        k,
        f"capture:{os.path.basename(str(path))}",
        "onnxruntime",
        seed,
        params,
    )
    trace = Trace(
        meta, ex.astype(experts_dtype(experts)), w.astype(np.float32), phase, np.zeros(n, np.int32)
    )
    check_trace(trace, path)
    return trace, run.notes
