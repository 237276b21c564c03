"""Fuzzing the IR text reader (`.ndpir`): mutated seeds through `ndpc opt FILE -o OUT` and through
`ndpc run FILE --target ... --trace ...`. Every input either succeeds (and `run`'s report is
strict JSON) or ends in one message naming the file, a non-zero exit, no traceback, no output."""

from __future__ import annotations

import re

import pytest
from harness import check_outcome, count, mutations, run_cli
from text_seeds import RUN_POLICIES, TARGET, assert_strict_json, ir_seeds, write_trace


def _fuzz_opt(tmp_path, n: int, seed: int) -> None:
    src, outdir = tmp_path / "m.ndpir", tmp_path / "out"
    outdir.mkdir()
    for case, data in mutations(list(ir_seeds()), n, seed):
        src.write_bytes(data)
        out = run_cli(["opt", str(src), "-o", str(outdir / "o.ndpir")])
        check_outcome(out, [str(src)], outdir, f"opt case {case}")
        if out.exit_code == 0:
            (outdir / "o.ndpir").unlink()


def _fuzz_run(tmp_path, n: int, seed: int) -> None:
    src, outdir = tmp_path / "m.ndpir", tmp_path / "out"
    outdir.mkdir()
    trace = write_trace(tmp_path / "t.npz")
    # only the imported model: `run` compiles it itself (the others already carry passes)
    for case, data in mutations(list(ir_seeds()[:1]), n, seed):
        src.write_bytes(data)
        policy = RUN_POLICIES[case % len(RUN_POLICIES)]
        args = ["run", str(src), "--target", TARGET, "--trace", str(trace), "--policy", policy,
                "--json", "-o", str(outdir / "s.sched")]  # fmt: skip
        out = run_cli(args)
        # a model that no longer matches the trace is refused naming the trace
        check_outcome(out, [str(src), str(trace)], outdir, f"run case {case}")
        if out.exit_code == 0:
            assert_strict_json(out.stdout, f"run case {case}")
            (outdir / "s.sched").unlink()


def test_fuzz_ir_opt_quick(tmp_path):
    _fuzz_opt(tmp_path, count(slow=False), seed=1)


def test_fuzz_ir_run_quick(tmp_path):
    _fuzz_run(tmp_path, count(slow=False) // 2, seed=2)


@pytest.mark.slow
def test_fuzz_ir_opt_slow(tmp_path):
    _fuzz_opt(tmp_path, count(slow=True), seed=101)


@pytest.mark.slow
def test_fuzz_ir_run_slow(tmp_path):
    _fuzz_run(tmp_path, count(slow=True), seed=102)


# --- targeted cases: values that parse but mean nothing must be refused, by opt AND by run -------

HEADS = "heads = 4, kv_heads = 2"
REFUSED = [
    ("heads not a multiple of kv_heads", HEADS, "heads = 3, kv_heads = 2", "multiple of kv_heads"),
    ("heads beyond int64", HEADS, "heads = 9223372036854775808, kv_heads = 2", "heads"),
    ("zero kv_heads", HEADS, "heads = 4, kv_heads = 0", "kv_heads"),
    ("negative heads", HEADS, "heads = -4, kv_heads = 2", "heads"),
    ("zero d_model", "d_model = 64, d_ff = 32", "d_model = 0, d_ff = 32", "d_model"),
    ("zero experts", "experts = 8, router", "experts = 0, router", "experts"),
    ("huge vocab", "vocab = 256", "vocab = 18446744073709551616", "vocab"),
    ("k above experts", "k = 2, renormalize", "k = 9, renormalize", "k"),
]


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize("what,old,new,needle", REFUSED, ids=[r[0] for r in REFUSED])
def test_meaningless_values_refused(tmp_path, what, old, new, needle):
    src = tmp_path / "m.ndpir"
    src.write_text(_edit(ir_seeds()[0].decode(), old, new))
    trace = write_trace(tmp_path / "t.npz")
    for args in (["opt", str(src)],
                 ["run", str(src), "--target", TARGET, "--trace", str(trace), "--policy", "tp"],
                 ["compile", str(src), "--target", TARGET, "--trace", str(trace), "--policy", "tp",
                  "-o", str(tmp_path / "out" / "s.sched")]):  # fmt: skip
        out = run_cli(args)
        assert out.exit_code == 1, f"{what}: {args[0]} accepted it:\n{out.stdout[-500:]}"
        check_outcome(out, [str(src)], None, f"{what} ({args[0]})")
        assert re.search(rf"{re.escape(str(src))}:\d+:\d+: error: ", out.stderr), out.stderr
        assert needle in out.stderr
        # the input's own fault, reported as such (not as a pass producing invalid IR)
        assert "produced invalid IR" not in out.stderr, out.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_out_of_range_resident_expert_refused(tmp_path):
    text = (
        ir_seeds()[0]
        .decode()
        .replace(
            "moe.module @tiny_mixtral {",
            "moe.module @tiny_mixtral {\n  moe.resident {layer = 0, experts = [1, 8]}",
            1,
        )
    )
    src = tmp_path / "m.ndpir"
    src.write_text(text)
    out = run_cli(["opt", str(src)])
    assert out.exit_code == 1 and "0..7" in out.stderr, out.stderr
