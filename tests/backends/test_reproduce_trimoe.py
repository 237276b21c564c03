"""`ndpc reproduce trimoe`: the systems table, ablation pipelines, ratios and the +-25 % verdict
from hand-made rows, bad options refused, and (slow) a quick run that is deterministic."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ndpc.compiler.cli import main
from ndpc.compiler.experiments import trimoe
from ndpc.compiler.experiments.trimoe import PUBLISHED, Setup, summarise, with_options
from ndpc.compiler.policies import POLICIES


def test_ablation_options_go_on_the_policys_last_pass():
    assert with_options("tp-split{degree=1},trimoe", "cpu=false") == (
        "tp-split{degree=1},trimoe{cpu=false}"
    )
    assert with_options("a,b{x=1}", "y=2 z=3") == "a,b{x=1 y=2 z=3}"
    assert with_options("a,b", "") == "a,b"


def test_systems_without_a_policy_in_this_build_are_listed_not_run():
    have, missing = trimoe.available()
    assert {s.policy for s in have} <= set(POLICIES)
    assert all(s.policy not in POLICIES for s in missing)
    # every baseline the report names exists in this build
    assert {"fiddler", "monde", "monde-lb", "paper", "ndpc"} <= {s.label for s in have}
    extra = trimoe.System("nope", "no-such-policy", "baseline", "a policy not written yet")
    assert extra in trimoe.available((*trimoe.SYSTEMS, extra))[1]


def _row(name, role, tpot, tput, batch=8, model="m"):
    serving = {"tpot_mean_s": tpot, "throughput_tok_s": tput, "makespan_s": 1.0}
    return {"name": name, "role": role, "batch": batch, "model": model, "serving": serving,
            "gpu_busy": 0.5, "cpu_busy": 0.1, "ndp_busy": 0.2, "host_link_bytes": 0.0}  # fmt: skip


def test_ratios_and_verdicts_from_hand_made_rows():
    rows = [
        _row("fiddler", "baseline", 0.30, 20.0),
        _row("monde", "baseline", 0.20, 25.0),  # best baseline on both counts
        _row("paper", "seed", 0.10, 10.0),  # not a TriMoE baseline: never the "best baseline"
        _row("trimoe", "trimoe", 0.08, 60.0),  # 2.5x decode, 2.4x throughput: within
        _row("trimoe-gpu-ndp", "ablation", 0.30, 1.0),
        _row("trimoe+cpu", "ablation", 0.12, 1.0),  # 2.5x: outside 1.75 +- 25 %
        _row("trimoe+refine", "ablation", 0.10, 1.0),  # 1.2x vs 1.28: within
        {"name": "monde-lb", "role": "baseline", "batch": 8, "model": "m", "error": "no fit"},
    ]
    s = summarise(rows, Setup(models=("m",), batches=(8,)))
    (point,) = s["points"]
    assert point["best_baseline_decode"] == "monde" and point["errors"] == {"monde-lb": "no fit"}
    assert point["systems"]["trimoe"]["decode_speedup"] == pytest.approx(2.5)
    assert point["systems"]["paper"]["decode_speedup"] == pytest.approx(2.0)
    got = {c["claim"]: (c["ndpc"]["m"], c["within_25pct"]["m"]) for c in s["claims"]}
    want = {
        PUBLISHED[0][0]: (2.5, True),
        PUBLISHED[1][0]: (2.4, True),
        PUBLISHED[2][0]: (2.5, False),  # 1.75 x 1.25 = 2.19 < 2.5
        PUBLISHED[3][0]: (1.2, True),
        PUBLISHED[4][0]: (1.25, True),  # relayout: 0.10 / 0.08
    }
    for claim, (ratio, within) in want.items():
        assert got[claim][0] == pytest.approx(ratio) and got[claim][1] is within
    # the range's edges: 2.12 x 0.75 = 1.59 is in, 2.83 x 1.25 = 3.54 is in, beyond is out
    for tpot, within in ((0.2 / 1.58, False), (0.2 / 1.60, True), (0.2 / 3.53, True), (0.2 / 3.55, False)):  # fmt: skip
        rows[3] = _row("trimoe", "trimoe", tpot, 60.0)
        claim = summarise(rows, Setup(models=("m",), batches=(8,)))["claims"][0]
        assert claim["within_25pct"]["m"] is within


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "0,4"], "every value must be >= 1"),
        (["--batch", "a"], "comma-separated integers"),
        (["--models", "qwen3-235b"], "did you mean"),
        (["--tokens", "0"], "0 is not in the range"),
    ],
)
def test_bad_options_are_refused_with_one_message(args, message, tmp_path):
    res = CliRunner().invoke(main, ["reproduce", "trimoe", *args, "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "report.md").exists()


@pytest.mark.slow
def test_quick_run_is_deterministic_and_reports_every_claim(tmp_path):
    outs = []
    for name in ("a", "b"):
        res = CliRunner().invoke(
            main, ["reproduce", "trimoe", "--quick", "--out", str(tmp_path / name), "-j", "1"]
        )
        assert res.exit_code == 0, res.output
        outs.append((tmp_path / name / "results.json").read_text())
    assert outs[0] == outs[1].replace(str(tmp_path / "b"), str(tmp_path / "a"))
    doc = json.loads(outs[0])
    assert [c["claim"] for c in doc["summary"]["claims"]] == [p[0] for p in PUBLISHED]
    for p in doc["summary"]["points"]:
        assert {"fiddler", "monde", "paper"} <= set(p["systems"]) and not p["errors"]
        assert p["systems"]["fiddler"]["cpu_busy"] > 0.5  # the CPU tier is busy under Fiddler
    report = (tmp_path / "a" / "report.md").read_text()
    assert "## Published ratios vs ndpc" in report and "| fiddler |" in report


def test_one_token_requests_have_no_decode_ratio():
    rows = [_row("monde", "baseline", 0.0, 25.0), _row("trimoe", "trimoe", 0.0, 50.0)]
    s = summarise(rows, Setup(models=("m",), batches=(8,)))
    assert s["points"][0]["systems"]["trimoe"]["decode_speedup"] is None
    assert s["claims"][0]["ndpc"]["m"] is None and s["claims"][1]["ndpc"]["m"] == 2.0
    assert "| trimoe | - |" in trimoe.markdown(s, Setup(models=("m",), batches=(8,)), "cmd")
