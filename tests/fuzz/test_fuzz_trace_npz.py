"""Fuzzing the `.npz` trace reader through `ndpc trace stats / show / import`: byte-level edits of
the archive and structural ones (members with wrong dtypes or shapes, missing members, object
arrays that must never be unpickled, damaged .npy headers, edge values in the data)."""

from __future__ import annotations

import random
import shutil

import pytest
from harness import check_outcome, count, mutate, npz_mutate, run_cli


def _inputs(seeds: list[bytes], n: int, seed: int):
    rng = random.Random(seed)
    for case in range(n):
        data = seeds[rng.randrange(len(seeds))]
        # half structural (a valid ZIP with odd members), half raw bytes (a damaged archive)
        yield case, npz_mutate(data, rng) if rng.random() < 0.6 else mutate(data, rng)


def _campaign(tmp_path, seeds, n, seed):
    src, outdir = tmp_path / "in.npz", tmp_path / "out"
    outdir.mkdir()
    for case, data in _inputs(seeds, n, seed):
        src.write_bytes(data)
        command = [["trace", "stats", str(src)], ["trace", "show", str(src), "--tokens", "0:99"],
                   ["trace", "import", str(src), "-o", str(outdir / "t.npz")]][case % 3]  # fmt: skip
        check_outcome(run_cli(command), [str(src)], outdir, f"npz case {case} ({command[1]})")
        shutil.rmtree(outdir)
        outdir.mkdir()


def test_fuzz_npz_quick(tmp_path, trace_seeds):
    _campaign(tmp_path, trace_seeds[".npz"], count(slow=False), seed=1)


@pytest.mark.slow
def test_fuzz_npz_slow(tmp_path, trace_seeds):
    _campaign(tmp_path, trace_seeds[".npz"], count(slow=True), seed=101)
