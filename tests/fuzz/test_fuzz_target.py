"""Fuzzing target TOML files: mutated shipped targets through `ndpc target check FILE`, and the
ones it accepts through `ndpc run ... --target FILE --json` (the report must be strict JSON with
finite numbers: whatever a target holds is either refused at load time or simulates sanely)."""

from __future__ import annotations

import re

import pytest
from harness import check_outcome, count, mutations, run_cli
from text_seeds import RUN_POLICIES, assert_strict_json, ir_seeds, target_seeds, write_trace

# A TOML syntax error is located at FILE:LINE:COL; a schema error names the file and the key.
TOML_LOCATED = re.compile(r"^(?P<file>[^\n]+):(\d+):(\d+): error: invalid TOML: ", re.MULTILINE)


def _fuzz(tmp_path, n: int, seed: int, simulate_every: int) -> None:
    src, outdir = tmp_path / "t.toml", tmp_path / "out"
    outdir.mkdir()
    model = tmp_path / "m.ndpir"
    model.write_bytes(ir_seeds()[0])
    trace = write_trace(tmp_path / "trace.npz")
    accepted = 0
    for case, data in mutations(target_seeds(), n, seed):
        src.write_bytes(data)
        out = run_cli(["target", "check", str(src)])
        check_outcome(out, [str(src), "--set"], None, f"check case {case}")
        if out.exit_code != 0:
            if "invalid TOML" in out.stderr:
                assert TOML_LOCATED.search(out.stderr), f"case {case}: {out.stderr[:500]}"
            continue
        accepted += 1
        if accepted % simulate_every:
            continue
        # what the checker accepts must simulate to finite numbers (e.g. no 1e-320 bandwidth)
        out = run_cli(["run", str(model), "--target", str(src), "--trace", str(trace),
                       "--policy", RUN_POLICIES[accepted % len(RUN_POLICIES)], "--json", "-o", str(outdir / "s.sched")])  # fmt: skip
        check_outcome(out, [str(src)], outdir, f"run case {case}")
        if out.exit_code == 0:
            assert_strict_json(out.stdout, f"run case {case}")
            (outdir / "s.sched").unlink()


def test_fuzz_target_quick(tmp_path):
    _fuzz(tmp_path, count(slow=False), seed=5, simulate_every=4)


@pytest.mark.slow
def test_fuzz_target_slow(tmp_path):
    _fuzz(tmp_path, count(slow=True), seed=105, simulate_every=1)


# --- targeted cases --------------------------------------------------------------------------

BANDWIDTH = "bandwidth_gbps = {value = 960,"
REFUSED = [
    ("denormal bandwidth", BANDWIDTH, "bandwidth_gbps = {value = 1e-320,", "implausibly small"),
    ("zero bandwidth", BANDWIDTH, "bandwidth_gbps = {value = 0,", "must be > 0"),
    ("negative bandwidth", BANDWIDTH, "bandwidth_gbps = {value = -960,", "must be > 0"),
    ("NaN bandwidth", BANDWIDTH, "bandwidth_gbps = {value = nan,", "finite"),
    ("inf bandwidth", BANDWIDTH, "bandwidth_gbps = {value = inf,", "finite"),
    ("huge bandwidth", BANDWIDTH, "bandwidth_gbps = {value = 1e308,", "implausibly large"),
    ("string bandwidth", BANDWIDTH, 'bandwidth_gbps = {value = "960",', "must be a number"),
    ("zero units", "units = {value = 4,", "units = {value = 0,", "must be >= 1"),
    ("huge units", "units = {value = 4,", "units = {value = 18446744073709551616,", "<= 64"),
    ("denormal efficiency", "fraction = [0.10,", "fraction = [1e-320,", "'fraction' must be in"),
    ("duplicate key", "[host]", '[host]\ncpu_gflops = {value = 1, assumed = "x"}', "TOML"),
]


@pytest.mark.parametrize("what,old,new,needle", REFUSED, ids=[r[0] for r in REFUSED])
def test_meaningless_target_values_refused(tmp_path, what, old, new, needle):
    text = next(s.decode() for s in target_seeds() if b'name = "rtx5080-ndp"' in s)
    assert old in text
    src = tmp_path / "t.toml"
    src.write_text(text.replace(old, new, 1))
    out = run_cli(["target", "check", str(src)])
    assert out.exit_code == 1, f"{what}: accepted"
    check_outcome(out, [str(src)], None, what)
    assert re.match(rf"{re.escape(str(src))}:\d+:\d+: error: ", out.stderr), out.stderr
    assert needle in out.stderr, out.stderr


def test_toml_syntax_error_located(tmp_path):
    src = tmp_path / "t.toml"
    src.write_text('name = "x"\ndescription = "y"\n[gpu\n')
    out = run_cli(["target", "check", str(src)])
    assert out.exit_code == 1
    assert out.stderr.startswith(f"{src}:3:5: error: invalid TOML: "), out.stderr


@pytest.mark.parametrize("path", ["/dev/zero", "dir"])
def test_target_file_read_within_bounds(tmp_path, path):
    path = str(tmp_path) if path == "dir" else path
    out = run_cli(["run", str(tmp_path / "m.ndpir"), "--target", path, "--trace", "t.npz",
                   "--policy", "tp"], timeout=10)  # fmt: skip
    assert out.exit_code == 1 and out.exception is None and path in out.stderr, out.stderr
