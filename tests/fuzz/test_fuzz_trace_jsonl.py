"""Fuzzing the JSON trace readers: ndpc's `.jsonl` interchange form (`ndpc trace stats / show /
import`), the topk-jsonl decode records, the batch-jsonl serving captures and the popularity JSON
counts (`ndpc trace import`)."""

from __future__ import annotations

import shutil

import pytest
from conftest import batch_jsonl_seed, popularity_seed, topk_jsonl_seed
from harness import check_outcome, count, mutations, run_cli


def _commands(kind: str, src, outdir, case: int) -> list[str]:
    out = str(outdir / "t.npz")
    if kind == "ndpc":
        return [["trace", "stats", str(src)], ["trace", "show", str(src), "--tokens", "0:99"],
                ["trace", "import", str(src), "-o", out]][case % 3]  # fmt: skip
    if kind == "topk":
        return ["trace", "import", str(src), "--format", "topk-jsonl", "-o", out]
    if kind == "batch":
        return ["trace", "import", str(src), "--format", "batch-jsonl", "-o", out]
    return ["trace", "import", str(src), "--format", "popularity-json", "--k", "2", "-o", out]


def _campaign(tmp_path, kind: str, seeds: list[bytes], n: int, seed: int) -> None:
    src = tmp_path / ("in.json" if kind == "popularity" else "in.jsonl")
    outdir = tmp_path / "out"
    outdir.mkdir()
    for case, data in mutations(seeds, n, seed):
        src.write_bytes(data)
        command = _commands(kind, src, outdir, case)
        check_outcome(run_cli(command), [str(src)], outdir, f"{kind} case {case}")
        shutil.rmtree(outdir)
        outdir.mkdir()


def _seeds(kind: str, trace_seeds) -> list[bytes]:
    if kind == "ndpc":
        return trace_seeds[".jsonl"]
    if kind == "topk":
        return [topk_jsonl_seed(), topk_jsonl_seed(1, 3, 2)]
    if kind == "batch":
        return [batch_jsonl_seed(), batch_jsonl_seed(1, arrivals=False)]
    return [popularity_seed(), popularity_seed(3, 8)]


# the ndpc form gets the whole quick budget; the small importers share about one
@pytest.mark.parametrize(
    "kind,share", [("ndpc", 1.0), ("topk", 0.4), ("batch", 0.4), ("popularity", 0.4)]
)
def test_fuzz_jsonl_quick(tmp_path, trace_seeds, kind, share):
    _campaign(tmp_path, kind, _seeds(kind, trace_seeds), int(count(slow=False) * share), seed=2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ndpc", "topk", "batch", "popularity"])
def test_fuzz_jsonl_slow(tmp_path, trace_seeds, kind):
    _campaign(tmp_path, kind, _seeds(kind, trace_seeds), count(slow=True), seed=102)
