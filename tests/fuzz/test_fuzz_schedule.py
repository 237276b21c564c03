"""Fuzzing the schedule readers (binary `.ndps` and the `.txt` text form) through `ndpc simulate
FILE --target ... -o OUT` and `ndpc schedule stats`: byte and line edits, plus structural edits of
the binary form (a re-packed header with odd fields, edge values written into typed columns)."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from conftest import TARGET
from harness import check_outcome, count, mutate, run_cli

MAGIC_LEN = 16  # magic (8) + version (4) + header length (4)
EDGE_JSON = [None, True, -1, 0, 2**31, 2**64, 1e308, float("inf"), float("nan"), -0.5, "x", "",
             [], {}, [1, 2], {"a": []}, "|O", "<f16", "é" * 3]  # fmt: skip
EDGE_CELLS = {  # typed values an op column can hold that the simulator must not take at face value
    "token": [-1, -2, 2**31 - 1, -(2**31)], "request": [-1, -(2**31), 2**31 - 1],
    "layer": [-1, -2, 2**15 - 1], "expert": [-1, -7, 2**31 - 1], "shard": [-1, -3, 2**15 - 1],
    "unit": [-1, -2, 4, 99, 2**15 - 1], "kind": [7, 255], "resource": [99, 2**16 - 1],
    "phase": [2, 255], "reason": [13, 255], "dep_idx": [-1, 2**31 - 1], "dep_ptr": [-1, 2**40],
    "flops": [-1.0, float("nan"), float("inf"), 1e308], "mem_bytes": [-1.0, float("nan"), 1e308],
    "link_bytes": [-1.0, float("inf"), 1e308],
}  # fmt: skip


def _split(data: bytes) -> tuple[dict, bytes]:
    hlen = int(np.frombuffer(data, "<u4", 1, 12)[0])
    return json.loads(data[MAGIC_LEN : MAGIC_LEN + hlen]), data[MAGIC_LEN + hlen :]


def _pack(seed: bytes, header_text: bytes, body: bytes) -> bytes:
    return seed[:12] + np.uint32(len(header_text)).tobytes() + header_text + body


def binary_mutate(data: bytes, rng: random.Random) -> bytes:
    """One structural edit of a valid binary schedule (the header stays length-consistent)."""
    header, body = _split(data)
    op = rng.randrange(4)
    if op == 0:  # text edits of the header JSON
        return _pack(data, mutate(json.dumps(header).encode(), rng), body)
    if op == 1:  # an odd value for one header or column-descriptor field
        holder = header if rng.random() < 0.4 else rng.choice(header["columns"])
        holder[rng.choice(sorted(holder))] = rng.choice(EDGE_JSON)
        return _pack(data, json.dumps(header).encode(), body)
    # an edge value written into one cell of a typed column
    col = rng.choice([c for c in header["columns"] if c["name"] in EDGE_CELLS and c["length"]])
    dtype = np.dtype(col["dtype"])
    cells = np.frombuffer(body, dtype, col["length"], col["offset"]).copy()
    with np.errstate(all="ignore"):
        cells[rng.randrange(len(cells))] = np.asarray(rng.choice(EDGE_CELLS[col["name"]])).astype(
            dtype
        )
    raw = cells.tobytes()
    body = body[: col["offset"]] + raw + body[col["offset"] + len(raw) :]
    return _pack(data, json.dumps(header).encode(), body)


def _inputs(seeds: list[bytes], binary: bool, n: int, seed: int):
    rng = random.Random(seed)
    for case in range(n):
        data = seeds[rng.randrange(len(seeds))]
        structural = binary and rng.random() < 0.7
        yield case, binary_mutate(data, rng) if structural else mutate(data, rng)


def _campaign(tmp_path, seeds: list[bytes], suffix: str, n: int, seed: int) -> None:
    src, outdir = tmp_path / f"in{suffix}", tmp_path / "out"
    outdir.mkdir()
    for case, data in _inputs(seeds, suffix == ".ndps", n, seed):
        src.write_bytes(data)
        if case % 2:
            command = ["schedule", "stats", str(src)]
        else:
            command = ["simulate", str(src), "--target", TARGET, "-o", str(outdir / "r.json")]
        check_outcome(run_cli(command), [str(src)], outdir, f"{suffix} case {case} ({command[0]})")
        shutil.rmtree(outdir)
        outdir.mkdir()


@pytest.mark.parametrize("suffix", [".ndps", ".txt"])
def test_fuzz_schedule_quick(tmp_path, schedule_seeds, suffix):
    _campaign(tmp_path, schedule_seeds[suffix], suffix, count(slow=False), seed=4)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".ndps", ".txt"])
def test_fuzz_schedule_slow(tmp_path, schedule_seeds, suffix):
    _campaign(tmp_path, schedule_seeds[suffix], suffix, count(slow=True), seed=104)
