"""All outputs of one command appear together or not at all; a closed stdout ends quietly;
timelines say when they are truncated and count their ops so the numbers add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from emit_fixtures import MODEL2, trace_for
from sim_helpers import checked

from ndpc.backends.schedule import save_schedule
from ndpc.backends.schedule_text import parse_schedule, print_schedule
from ndpc.backends.simulator.synthetic import moe_schedule
from ndpc.backends.target import load_target
from ndpc.backends.timeline import _GROUPS, build_trace
from ndpc.compiler.cli import EXIT_BROKEN_PIPE, main
from ndpc.compiler.cliutil import output_files
from ndpc.traces.format import save_trace

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("out") / "t.npz"
    save_trace(trace_for(2, 8, 2, tokens=48, prompt=16, seed=0), path)
    return path


@pytest.fixture(scope="module")
def schedule_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sched") / "s.ndpsched"
    save_schedule(moe_schedule(layers=2, decode=3, prompt=4, experts=8, k=2), path)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ------------------------------------------------------------------------------------ transaction


def test_outputs_commit_together(tmp_path):
    with output_files() as out:
        a, b = out.path(tmp_path / "a.txt"), out.path(tmp_path / "new" / "deep" / "b.txt")
        a.write_text("A")
        b.write_text("B")
        assert not (tmp_path / "a.txt").exists()  # nothing visible before the commit
    assert (tmp_path / "a.txt").read_text() == "A" and (
        tmp_path / "new/deep/b.txt"
    ).read_text() == "B"
    assert _files(tmp_path) == ["a.txt", "new", "new/deep", "new/deep/b.txt"]


def test_a_failure_leaves_nothing_not_even_created_folders(tmp_path):
    (tmp_path / "old.txt").write_text("keep")
    with pytest.raises(RuntimeError), output_files() as out:
        out.path(tmp_path / "a.txt").write_text("A")
        out.path(tmp_path / "new" / "deep" / "b.txt").write_text("B")
        (out.folder(tmp_path / "report") / "plot.png").write_bytes(b"png")
        raise RuntimeError("the second output failed")
    assert _files(tmp_path) == ["old.txt"]


def test_staged_folder_moves_its_files_at_commit(tmp_path):
    with output_files() as out:
        stage = out.folder(tmp_path / "rep")
        (stage / "x.png").write_bytes(b"1")
        (stage / "report.md").write_text("r")
        assert _files(tmp_path / "rep") == [
            stage.name,
            f"{stage.name}/report.md",
            f"{stage.name}/x.png",
        ]
    assert _files(tmp_path / "rep") == ["report.md", "x.png"]


def test_dropped_output_is_not_written(tmp_path):
    with output_files() as out:
        keep, drop = out.path(tmp_path / "keep"), out.path(tmp_path / "drop")
        keep.write_text("k")
        out.drop(drop)
    assert _files(tmp_path) == ["keep"]


def test_simulate_report_and_timeline_commit_together(tmp_path, schedule_file):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    report = tmp_path / "r.json"
    bad = CliRunner().invoke(main, ["simulate", str(schedule_file), "--target", "rtx5080-ndp",
                                    "-o", str(report), "--timeline", str(tmp_path / "blocker" / "tl.json")])  # fmt: skip
    assert (
        bad.exit_code == 1
        and "Traceback" not in bad.output
        and "blocker is not a folder" in bad.output
    )
    assert _files(tmp_path) == ["blocker"]  # no r.json left behind
    # a folder that does not exist yet is created, and both files appear
    good = CliRunner().invoke(main, ["simulate", str(schedule_file), "--target", "rtx5080-ndp",
                                     "-o", str(report), "--timeline", str(tmp_path / "new" / "tl.json")])  # fmt: skip
    assert good.exit_code == 0, good.output
    assert _files(tmp_path) == ["blocker", "new", "new/tl.json", "r.json"]


def test_simulate_bad_target_leaves_no_output_and_no_folder(tmp_path, schedule_file):
    bad = CliRunner().invoke(main, ["simulate", str(schedule_file), "--target", "rtx5080-ndp",
                                    "--set", "ndp.units=99", "-o", str(tmp_path / "a" / "r.json"),
                                    "--timeline", str(tmp_path / "b" / "tl.json")])  # fmt: skip
    assert bad.exit_code == 1 and "ndp.units" in bad.output
    assert _files(tmp_path) == []


def test_run_schedule_and_timeline_commit_together(tmp_path, trace_file):
    (tmp_path / "blocker").write_text("")
    base = ["run", str(MODEL2), "--target", "rtx5080-ndp", "--trace", str(trace_file),
            "--policy", "tp", "-o", str(tmp_path / "s.ndpsched")]  # fmt: skip
    bad = CliRunner().invoke(main, [*base, "--timeline", str(tmp_path / "blocker" / "tl.json")])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert _files(tmp_path) == ["blocker"]
    bad = CliRunner().invoke(
        main, [*base, "--timeline", str(tmp_path / "tl.json"), "--set", "ndp.units=99"]
    )
    assert bad.exit_code == 1 and _files(tmp_path) == ["blocker"]
    good = CliRunner().invoke(main, [*base, "--timeline", str(tmp_path / "tl.json")])
    assert good.exit_code == 0, good.output
    assert _files(tmp_path) == ["blocker", "s.ndpsched", "tl.json"]


def test_compare_outputs_commit_together(tmp_path, trace_file):
    (tmp_path / "blocker").write_text("")
    args = ["compare", str(MODEL2), "--target", "rtx5080-ndp", "--trace", str(trace_file),
            "--policies", "monde,tp", "-j", "1", "--timeline-dir", str(tmp_path / "tl"),
            "--csv", str(tmp_path / "c.csv")]  # fmt: skip
    bad = CliRunner().invoke(main, [*args, "--plot", str(tmp_path / "blocker" / "p.png")])
    assert bad.exit_code == 1 and _files(tmp_path) == ["blocker"]
    good = CliRunner().invoke(main, [*args, "--plot", str(tmp_path / "p.png")])
    assert good.exit_code == 0, good.output
    assert _files(tmp_path) == ["blocker", "c.csv", "p.png", "tl", "tl/monde.json", "tl/tp.json"]


# ------------------------------------------------------------------------------------ closed pipe


@pytest.mark.parametrize("args", [["model", "list", "--all"], ["passes"]])
def test_closed_stdout_ends_quietly(args):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write (`... | head -0`)
    try:
        proc = subprocess.run([sys.executable, "-m", "ndpc.compiler.cli", *args], stdout=write,
                              stderr=subprocess.PIPE, cwd=REPO, check=False, timeout=60)  # fmt: skip
    finally:
        os.close(write)
    assert proc.stderr == b""  # no traceback, no "error: [Errno 32] Broken pipe"
    assert proc.returncode == EXIT_BROKEN_PIPE


# ------------------------------------------------------------------------------------ timelines


def test_timeline_counts_add_up_and_truncation_is_said(tmp_path, schedule_file):
    t = load_target("rtx5080-ndp")
    base = moe_schedule(layers=2, decode=3, prompt=4, experts=8, k=2)
    n = len(base)  # plus one SYNC (an eviction): never drawn, but counted
    s = parse_schedule(
        print_schedule(base) + f"%{n} = sync @gpu deps=%{n - 1} layer=0 expert=0 reason=evict\n"
    )
    r = checked(s, t)
    for cap in (10, len(s)):
        info = build_trace(s, r.start, r.end, max_ops=cap)["otherData"]
        assert info["ops_shown"] + info["ops_left_out"] + info["ops_sync"] == info["ops"] == len(s)
        assert info["ops_sync"] == 1
    assert build_trace(s, r.start, r.end, max_ops=10)["otherData"]["ops_shown"] == 10
    assert build_trace(s, r.start, r.end, max_ops=len(s))["otherData"]["ops_left_out"] == 0
    res = CliRunner().invoke(main, ["simulate", str(schedule_file), "--target", "rtx5080-ndp",
                                    "--timeline", str(tmp_path / "t.json"), "--timeline-ops", "10"])  # fmt: skip
    assert res.exit_code == 0
    assert (
        "timeline" in res.stderr and "first 10 of" in res.stderr and "--timeline-ops" in res.stderr
    )
    full = CliRunner().invoke(main, ["simulate", str(schedule_file), "--target", "rtx5080-ndp",
                                     "--timeline", str(tmp_path / "t.json")])  # fmt: skip
    assert "left out" not in full.stderr


def test_run_timeline_ops_and_ndplink_process(tmp_path, trace_file):
    out = tmp_path / "t.json"
    res = CliRunner().invoke(main, ["run", str(MODEL2), "--target", "rtx5080-ndp", "--trace",
                                    str(trace_file), "-p", "tp-split{degree=4},balance",
                                    "--timeline", str(out), "--timeline-ops", "50"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "first 50 of" in res.stderr
    trace = json.loads(out.read_text())
    assert trace["otherData"]["ops_shown"] == 50
    names = {
        e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"
    }
    tracks = {
        e["args"]["name"]: e["pid"] for e in trace["traceEvents"] if e.get("name") == "thread_name"
    }
    full = CliRunner().invoke(main, ["run", str(MODEL2), "--target", "rtx5080-ndp", "--trace",
                                     str(trace_file), "-p", "tp-split{degree=4},balance",
                                     "--timeline", str(out)])  # fmt: skip
    assert full.exit_code == 0 and "left out" not in full.stderr
    trace = json.loads(out.read_text())
    tracks = {
        e["args"]["name"]: e["pid"] for e in trace["traceEvents"] if e.get("name") == "thread_name"
    }
    assert "ndplink" in tracks, sorted(tracks)
    assert names[tracks["ndplink"]] == "NDP link"
    assert names[tracks["ndp0"]] == "NDP units"
    assert [title for _, title in _GROUPS].index("NDP link") + 1 == tracks["ndplink"]
