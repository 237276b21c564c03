"""Fuzzing pipeline strings (`-p`): a mutator over valid pipelines with option values from the
edge list, through `ndpc opt -p` with and without a target, and the parser alone (hypothesis).
A pipeline the parser refuses is reported at `<pipeline>:1:COL`; one it accepts either runs or
fails naming a pass (also at `<pipeline>:1:COL`) -- never a traceback, never output."""

from __future__ import annotations

import random
import re

import pytest
from harness import EDGE_NUMBERS, EDGE_TEXT, check_outcome, count, mutate, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from text_seeds import TARGET, ir_seeds, pipeline_seeds, write_trace

from ndpc.compiler.passes import PASSES
from ndpc.compiler.passes.pipeline import parse_pipeline, print_pipeline
from ndpc.ir.diagnostics import NdpcError

LOCATED = re.compile(r"^<pipeline>:1:(\d+): error: ", re.MULTILINE)
# option values worth trying besides the mutator's: every enum's values, misspelt, and auto
VALUES = [*EDGE_NUMBERS, "auto", "gpu", "ndp", "prefill", "global", "eplb", "monde-lb", "1,2",
          "true", "off", "", "=", "4 4", "@trace", "/dev/zero", "-", "1", "2", "4", "0.5", "64"]  # fmt: skip


def _elements() -> list[str]:
    """The passes (with their options) of every seed pipeline."""
    return sorted(
        {e for s in pipeline_seeds() for e in re.findall(r"[\w-]+(?:\{[^}]*\})?", s.decode())}
    )


def _option_edit(text: bytes, rng: random.Random) -> bytes:
    """Set one option of one pass (known or made up) to an edge value."""
    passes = text.decode("utf-8", "surrogateescape").split(",")
    i = rng.randrange(len(passes))
    name = re.match(r"[\w-]*", passes[i]).group()
    fields = (
        [f.name.replace("_", "-") for f in PASSES[name].option_fields()] if name in PASSES else []
    )
    key = rng.choice([*fields, "units", "bogus"] if fields else ["units", "bogus"])
    options = re.findall(r"[\w-]+=[^ }]*", passes[i])
    options = [o for o in options if not o.startswith(f"{key}=")]
    passes[i] = f"{name}{{{' '.join([*options, f'{key}={rng.choice(VALUES)}'])}}}"
    return ",".join(passes).encode("utf-8", "surrogateescape")


def pipelines(n: int, seed: int, calib: str = "calib.npz"):
    """`n` pipelines: valid passes recombined, options set to edge values, byte mutations. `calib`
    is the calibration file fiddler-profile seeds name."""
    rng = random.Random(seed)
    fiddler = f"stripe,fiddler-profile{{calib={calib}}},dispatch{{rule=fiddler}}".encode()
    seeds = [*pipeline_seeds(), fiddler]
    elements = [*_elements(), f"fiddler-profile{{calib={calib}}}"]
    for case in range(n):
        text = seeds[rng.randrange(len(seeds))]
        draw = rng.random()
        if draw < 0.3:  # valid passes in any order: what runs after what
            text = ",".join(rng.choices(elements, k=rng.randint(1, 4))).encode()
        elif draw < 0.65:
            text = _option_edit(text, rng)
        else:
            text = mutate(text, rng)
        if rng.random() < 0.1:
            text += b"," + rng.choice(EDGE_TEXT).encode("utf-8", "surrogatepass")
        # undecodable bytes reach argv as lone surrogates (Python's surrogateescape)
        yield case, text.decode("utf-8", "surrogateescape")


def _check_parse(text: str, case: str) -> None:
    """The parser alone: passes, or an NdpcError at <pipeline>:1:COL within the text."""
    try:
        passes = parse_pipeline(text)
    except NdpcError as err:
        assert err.loc is not None and err.loc.file == "<pipeline>" and err.loc.line == 1, case
        assert 1 <= err.loc.col <= len(text) + 1, f"{case}: column {err.loc.col} of {text!r}"
        return
    # what the parser accepts prints back to a pipeline that parses to the same passes
    assert parse_pipeline(print_pipeline(passes)) == passes, case


def _fuzz_cli(tmp_path, n: int, seed: int) -> None:
    src, outdir = tmp_path / "m.ndpir", tmp_path / "out"
    src.write_bytes(ir_seeds()[0])
    outdir.mkdir()
    calib = write_trace(tmp_path / "calib.npz")
    for case, text in pipelines(n, seed, str(calib)):
        target = ["--target", TARGET] if case % 2 else []
        out = run_cli(["opt", str(src), "-p", text, *target, "-o", str(outdir / "o.ndpir")])
        label = f"case {case}: -p {text[:200]!r}{' --target' if target else ''}"
        check_outcome(out, ["<pipeline>:1:", str(src), "--target"], outdir, label)
        if out.exit_code == 0:
            (outdir / "o.ndpir").unlink()
            continue
        # every pipeline error, from the parser or from a pass about its options, is located
        if str(src) not in out.stderr and "--target" not in out.stderr.split("error:")[0]:
            match = LOCATED.search(out.stderr)
            assert match, f"{label}: no <pipeline>:1:COL in\n{out.stderr[:1000]}"
            assert 1 <= int(match.group(1)) <= len(text) + 1, label


def test_fuzz_pipeline_parse_quick():
    for case, text in pipelines(count(slow=False) * 3, seed=3):
        _check_parse(text, f"case {case}: {text!r}")


