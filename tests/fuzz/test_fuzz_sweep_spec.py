"""Fuzz the sweep-spec reader: a mutated spec either reads (and expands to jobs) or fails with
one NdpcError naming the spec file; nothing else escapes. No point is run (that is the sweep's
own tests' business), so thousands of inputs take seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import count, mutations

from ndpc.compiler.experiments.sweep_spec import load_spec, point_job
from ndpc.ir.diagnostics import NdpcError

SEEDS = [
    b'model = "tiny-mixtral"\n[trace]\nprompt = 4\ntokens = 8\n[axes]\npolicy = ["monde", "ndpc"]\n'
    b'"set.ndp.units" = [2, 4]\n"trace.seed" = [0, 1]\n',
    b'combine = "zip"\ntarget = "rtx5080-ndp"\n[set]\n"link.pcie.gbps" = 32\n[axes]\n'
    b'model = ["tiny-mixtral", "tiny-qwen2-moe"]\npolicy = ["paper", "tp"]\n',
    b'model = "tiny-mixtral"\nzip = [["trace.seed", "trace.tokens"]]\ncheck = true\n[axes]\n'
    b'"trace.seed" = [0, 1, 2]\n"trace.tokens" = [8, 16, 32]\npipeline = ["tp-split,balance"]\n',
]


def _campaign(tmp_path: Path, n: int) -> None:
    path = tmp_path / "spec.toml"
    for case, data in mutations(SEEDS, n, seed=16):
        path.write_bytes(data)
        try:
            spec = load_spec(path)
            points = spec.points()
            if len(points) <= 64:
                for point in points:
                    point_job(spec, point)
        except NdpcError as err:
            assert str(path) in err.render(), f"case {case}: {err.render()}"


def test_fuzz_sweep_spec_quick(tmp_path: Path):
    _campaign(tmp_path, count(slow=False))


@pytest.mark.slow
def test_fuzz_sweep_spec_slow(tmp_path: Path):
    _campaign(tmp_path, count(slow=True))
