"""Fuzzing `--set key=value` target overrides: every schema key with edge values, wrong types,
odd text and made-up keys, through `ndpc target show` (and `ndpc run --json` for the accepted
ones). A refused override names `--set` and the key; an accepted one simulates to strict JSON."""

from __future__ import annotations

import random

import pytest
from harness import EDGE_NUMBERS, EDGE_TEXT, check_outcome, count, run_cli
from text_seeds import (
    RUN_POLICIES,
    TARGET,
    assert_strict_json,
    ir_seeds,
    override_keys,
    write_trace,
)

VALUES = [*EDGE_NUMBERS, *EDGE_TEXT[:-1], "4", "2", "0.5", "1e-6", "1e9", "960", "pcie", "dimm",
          "false", "'x'", "{value = 1}", "[1, 2]", "{bytes = [1, 2], fraction = [0.5, 1]}",
          "{bytes = [2, 1], fraction = [0.5, 1]}", "{intensity = [1], fraction = [nan]}"]  # fmt: skip


def overrides(n: int, seed: int):
    rng = random.Random(seed)
    keys = override_keys()
    for case in range(n):
        key = rng.choice(keys)
        if rng.random() < 0.1:
            key = rng.choice([key.upper(), key + "x", key.replace(".", "_"), "", "gpu", "=",
                              key[: rng.randrange(len(key) + 1)]])  # fmt: skip
        value = rng.choice(VALUES)
        sep = "=" if rng.random() < 0.95 else rng.choice(["", "==", " = ", ":"])
        yield (
            case,
            [f"{key}{sep}{value}" for _ in range(1)]
            + ([f"{rng.choice(keys)}={rng.choice(VALUES)}"] if rng.random() < 0.3 else []),
        )


def _fuzz(tmp_path, n: int, seed: int, simulate_every: int) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    model = tmp_path / "m.ndpir"
    model.write_bytes(ir_seeds()[0])
    trace = write_trace(tmp_path / "trace.npz")
    accepted = 0
    for case, sets in overrides(n, seed):
        flags = [a for s in sets for a in ("--set", s)]
        out = run_cli(["target", "show", TARGET, *flags])
        check_outcome(out, ["--set"], None, f"case {case}: {sets}")
        if out.exit_code != 0:
            continue
        accepted += 1
        if accepted % simulate_every:
            continue
        out = run_cli(["run", str(model), "--target", TARGET, *flags, "--trace", str(trace),
                       "--policy", RUN_POLICIES[accepted % len(RUN_POLICIES)], "--json", "-o", str(outdir / "s.sched")])  # fmt: skip
        # a valid override can still make the model not fit (e.g. 1e-6 GiB of GPU memory)
        check_outcome(out, ["--set", "ndp.", "gpu.", str(model), "<pipeline>"], outdir,
                      f"run case {case}: {sets}")  # fmt: skip
        if out.exit_code == 0:
            assert_strict_json(out.stdout, f"run case {case}: {sets}")
            (outdir / "s.sched").unlink()


def test_fuzz_overrides_quick(tmp_path):
    _fuzz(tmp_path, count(slow=False), seed=6, simulate_every=3)


@pytest.mark.slow
def test_fuzz_overrides_slow(tmp_path):
    _fuzz(tmp_path, count(slow=True), seed=106, simulate_every=1)


REFUSED = [
    ("gpu.bandwidth_gbps=1e-320", "implausibly small"),
    ("gpu.bandwidth_gbps=-1", "must be > 0"),
    ("gpu.bandwidth_gbps=nan", "finite"),
    ("gpu.bandwidth_gbps=inf", "finite"),
    ("link.pcie.gbps=0", "must be > 0"),
    ("ndp.units=0", "must be >= 1"),
    ("ndp.units=2.5", "must be an integer"),
    ("ndp.units=9223372036854775808", "<= 64"),
    ("ndp.units=four", "must be a number"),
    ("gpu.mem_efficiency=0", "'fraction' must be in"),
    ("gpu.mem_efficiency=nan", "'fraction' must be in"),
    ("ndp.exclusive_host_access=1", "true or false"),
    ("ndp.kind=flash", "must be one of"),
    ("gpu.bandwith_gbps=1", "did you mean 'gpu.bandwidth_gbps'"),
    ("ndp.units", "expected key=value"),
]


@pytest.mark.parametrize("text,needle", REFUSED, ids=[r[0] for r in REFUSED])
def test_meaningless_overrides_refused(text, needle):
    out = run_cli(["target", "show", TARGET, "--set", text])
    assert out.exit_code == 1, f"{text}: accepted"
    assert out.stderr.startswith("--set: error: "), out.stderr
    assert needle in out.stderr, out.stderr