def test_fuzz_pipeline_cli_quick(tmp_path):
    _fuzz_cli(tmp_path, count(slow=False), seed=4)


@pytest.mark.slow
def test_fuzz_pipeline_parse_slow():
    for case, text in pipelines(count(slow=True) * 5, seed=103):
        _check_parse(text, f"case {case}: {text!r}")


@pytest.mark.slow
def test_fuzz_pipeline_cli_slow(tmp_path):
    _fuzz_cli(tmp_path, count(slow=True), seed=104)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("tp-split{}=, ,auto0123456789.e-nafgu")) | st.characters(),
        max_size=60,
    )
)
def test_parse_pipeline_never_crashes(text):
    _check_parse(text, repr(text))


# --- targeted cases: meaningless option values are refused at their column ------------------

REFUSED = [
    ("prefetch{budget-gib=inf}", 21, "finite"),
    ("prefetch{budget-gib=1e308}", 21, "<= 1048576"),
    ("prefetch{budget-gib=-1}", 21, ">= 0"),
    ("prefetch{budget-gib=nan}", 21, "finite"),
    ("prefetch{hysteresis=nan}", 21, "finite"),
    ("prefetch{hysteresis=-inf}", 21, "finite"),
    ("prefetch{context=-1}", 18, ">= 0"),
    ("prefetch{min-count=99999999999999999999}", 20, "<= 2147483647"),
    ("prefetch{source=prefil}", 17, "did you mean 'prefill'"),
    ("prefetch{allocation=globl}", 21, "did you mean 'global'"),
    ("tp-split{units=0}", 16, ">= 1"),
    ("tp-split{units=-4}", 16, ">= 1"),
    ("tp-split{units=9223372036854775808}", 16, "<= 64"),
    ("tp-split{degree=0}", 17, ">= 1"),
    ("tp-split{reduce=cpu}", 17, "one of (gpu, ndp) or auto"),
    ("stripe{units=0}", 14, ">= 1"),
    ("balance{drift-threshold=nan}", 25, "finite"),
    ("balance{replan-interval=-1}", 25, ">= 0"),
    ("dispatch{rule=eplbb}", 15, "did you mean 'eplb'"),
    ("dispatch{gpu-slots=-2}", 20, ">= 0"),
    ("dispatch{drift-threshold=1e400}", 26, "finite"),
    ("fiddler-profile{budget-gib=-0.5}", 28, ">= 0"),
    ("tp-split{units=4 units=4}", 18, "given twice"),
    ("tp-split{units=4", 9, "never closed"),
    ("tp-split,,balance", 10, "expected a pass name"),
]


@pytest.mark.parametrize("text,col,needle", REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_option_values_refused_at_their_column(text, col, needle, tmp_path):
    src = tmp_path / "m.ndpir"
    src.write_bytes(ir_seeds()[0])
    out = run_cli(["opt", str(src), "-p", text, "--target", TARGET, "-o", str(tmp_path / "o")])
    assert out.exit_code == 1
    assert out.stderr.startswith(f"<pipeline>:1:{col}: error: "), out.stderr
    assert needle in out.stderr, out.stderr
    assert not (tmp_path / "o").exists()


NEEDS_TARGET = [
    ("tp-split{units=4},balance,prefetch", 27, "needs a target", "prefetch{budget-gib=N}"),
    ("tp-split,dispatch{rule=eplb}", 1, "needs a target", "tp-split{units=N}"),
    ("stripe,fiddler-profile{calib=x.npz}", 1, "needs a target", "stripe{units=N}"),
    ("stripe{units=2},fiddler-profile{calib=x.npz}", 17, "needs a target", "{budget-gib=N}"),
    ("prefetch{budget-gib=1},balance,tp-split{units=4}", 24, "needs expert shards", "tp-split"),
]


@pytest.mark.parametrize("text,col,need,spare", NEEDS_TARGET, ids=[r[0] for r in NEEDS_TARGET])
def test_pipeline_needs_checked_before_any_pass(text, col, need, spare, tmp_path):
    src = tmp_path / "m.ndpir"
    src.write_bytes(ir_seeds()[0])
    out = run_cli(["opt", str(src), "-p", text, "--print-ir-after-all"])
    assert out.exit_code == 1
    assert out.stderr.startswith(f"<pipeline>:1:{col}: error: "), out.stderr
    assert need in out.stderr and spare in out.stderr
    assert "// IR after" not in out.stderr  # no pass ran


@pytest.mark.parametrize("calib", ["/dev/zero", "fifo", ".", "missing.npz"])
def test_calibration_file_read_within_bounds(calib, tmp_path):
    """fiddler-profile reads only a regular file (a device or FIFO never ends: /dev/zero once grew
    to ~24 GB), and counts a trace chunk by chunk."""
    import os

    if calib == "fifo":
        calib = str(tmp_path / "fifo")
        os.mkfifo(calib)
    src = tmp_path / "m.ndpir"
    src.write_bytes(ir_seeds()[0])
    text = f"stripe,fiddler-profile{{calib={calib}}}"
    out = run_cli(["opt", str(src), "-p", text, "--target", TARGET], timeout=10)
    assert out.exit_code == 1 and out.exception is None
    assert out.stderr.startswith("<pipeline>:1:8: error: fiddler-profile: calib="), out.stderr
