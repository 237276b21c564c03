"""Fuzzing the FLAME-style per-layer probability CSV importer (`ndpc trace import FILE.csv`)."""

from __future__ import annotations

import shutil

import pytest
from conftest import flame_csv_seed
from harness import check_outcome, count, mutations, run_cli

SEEDS = [flame_csv_seed(), flame_csv_seed(tokens=3, experts=8, k=3, layer=5)]


def _campaign(tmp_path, n: int, seed: int) -> None:
    src, outdir = tmp_path / "layer2.csv", tmp_path / "out"
    outdir.mkdir()
    for case, data in mutations(SEEDS, n, seed):
        src.write_bytes(data)
        command = ["trace", "import", str(src), "-o", str(outdir / "t.npz")]
        check_outcome(run_cli(command), [str(src)], outdir, f"csv case {case}")
        shutil.rmtree(outdir)
        outdir.mkdir()


def test_fuzz_csv_quick(tmp_path):
    _campaign(tmp_path, count(slow=False), seed=3)


@pytest.mark.slow
def test_fuzz_csv_slow(tmp_path):
    _campaign(tmp_path, count(slow=True), seed=103)
