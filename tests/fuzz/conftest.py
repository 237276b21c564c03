"""Valid seed files for the data-reader fuzzers, made once per session with the real commands
(`ndpc trace gen`, `ndpc compile`, `ndpc schedule convert`) or written small by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import run_cli  # noqa: E402

TARGET = "rtx4060ti-ndp"


def _gen(path: Path, tokens: int, prompt: int, requests: int, seed: int) -> bytes:
    args = ["trace", "gen", "--model", "tiny-mixtral", "--tokens", str(tokens)]
    args += ["--prompt", str(prompt), "--requests", str(requests), "--seed", str(seed)]
    out = run_cli([*args, "-o", str(path)], timeout=120)
    assert out.exit_code == 0, out.stderr
    return path.read_bytes()


@pytest.fixture(scope="session")
def seed_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("seeds")


@pytest.fixture(scope="session")
def trace_seeds(seed_dir) -> dict[str, list[bytes]]:
    """ndpc's own trace forms: {'.npz': [...], '.jsonl': [...]} (tiny-mixtral, 2 layers, k=2)."""
    seeds: dict[str, list[bytes]] = {".npz": [], ".jsonl": []}
    for i, (tokens, prompt, requests) in enumerate([(6, 3, 2), (4, 0, 1), (5, 5, 1)]):
        for suffix in seeds:
            seeds[suffix].append(_gen(seed_dir / f"t{i}{suffix}", tokens, prompt, requests, i))
    capture = seed_dir / "capture.jsonl"  # a serving capture: arrivals + recorded iterations
    capture.write_bytes(batch_jsonl_seed())
    for suffix in seeds:
        out = run_cli(["trace", "import", str(capture), "-o", str(seed_dir / f"cap{suffix}")])
        assert out.exit_code == 0, out.stderr
        seeds[suffix].append((seed_dir / f"cap{suffix}").read_bytes())
    return seeds


def batch_jsonl_seed(layers: int = 2, arrivals: bool = True) -> bytes:
    """A serving capture (batch-jsonl): request 0 (prompt 3) alone, then decoding together with
    request 1 (prompt 2, admitted in iteration 1); one record per (iteration, request, position,
    layer), top-2 of 8 experts."""
    lines = []
    for r, (start, prompt, decode) in enumerate([(0, 3, 3), (1, 2, 2)]):
        for pos in range(prompt + decode):
            it = start if pos < prompt else start + pos - prompt + 1
            for l in range(layers):
                a, b = (r + l + pos) % 8, (r + 2 * l + pos + 3) % 8
                b = b if b != a else (a + 1) % 8
                rec = {"iteration": it, "request": r, "position": pos, "layer": l,
                       "experts": [a, b], "weights": [0.75, 0.25]}  # fmt: skip
                if arrivals:
                    rec["arrival_s"] = 0.001 * start
                lines.append(json.dumps(rec))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="session")
def schedule_seeds(seed_dir, trace_seeds) -> dict[str, list[bytes]]:
    """Schedules of tiny-mixtral under two policies: {'.ndps': [...], '.txt': [...]}."""
    trace = seed_dir / "t0.npz"
    seeds: dict[str, list[bytes]] = {".ndps": [], ".txt": []}
    for policy in ("paper", "tp"):
        binary, text = seed_dir / f"{policy}.ndps", seed_dir / f"{policy}.txt"
        out = run_cli(["compile", "tiny-mixtral", "--target", TARGET, "--trace", str(trace),
                       "--policy", policy, "-o", str(binary)], timeout=120)  # fmt: skip
        assert out.exit_code == 0, out.stderr
        out = run_cli(["schedule", "convert", str(binary), str(text)], timeout=60)
        assert out.exit_code == 0, out.stderr
        seeds[".ndps"].append(binary.read_bytes())
        seeds[".txt"].append(text.read_bytes())
    return seeds


def topk_jsonl_seed(problems: int = 2, layers: int = 2, tokens: int = 3) -> bytes:
    """Mixtral-style decode records: one per (problem, layer, token), top-2 of 8 experts."""
    lines = []
    for p in range(problems):
        for l in range(layers):
            for t in range(tokens):
                a, b = (p + l + t) % 8, (p + 2 * l + t + 3) % 8
                b = b if b != a else (a + 1) % 8
                rec = {"dataset": "x", "problem_id": p, "layer": l, "experts": [a, b],
                       "gating_probs": [0.75, 0.25], "token_idx": t}  # fmt: skip
                lines.append(json.dumps(rec))
    return ("\n".join(lines) + "\n").encode()


def flame_csv_seed(tokens: int = 4, experts: int = 6, k: int = 2, layer: int = 2) -> bytes:
    """A FLAME-style layer file: one row per token, the router probability of every expert."""
    rows = ["layer_id,token_id," + ",".join(f"expert_{e}" for e in range(experts))]
    for t in range(tokens):
        probs = ["0"] * experts
        for j in range(k):
            probs[(t + 2 * j) % experts] = f"{0.6 - 0.2 * j:.3f}"
        rows.append(f"{layer},{t}," + ",".join(probs))
    return ("\n".join(rows) + "\n").encode()


def popularity_seed(layers: int = 2, experts: int = 4) -> bytes:
    """Fiddler-style per-layer expert counts."""
    table = [[(l + 1) * (e + 1) * 2 for e in range(experts)] for l in range(layers)]
    return json.dumps({"expert_popularity": table}).encode()
