"""Clearly invalid values in data files are refused with one message naming the file and the line
or field, never simulated into nonsense; and the crash classes the fuzzers found stay fixed
(one small input each, run through the real commands)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import TARGET, flame_csv_seed, popularity_seed, topk_jsonl_seed
from harness import check_outcome, npz_members, npz_pack, run_cli
from onnx_fixtures import all_fixtures
from test_fuzz_onnx import BAD_UTF8
from test_fuzz_schedule import _pack, _split


def refused(args: list[str], src: Path, *patterns: str, outdir: Path | None = None) -> str:
    """Run ndpc ARGS; it must fail cleanly naming `src`, and its message match every pattern."""
    out = run_cli(args, timeout=10)
    assert out.exit_code != 0, f"accepted: {args}\n{out.stdout[-500:]}"
    check_outcome(out, [str(src)], outdir, " ".join(args))
    assert "Warning" not in out.stderr, out.stderr
    for pattern in patterns:
        assert re.search(pattern, out.stderr), f"{pattern!r} not in:\n{out.stderr}"
    return out.stderr


# ------------------------------------------------------------------------------ ndpc .jsonl


def _jsonl_edit(trace_seeds, tmp_path: Path, edit) -> Path:
    lines = trace_seeds[".jsonl"][0].decode().splitlines()
    header, records = json.loads(lines[0]), [json.loads(l) for l in lines[1:]]
    text = edit(header, records)
    path = tmp_path / "t.jsonl"
    path.write_text(text if isinstance(text, str) else _dump(header, records))
    return path


def _dump(header, records) -> str:
    return "\n".join(json.dumps(r) for r in [header, *records]) + "\n"


@pytest.mark.parametrize(
    "edit, patterns",
    [
        (lambda h, r: r[2]["weights"][1].__setitem__(0, -0.25), [r":4 \(token 2, layer 1\)", "routing weight -0.25"]),
        (lambda h, r: r[2]["weights"][0].__setitem__(1, 1e308), [r":4 \(token 2, layer 0\)", "must be in"]),
        (lambda h, r: r[1]["experts"][0].__setitem__(0, 8), [r":3 \(token 1, layer 0\)", r"expert id 8 out of range \[0, 8\)"]),
        (lambda h, r: r[1]["experts"][0].__setitem__(0, 1e308), [":3", "out of range"]),
        (lambda h, r: r[1]["experts"][0].__setitem__(0, -1), [":3", "out of range"]),
        (lambda h, r: r[3].__setitem__("request", -1), [":5", "request must be an integer in"]),
        (lambda h, r: r[3].__setitem__("phase", True), [":5", "phase must be 0 or 1"]),
        (lambda h, r: r.pop(), ["header says 12 tokens but the file holds 11"]),  # (truncated)
        (lambda h, r: h.__setitem__("experts", 2**40), ["header", "beyond what ndpc holds"]),
        (lambda h, r: h.__setitem__("layers", 10**20), ["header", "beyond what ndpc holds"]),
        (lambda h, r: h.__setitem__("model", "\ud83d"), ["header", "lone UTF-16 surrogate"]),
        (lambda h, r: _dump(h, r).replace('"t": 2,', '"t": ' + "7" * 5000 + ","), [":4", "invalid JSON"]),
        (lambda h, r: _dump(h, r) + "[" * 100_000 + "\n", [":14", "nested too deeply"]),
    ],
)  # fmt: skip
def test_jsonl_trace_refusals(trace_seeds, tmp_path, edit, patterns):
    path = _jsonl_edit(trace_seeds, tmp_path, edit)
    refused(["trace", "stats", str(path)], path, *patterns)
    if "header says" not in patterns[0]:  # (show reads only the tokens it shows)
        refused(["trace", "show", str(path), "--tokens", "0:12"], path, *patterns)
    outdir = tmp_path / "out"
    outdir.mkdir()
    refused(["trace", "import", str(path), "-o", str(outdir / "t.npz")], path, outdir=outdir)


# ------------------------------------------------------------------------------ importers


def test_topk_huge_layer_is_refused_without_allocating(tmp_path):
    rec = {"problem_id": 0, "layer": 10**20, "experts": [1, 2], "gating_probs": [0.5, 0.5],
           "token_idx": 0}  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_bytes(topk_jsonl_seed() + (json.dumps(rec) + "\n").encode())
    refused(["trace", "import", str(path), "-o", str(tmp_path / "t.npz")], path, ":13", "layer")
    rec["layer"] = 30_000  # within the limit, but the file cannot justify 30,000 layers
    path.write_bytes(topk_jsonl_seed() + (json.dumps(rec) + "\n").encode())
    refused(["trace", "import", str(path), "-o", str(tmp_path / "t.npz")], path, "no records at")


@pytest.mark.parametrize(
    "old, new, patterns",
    [
        (b"[0.75, 0.25]", b"[0.75, -0.25]", [":1", "routing weight -0.25"]),
        (b'"experts": [0, 3]', b'"experts": [1e308, 3]', [":1", "expert ids"]),
        (b'"experts": [0, 3]', b'"experts": [' + b"9" * 30 + b", 3]", [":1", "out of range"]),
        (b'"token_idx": 0}', b'"token_idx": ' + b"1" * 5000 + b"}", [":1", "invalid JSON"]),
    ],
)
def test_topk_refusals(tmp_path, old, new, patterns):
    path = tmp_path / "r.jsonl"
    path.write_bytes(topk_jsonl_seed().replace(old, new, 1))
    args = ["trace", "import", str(path), "--format", "topk-jsonl", "-o", str(tmp_path / "t.npz")]
    refused(args, path, *patterns)


@pytest.mark.parametrize(
    "edit, patterns",
    [
        (lambda t: t.replace("0.600", "-0.600", 1), [":2", "probabilities"]),
        (lambda t: t.replace("0.600", "1e308", 1), [":2", "probabilities"]),
        (lambda t: t.replace("0.600", "x" * 200_000, 1), [":2", "not valid CSV"]),
        (lambda t: t.replace("\n2,1,", "\n2," + "9" * 40 + ",", 1), [":3", "token_id"]),
    ],
)
def test_csv_refusals(tmp_path, edit, patterns):
    path = tmp_path / "layer2.csv"
    path.write_text(edit(flame_csv_seed().decode()))
    refused(["trace", "import", str(path), "-o", str(tmp_path / "t.npz")], path, *patterns)


@pytest.mark.parametrize(
    "text, patterns",
    [
        ('{"expert_popularity": [[1, 2], [3, -4]]}', [r"expert_popularity\[1\]"]),
        ('{"expert_popularity": [[1, 2], [3, 1e308]]}', [r"expert_popularity\[1\]"]),
        ('{"expert_popularity": [[1, 2], [3, ' + str(2**64) + "]]}", ["2\\*\\*53"]),
        ('{"expert_popularity": ' + "[" * 50_000 + "]" * 50_000 + "}", ["nested too deeply"]),
    ],
)
def test_popularity_refusals(tmp_path, text, patterns):
    path = tmp_path / "pop.json"
    path.write_text(text)
    args = ["trace", "import", str(path), "--k", "1", "-o", str(tmp_path / "p.npz")]
    refused(args, path, *patterns)
    path.write_bytes(popularity_seed())  # and the valid one imports
    assert run_cli(args).exit_code == 0


# ------------------------------------------------------------------------------ .npz


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npz_edit(trace_seeds, tmp_path, edit) -> Path:
    members = npz_members(trace_seeds[".npz"][0])
    arrays = {n.removesuffix(".npy"): np.load(io.BytesIO(raw)) for n, raw in members.items()}
    edit(members, arrays)
    path = tmp_path / "t.npz"
    path.write_bytes(npz_pack(members))
    return path


def _set(name, fn):
    def edit(members, arrays):
        arr = arrays[name].copy()
        members[f"{name}.npy"] = _npy(fn(arr))

    return edit


def _object_array(members, arrays):
    payload = np.empty(3, dtype=object)
    payload[:] = [print, "x", 1]
    members["request.npy"] = _npy(payload)


@pytest.mark.parametrize(
    "edit, patterns",
    [
        (_set("weights", lambda a: a * -1), ["token 0, layer 0", "routing weight -"]),
        (_set("weights", lambda a: a.astype(np.float64) + 1e308), ["token 0", "must be in"]),
        (_set("experts", lambda a: a + 8), ["token 0", "out of range"]),
        (_set("request", lambda a: a - 5), ["token 0", "request ids must be >= 0"]),
        (_set("experts", lambda a: a.astype(np.float32)), ["dtype float32"]),
        (_set("phase", lambda a: a[:-1]), ["phase.npy has shape"]),
        (lambda m, a: m.pop("weights.npy"), ["lacks member.*weights.npy"]),
        (_object_array, ["Python objects"]),
        (lambda m, a: m.__setitem__("phase.npy", m["phase.npy"][:10] + b"(((" + m["phase.npy"][13:]), ["phase.npy"]),
        (lambda m, a: m.__setitem__("header.npy", _npy(np.frombuffer(b"[" * 100_000, np.uint8))), ["nested too deeply"]),
    ],
)  # fmt: skip
def test_npz_refusals(trace_seeds, tmp_path, edit, patterns):
    path = _npz_edit(trace_seeds, tmp_path, edit)
    refused(["trace", "stats", str(path)], path, *patterns)
    refused(["trace", "show", str(path)], path, *patterns)


def test_npz_header_token_count_must_match_the_arrays(trace_seeds, tmp_path):
    def more_tokens(members, arrays):
        header = json.loads(arrays["header"].tobytes())
        header["tokens"] += 1
        members["header.npy"] = _npy(np.frombuffer(json.dumps(header).encode(), np.uint8))

    path = _npz_edit(trace_seeds, tmp_path, more_tokens)
    refused(["trace", "stats", str(path)], path, "header implies")


# ------------------------------------------------------------------------------ schedules


def _text_schedule(schedule_seeds, tmp_path, edit) -> Path:
    path = tmp_path / "s.txt"
    path.write_text(edit(schedule_seeds[".txt"][0].decode()))
    return path


def _simulate(path: Path, outdir: Path) -> list[str]:
    return ["simulate", str(path), "--target", TARGET, "-o", str(outdir / "r.json")]


def test_untagged_gpu_resident_kernel_simulates(schedule_seeds, tmp_path):
    """token -1 (no token, which docs/schedule.md allows) on a GPU-resident expert kernel."""
    text = schedule_seeds[".txt"][0].decode()
    line = next(l for l in text.splitlines() if "reason=gpu_resident" in l)
    path = tmp_path / "s.txt"
    path.write_text(text.replace(line, re.sub(r" token=\d+", "", line)))
    out = run_cli(_simulate(path, tmp_path))
    assert out.exit_code == 0 and out.exception is None, out.stderr


@pytest.mark.parametrize(
    "old, new, patterns",
    [
        (" token=0 ", " token=2147483648 ", [r"s\.txt:4:\d+", "out of range"]),
        (" token=0 ", " token=" + "9" * 40 + " ", [r"s\.txt:4:\d+", "out of range"]),
        (" token=0 ", " request=-1 token=0 ", [r"s\.txt:4:\d+", "'request' = -1"]),
        (" token=0 ", " layer=-2 token=0 ", [r"s\.txt:4:\d+", "'layer' = -2"]),
        ("mem=384.0", "mem=-inf", [r"s\.txt:4:\d+", "'mem'"]),
        ("mem=384.0", "mem=nan", [r"s\.txt:4:\d+", "'mem'"]),
        ("meta {", "meta [1]\nmeta {", [r"s\.txt:3:\d+", "meta must be a JSON object"]),
        ("resources gpu cpu", "resources gpu gpu", [r"s\.txt:2:\d+", "unique"]),
        ('meta {"', 'meta {"x": "\\ud83d", "', [r"s\.txt:3:\d+", "lone UTF-16 surrogate"]),
    ],
)
def test_text_schedule_refusals(schedule_seeds, tmp_path, old, new, patterns):
    path = _text_schedule(schedule_seeds, tmp_path, lambda t: t.replace(old, new, 1))
    outdir = tmp_path / "out"
    outdir.mkdir()
    message = refused(_simulate(path, outdir), path, *patterns, outdir=outdir)
    assert "<arrays>" not in message


def _binary(schedule_seeds, tmp_path, edit_header=None, column=None, value=None) -> Path:
    data = schedule_seeds[".ndps"][0]
    header, body = _split(data)
    if edit_header:
        edit_header(header)
    if column:
        col = next(c for c in header["columns"] if c["name"] == column)
        cells = np.frombuffer(body, col["dtype"], col["length"], col["offset"]).copy()
        cells[3] = value
        body = body[: col["offset"]] + cells.tobytes() + body[col["offset"] + cells.nbytes :]
    path = tmp_path / "s.ndps"
    path.write_bytes(_pack(data, json.dumps(header).encode(), body))
    return path


@pytest.mark.parametrize(
    "kwargs, patterns",
    [
        ({"column": "request", "value": -1}, ["op 3", "'request' = -1"]),
        ({"column": "token", "value": -7}, ["op 3", "'token' = -7"]),
        ({"column": "unit", "value": 9}, ["op 3: unit 9 but target .* has 4 NDP units"]),
        ({"column": "flops", "value": float("nan")}, ["op 3", "'flops'"]),
        ({"edit_header": lambda h: h.__setitem__("meta", 3)}, ["'meta' must be an object"]),
        ({"edit_header": lambda h: h.__setitem__("resources", "gpu")}, ["'resources'"]),
        ({"edit_header": lambda h: h["meta"].__setitem__("model", "\udc00")}, ["surrogate"]),
        ({"edit_header": lambda h: h["columns"][2].__setitem__("length", float("inf"))}, ["bad descriptor"]),
        ({"edit_header": lambda h: h["columns"][2].__setitem__("offset", 10**30)}, ["does not fit"]),
    ],
)  # fmt: skip
def test_binary_schedule_refusals(schedule_seeds, tmp_path, kwargs, patterns):
    path = _binary(schedule_seeds, tmp_path, **kwargs)
    outdir = tmp_path / "out"
    outdir.mkdir()
    refused(_simulate(path, outdir), path, *patterns, outdir=outdir)
    if "unit" not in str(kwargs):  # (a unit beyond the target is only wrong for that target)
        refused(["schedule", "stats", str(path)], path, *patterns)


# ------------------------------------------------------------------------------ ONNX


def _onnx(tmp_path, edit, fixture="zoo_softmax_topk_renorm") -> Path:
    model = onnx.ModelProto()
    model.CopyFrom(all_fixtures()[fixture][0])
    data = edit(model)
    path = tmp_path / "m.onnx"
    path.write_bytes(data if isinstance(data, bytes) else model.SerializeToString())
    return path


def _topk_k(value):
    def edit(model):
        topk = next(n for n in model.graph.node if n.op_type == "TopK")
        k = next(t for t in model.graph.initializer if t.name == topk.input[1])
        k.CopyFrom(onnx.numpy_helper.from_array(np.array([value], np.int64), k.name))

    return edit


def _non_utf8_name(model):
    model.graph.node[3].name = "QQQQQQ"
    return model.SerializeToString().replace(b"QQQQQQ", BAD_UTF8 + b"QQQ")


def _weight_dims(value):
    def edit(model):
        t = next(t for t in model.graph.initializer if t.name == "model.layers.0.mlp.gate.weight")
        t.dims[1] = value
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        t.external_data.add(key="location", value="w.data")

    return edit


@pytest.mark.parametrize(
    "edit, patterns",
    [
        (_topk_k(0), ["TopK", "k = 0 must be in 1..8"]),
        (_topk_k(-2), ["TopK", "k = -2"]),
        (_topk_k(9), ["TopK", "k = 9 must be in 1..8"]),
        (_non_utf8_name, ["not UTF-8"]),
        (_weight_dims(-64), ["negative dims"]),
        (_weight_dims(0), ["k = 2 must be in 1..0"]),
        (lambda m: m.graph.node[1].input.pop(), ["needs at least"]),
    ],
)
def test_onnx_refusals(tmp_path, edit, patterns):
    path = _onnx(tmp_path, edit)
    outdir = tmp_path / "out"
    outdir.mkdir()
    refused(["import", str(path), "-o", str(outdir / "m.ndpir")], path, *patterns, outdir=outdir)
