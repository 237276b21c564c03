"""Chrome-trace timelines and the ndpc target / schedule / simulate commands."""

from __future__ import annotations

import json
from collections import defaultdict

from click.testing import CliRunner
from sim_helpers import checked

from ndpc.backends.schedule import save_schedule
from ndpc.backends.schedule_text import print_schedule
from ndpc.backends.simulator.synthetic import moe_schedule
from ndpc.backends.target import load_target
from ndpc.backends.timeline import build_trace
from ndpc.compiler.cli import main


def small():
    return moe_schedule(layers=2, decode=3, prompt=4, experts=8, k=2)


def test_timeline_tracks_never_partially_overlap_and_flows_pair_up():
    t = load_target("rtx5080-ndp", ["link.pcie.copy_engines=2"])
    s = small()
    r = checked(s, t)
    trace = build_trace(s, r.start, r.end, target_name=t.name)
    events = trace["traceEvents"]
    slices = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    assert sum(len(v) for v in slices.values()) == len(s) - int((s.kind == 6).sum())
    for spans in slices.values():
        spans.sort()
        for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False):
            assert s1 >= e0 - 1e-6
    starts = {e["id"] for e in events if e["ph"] == "s"}
    finishes = {e["id"] for e in events if e["ph"] == "f"}
    assert starts == finishes and starts
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"gpu", "ndp0", "pcie.h2d", "pcie.d2h"} <= names
    capped = build_trace(s, r.start, r.end, max_ops=10, max_flows=3)
    assert capped["otherData"]["ops_shown"] == 10 and capped["otherData"]["flows"] <= 3


def test_simulate_command_json_timeline_check(tmp_path):
    path = tmp_path / "s.ndpsched"
    save_schedule(small(), path)
    tl = tmp_path / "tl.json"
    runner = CliRunner()
    args = [
        "simulate",
        str(path),
        "--target",
        "rtx5080-ndp",
        "--set",
        "ndp.units=4",
        "--json",
        "--check",
        "--timeline",
        str(tl),
    ]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert set(doc) == {
        "schedule",
        "result",
        "check",
        "optimum",
    }  # the shape `run --json` prints too
    assert doc["optimum"] is None  # a bare schedule has no model or trace to bound
    report = doc["result"]
    assert report["e2e_s"] > 0 and 0 < report["efficiency"] <= 1
    assert doc["check"]["ok"] is True and doc["check"]["violations"] == 0
    timeline = tl.read_bytes()
    json.loads(timeline)
    second = runner.invoke(main, args)
    assert second.stdout == first.stdout and tl.read_bytes() == timeline  # deterministic
    text = tmp_path / "s.txt"
    text.write_text(print_schedule(small()))
    again = runner.invoke(main, ["simulate", str(text), "--target", "rtx5080-ndp", "--json"])
    assert again.exit_code == 0
    same = json.loads(again.stdout)
    assert same["check"] is None  # no --check: no verdict
    assert same["result"] == doc["result"] and same["schedule"] == doc["schedule"]


def test_commands_fail_cleanly(tmp_path):
    runner = CliRunner()
    path = tmp_path / "s.ndpsched"
    save_schedule(small(), path)
    out = tmp_path / "never.json"
    bad = runner.invoke(
        main,
        [
            "simulate",
            str(path),
            "--target",
            "rtx5080-ndp",
            "--set",
            "ndp.units=9",
            "--timeline",
            str(out),
        ],
    )
    assert bad.exit_code == 1 and "ndp.units" in bad.output and "Traceback" not in bad.output
    assert not out.exists()
    junk = tmp_path / "junk.ndpsched"
    junk.write_bytes(b"hello")
    bad = runner.invoke(main, ["simulate", str(junk), "--target", "rtx5080-ndp"])
    assert bad.exit_code == 1 and "bad magic" in bad.output
    target = tmp_path / "t.toml"
    target.write_text('name = "x"\n')
    bad = runner.invoke(main, ["target", "check", str(target)])
    assert (
        bad.exit_code == 1
        and "description" in bad.output
        and len(bad.output.strip().splitlines()) == 1
    )


def test_target_and_schedule_listings(tmp_path):
    runner = CliRunner()
    listing = runner.invoke(main, ["target", "list"])
    assert listing.exit_code == 0 and "rtx5080-ndp" in listing.output
    show = runner.invoke(main, ["target", "show", "rtx5080-ndp", "--set", "ndp.units=6"])
    assert "ndp.units" in show.output and "override" in show.output and "ndp5(1)" in show.output
    path = tmp_path / "s.ndpsched"
    save_schedule(small(), path)
    shown = runner.invoke(main, ["schedule", "show", str(path), "--token", "5", "--layer", "1"])
    ops = [line for line in shown.output.splitlines() if line.startswith("%")]
    assert ops and all("token=5 layer=1" in line for line in ops)


def test_simulate_steps_table(tmp_path):
    path = tmp_path / "s.ndpsched"
    save_schedule(small(), path)
    out = CliRunner().invoke(
        main, ["simulate", str(path), "--target", "rtx5080-ndp", "--steps", "2"]
    )
    assert out.exit_code == 0, out.output
    rows = [line.split() for line in out.stdout.splitlines() if line.strip().startswith("0 ")]
    assert [r[1] for r in rows][:2] == ["0", "4"] and rows[0][2] == "prefill"
    assert all(
        r[-1] in ("gpu", "pcie.h2d", "pcie.d2h", "ndp0", "ndp1", "ndp2", "ndp3") for r in rows
    )
