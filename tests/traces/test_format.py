"""The canonical .npz format and the JSON-lines form: round trips, streaming, every validation rule."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ndpc.traces.errors import TraceError
from ndpc.traces.format import (
    Popularity,
    Trace,
    TraceMeta,
    TraceWriter,
    iter_chunks,
    load_any,
    load_trace,
    read_header,
    save_trace,
)
from ndpc.traces.validate import check_trace


def small_trace(
    tokens: int = 12, layers: int = 3, experts: int = 8, k: int = 2, seed: int = 0
) -> Trace:
    rng = np.random.default_rng(seed)
    ex = np.argsort(rng.random((tokens, layers, experts)), axis=2)[:, :, :k]
    w = rng.random((tokens, layers, k)).astype(np.float32)
    phase = (np.arange(tokens) % 6 >= 2).astype(np.uint8)  # two requests: 2 prefill + 4 decode
    request = (np.arange(tokens) // 6).astype(np.int32)
    return Trace(
        TraceMeta("toy", layers, experts, k, "test", "small_trace", seed), ex, w, phase, request
    )


def same(a: Trace, b: Trace) -> bool:
    return (
        np.array_equal(a.experts, b.experts)
        and np.array_equal(a.weights, b.weights)
        and np.array_equal(a.phase, b.phase)
        and np.array_equal(a.request, b.request)
    )


def test_npz_round_trip_is_plain_numpy_and_deterministic(tmp_path: Path) -> None:
    t = small_trace()
    save_trace(t, tmp_path / "a.npz")
    save_trace(t, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["experts", "header", "phase", "request", "weights"]
        assert json.loads(z["header"].tobytes())["version"] == 1
        assert z["experts"].dtype == np.int16
    back = load_trace(tmp_path / "a.npz")
    assert same(back, t)
    assert back.meta == t.meta


@pytest.mark.parametrize("chunk", [1, 5, 12, 1000])
def test_iter_chunks_covers_the_trace_in_order(tmp_path: Path, chunk: int) -> None:
    t = small_trace(tokens=23)
    save_trace(t, tmp_path / "t.npz")
    chunks = list(iter_chunks(tmp_path / "t.npz", chunk))
    assert [c.tokens for c in chunks][:-1] == [chunk] * (len(chunks) - 1)
    assert np.array_equal(np.concatenate([c.experts for c in chunks]), t.experts)


def test_writer_streams_the_same_file_as_save(tmp_path: Path) -> None:
    t = small_trace(tokens=30)
    save_trace(t, tmp_path / "whole.npz")
    with TraceWriter(tmp_path / "streamed.npz", t.meta) as w:
        for s in range(0, 30, 7):
            w.write(t.slice(s, s + 7))
    assert (tmp_path / "whole.npz").read_bytes() == (tmp_path / "streamed.npz").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".trace-")]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    t = small_trace()
    save_trace(t, tmp_path / "t.jsonl")
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["format"] == "ndpc-trace-jsonl"
    assert json.loads(lines[1])["experts"] == t.experts[0].tolist()
    back = load_trace(tmp_path / "t.jsonl")
    assert np.array_equal(back.experts, t.experts)
    assert np.allclose(back.weights, t.weights, atol=1e-6)
    assert read_header(tmp_path / "t.jsonl")["tokens"] == t.tokens


def test_popularity_round_trip(tmp_path: Path) -> None:
    pop = Popularity(TraceMeta("m", 2, 4, 2), np.array([[3, 1, 2, 2], [4, 0, 2, 2]]))
    for name in ("p.npz", "p.jsonl"):
        save_trace(pop, tmp_path / name)
        back = load_any(tmp_path / name)
        assert isinstance(back, Popularity) and np.array_equal(back.counts, pop.counts)
        assert back.tokens == 4
    with pytest.raises(TraceError, match="popularity file"):
        load_trace(tmp_path / "p.npz")


def replace_arrays(t: Trace, **arrays: np.ndarray) -> Trace:
    fields = {"experts": t.experts, "weights": t.weights, "phase": t.phase, "request": t.request}
    fields.update(arrays)
    return Trace(t.meta, **fields)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: {"experts": np.where(np.arange(3)[None, :, None] == 1, 8, t.experts)},
            r"token 0, layer 1: expert id 8 out of range",
        ),
        (lambda t: {"experts": t.experts[:, :, :1]}, r"expected \(12, 3, 2\)"),
        (
            lambda t: {
                "weights": np.where(np.arange(12)[:, None, None] == 4, np.nan, t.weights).astype(
                    np.float32
                )
            },
            r"token 4, layer 0: routing weight is NaN",
        ),
        (
            lambda t: {"experts": np.repeat(t.experts[:, :, :1], 2, axis=2)},
            r"token 0, layer 0: expert chosen twice",
        ),
        (
            lambda t: {"request": t.request[::-1].copy()},
            r"token 6: request ids must be non-decreasing",
        ),
        (
            lambda t: {"phase": (1 - t.phase).astype(np.uint8)},
            r"token 2: prefill token after a decode token",
        ),
        (lambda t: {"phase": np.full(12, 2, np.uint8)}, r"token 0: phase must be 0"),
    ],
)
def test_invalid_arrays_name_token_and_layer(tmp_path: Path, change, message: str) -> None:
    t = small_trace()
    with pytest.raises(TraceError, match=message):
        save_trace(replace_arrays(t, **change(t)), tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()  # validated before anything is written


def write_raw(path: Path, members: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in members.items():
            with zf.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, arr, allow_pickle=True)


def header_array(**changes) -> np.ndarray:
    head = {
        "format": "ndpc-trace",
        "version": 1,
        "kind": "trace",
        "model": "",
        "layers": 3,
        "experts": 8,
        "k": 2,
        "tokens": 12,
        "source": "",
        "generator": "",
        "seed": None,
        "params": {},
    }
    head.update(changes)
    return np.frombuffer(json.dumps(head).encode(), dtype=np.uint8)


def arrays_of(t: Trace) -> dict[str, np.ndarray]:
    return {
        "experts": t.experts.astype(np.int16),
        "weights": t.weights,
        "phase": t.phase,
        "request": t.request,
    }


def test_out_of_range_ids_on_disk_are_found_on_load(tmp_path: Path) -> None:
    t = small_trace()
    ex = t.experts.astype(np.int16)
    ex[7, 2, 1] = 99
    write_raw(tmp_path / "t.npz", {"header": header_array(), **arrays_of(t), "experts": ex})
    with pytest.raises(
        TraceError, match=r"t.npz: token 7, layer 2: expert id 99 out of range \[0, 8\)"
    ):
        load_trace(tmp_path / "t.npz")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"version": 7}, "unsupported version 7"),
        ({"k": 3}, r"experts.npy has shape \(12, 3, 2\), header implies \(12, 3, 3\)"),
        ({"tokens": 13}, "header implies"),
        ({"layers": 0}, "'layers' must be a positive integer"),
        ({"k": 9}, "k=9 exceeds experts=8"),
        ({"format": "other"}, "'format' must be 'ndpc-trace'"),
    ],
)
def test_bad_headers(tmp_path: Path, header: dict, message: str) -> None:
    write_raw(tmp_path / "t.npz", {"header": header_array(**header), **arrays_of(small_trace())})
    with pytest.raises(TraceError, match=message):
        load_trace(tmp_path / "t.npz")


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    t = small_trace()
    evil = np.empty(12, dtype=object)
    evil[:] = [{"x": i} for i in range(12)]
    write_raw(tmp_path / "t.npz", {"header": header_array(), **arrays_of(t), "request": evil})
    with pytest.raises(TraceError, match="request.npy holds Python objects"):
        load_trace(tmp_path / "t.npz")
    (tmp_path / "p.npz").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a raw pickle stream
    with pytest.raises(TraceError, match="not an ndpc trace"):
        load_trace(tmp_path / "p.npz")


def test_truncated_and_corrupt_files(tmp_path: Path) -> None:
    save_trace(small_trace(tokens=200), tmp_path / "t.npz")
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match="cut.npz: not an ndpc trace .* truncated/corrupt"):
        load_trace(tmp_path / "cut.npz")
    flipped = bytearray(data)
    flipped[data.index(b"weights.npy") + 400] ^= 0xFF  # inside the weights payload
    (tmp_path / "crc.npz").write_bytes(bytes(flipped))
    with pytest.raises(TraceError, match="crc.npz: corrupt or truncated archive: Bad CRC-32"):
        load_trace(tmp_path / "crc.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(TraceError, match="empty.npz"):
        load_trace(tmp_path / "empty.npz")


def test_missing_member(tmp_path: Path) -> None:
    members = arrays_of(small_trace())
    del members["phase"]
    write_raw(tmp_path / "t.npz", {"header": header_array(), **members})
    with pytest.raises(TraceError, match="lacks member.*phase.npy"):
        load_trace(tmp_path / "t.npz")


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    save_trace(small_trace(), tmp_path / "t.jsonl")
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    cases = {
        4: ("{not json", r"bad.jsonl:4: invalid JSON"),
        5: (lines[5], r"bad.jsonl:5: token index t=4, expected 3"),  # a record went missing
        6: (
            json.dumps({**json.loads(lines[5]), "experts": [[1, 9], [0, 1], [2, 3]]}),
            r"bad.jsonl:6 \(token 4, layer 0\): expert id 9 out of range",
        ),
        7: (
            json.dumps({**json.loads(lines[6]), "weights": [[None, 1], [0, 1], [2, 3]]}),
            r"bad.jsonl:7 \(token 5, layer 0\): routing weight is NaN",
        ),
        8: (
            json.dumps({**json.loads(lines[7]), "experts": [[1], [0], [2]]}),
            r"bad.jsonl:8: experts must be 3 lists of k=2",
        ),
    }
    for lineno, (text, message) in cases.items():
        bad = list(lines)
        bad[lineno - 1] = text
        (tmp_path / "bad.jsonl").write_text("\n".join(bad) + "\n")
        with pytest.raises(TraceError, match=message):
            load_trace(tmp_path / "bad.jsonl")


@pytest.mark.parametrize("name", ["t.npz", "t.jsonl"])
def test_fuzzed_files_fail_cleanly(tmp_path: Path, name: str) -> None:
    """Random byte damage either still loads as a valid trace or raises TraceError, never
    another exception (which the CLI would show as a traceback)."""
    save_trace(small_trace(tokens=20), tmp_path / name)
    data = (tmp_path / name).read_bytes()
    rng = np.random.default_rng(0)
    outcomes = set()
    for i in range(int(os.environ.get("NDPC_FUZZ_ROUNDS", "150"))):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 4))):
            buf[pos] = int(rng.integers(0, 256))
        if i % 10 == 0:
            buf = buf[: int(rng.integers(0, len(buf)))]
        path = tmp_path / f"f{i}{Path(name).suffix}"
        path.write_bytes(bytes(buf))
        try:
            check_trace(load_trace(path))
            outcomes.add("ok")
        except TraceError:
            outcomes.add("error")
    assert "error" in outcomes
