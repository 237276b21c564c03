"""`ndpc compile` and `ndpc run` end to end on a tiny model (CLI behaviour and errors)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from emit_fixtures import MODEL2, trace_for

from ndpc.backends.schedule import load_schedule
from ndpc.compiler.cli import main
from ndpc.traces.format import save_trace


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "t.npz"
    save_trace(trace_for(2, 8, 2, tokens=48, prompt=16, seed=0), path)
    return path


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_compile_writes_a_schedule_with_its_policy(tmp_path, trace_file) -> None:
    out = tmp_path / "s.ndpsched"
    res = _run("compile", str(MODEL2), "--target", "rtx5080-ndp", "--trace", str(trace_file),
               "--policy", "paper", "-o", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    s = load_schedule(out)
    assert s.meta["policy"] == "paper" and s.meta["prefetcher"] == "dataset-free"
    assert s.meta["pipeline"].startswith("tp-split{")


def test_run_json_and_pipeline_defaults_from_target(trace_file) -> None:
    res = _run("run", str(MODEL2), "--target", "rtx5080-ndp", "--set", "ndp.units=2",
               "--trace", str(trace_file), "-p", "tp-split{degree=2},balance", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["schedule"]["policy"] == "custom"
    assert report["result"]["e2e_s"] > 0 and report["result"]["decode_tokens"] == 32
    assert set(report["result"]["busy"]) >= {"gpu", "ndp0", "ndp1"}


def test_run_prints_a_summary(trace_file) -> None:
    res = _run("run", str(MODEL2), "--target", "rtx5080-ndp", "--trace", str(trace_file),
               "--policy", "tp")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "end to end" in res.output and "policy tp: tp-split{" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "paper", "-p", "tp-split"], "give either --policy or -p/--passes"),
        ([], "give --policy NAME"),
        (["--policy", "papr"], "unknown policy 'papr'; did you mean 'paper'?"),
        (["-p", "tp-split{degree=9}"], "tp-split: degree must be in 1..4, got 9"),
    ],
)
def test_bad_input_is_one_line_and_no_output_file(tmp_path, trace_file, args, message) -> None:
    out = tmp_path / "s.ndpsched"
    res = CliRunner().invoke(main, ["compile", str(MODEL2), "--target", "rtx5080-ndp", "--trace",
                                    str(trace_file), "-o", str(out), *args])  # fmt: skip
    assert res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_missing_trace_file(tmp_path) -> None:
    res = CliRunner().invoke(main, ["run", str(MODEL2), "--target", "rtx5080-ndp", "--trace",
                                    str(tmp_path / "none.npz"), "--policy", "tp"])  # fmt: skip
    assert res.exit_code == 1 and "none.npz" in res.output


def test_run_writes_a_timeline(tmp_path, trace_file) -> None:
    out = tmp_path / "t.json"
    res = _run("run", str(MODEL2), "--target", "rtx5080-ndp", "--trace", str(trace_file),
               "--policy", "paper", "--timeline", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    events = json.loads(out.read_text())["traceEvents"]
    assert any(e.get("ph") == "X" for e in events)
