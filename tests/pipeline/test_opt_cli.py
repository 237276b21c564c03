"""`ndpc opt` and `ndpc passes` end to end (click's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ndpc.compiler.cli import main
from ndpc.ir.parser import parse_module
from ndpc.ir.printer import print_module

GOLDEN = Path(__file__).resolve().parents[1] / "filecheck" / "ir"
MODEL = GOLDEN / "model.ndpir"


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def test_opt_prints_the_canonical_text():
    result = run("opt", str(MODEL))
    assert result.exit_code == 0, result.output
    assert result.stdout == print_module(parse_module(MODEL.read_text()))


def test_opt_reads_stdin_and_writes_a_file(tmp_path):
    out = tmp_path / "out.ndpir"
    result = run(
        "opt", "-", "-p", "strip-locations,canonicalize", "-o", str(out), input=MODEL.read_text()
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert 'loc("' not in out.read_text()
    parse_module(out.read_text())


def test_bad_ir_is_one_message_exit_1_and_no_output_file(tmp_path):
    bad = tmp_path / "bad.ndpir"
    bad.write_text(MODEL.read_text().replace("moe.add(%h, %a0)", "moe.add(%h %a0)"))
    out = tmp_path / "out.ndpir"
    result = run("opt", str(bad), "-o", str(out))
    assert result.exit_code == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{bad}:") and ": error: unexpected '%a0'" in first
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_bad_pipeline_exit_1_with_column():
    result = run("opt", str(MODEL), "-p", "canonicalize,strip-location")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "<pipeline>:1:14: error: unknown pass 'strip-location'; did you mean 'strip-locations'?"
    )


def test_usage_errors_exit_2():
    assert run("opt", str(MODEL), "--no-such-flag").exit_code == 2


def test_missing_input_file_exit_1():
    result = run("opt", "/nonexistent/x.ndpir")
    assert result.exit_code == 1
    assert result.stderr.startswith("/nonexistent/x.ndpir: error: cannot read IR file: ")


def test_set_without_target_is_an_error():
    result = run("opt", str(MODEL), "--set", "ndp_units=4")
    assert result.exit_code == 1 and "--set needs --target" in result.stderr


def test_print_ir_after_all_and_time_passes_go_to_stderr():
    result = run(
        "opt",
        str(MODEL),
        "-p",
        "canonicalize,strip-locations",
        "--print-ir-after-all",
        "--time-passes",
    )
    assert result.exit_code == 0, result.output
    chunks = result.stderr.split("// -----\n")[1:]
    assert [c.splitlines()[0] for c in chunks[:2]] == [
        "// IR after canonicalize",
        "// IR after strip-locations",
    ]
    parse_module(chunks[0])
    timing = chunks[1].split("// time-passes:")[1]
    assert "canonicalize" in timing and "parse + verify" in timing and "print" in timing


def test_verify_diagnostics_prints_the_error_and_exits_0(tmp_path):
    bad = tmp_path / "bad.ndpir"
    bad.write_text(
        MODEL.read_text().replace("heads = 4, kv_heads = 2", "heads = 5, kv_heads = 2", 1)
    )
    result = run("opt", str(bad), "--verify-diagnostics")
    assert result.exit_code == 0
    assert "error: 'moe.attention' op heads (5) must be a multiple of kv_heads (2)" in result.stdout
    assert run("opt", str(MODEL), "--verify-diagnostics").exit_code == 1


def test_passes_lists_every_pass_text_and_json():
    text = run("passes")
    assert text.exit_code == 0
    assert "canonicalize: Remove unused ops" in text.stdout
    entries = json.loads(run("passes", "--json").stdout)
    assert {e["name"] for e in entries} >= {"canonicalize", "strip-locations"}
    assert all(e["summary"] for e in entries)


def test_a_dump_feeds_back_through_split_input_file(tmp_path):
    dumped = run("opt", str(MODEL), "-p", "canonicalize,strip-locations", "--print-ir-after-all")
    dump = tmp_path / "dump.ndpir"
    dump.write_text(dumped.stderr)
    result = run("opt", str(dump), "--split-input-file")
    assert result.exit_code == 0, result.output
    chunks = result.stdout.split("// -----\n")
    assert len(chunks) == 2
    assert chunks[1] == dumped.stdout  # the last dump is the final output


def test_target_is_loaded_and_bad_targets_are_one_message():
    ok = run(
        "opt", str(MODEL), "-p", "canonicalize", "--target", "rtx5080-ndp", "--set", "ndp.units=3"
    )
    assert ok.exit_code == 0, ok.output
    bad = run("opt", str(MODEL), "--target", "no-such-target")
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert len(bad.stderr.strip().splitlines()) <= 3, bad.stderr
