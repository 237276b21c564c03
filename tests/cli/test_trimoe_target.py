"""TriMoE's machine (trimoe-h100-spr: H100 + AMX Xeon + 16 DIMM-NDPs) and its three zoo models
run end to end at batch 1 on a short `ndpc trace gen` trace: emitter, policies, the optimum LP
and the simulator at 16 NDP units, the host CPU busy under Fiddler."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ndpc.compiler.cli import main

TARGET = "trimoe-h100-spr"
MODELS = ["qwen3-235b-a22b", "glm-4.5-air", "deepseek-v2"]
FIDDLER = "stripe,fiddler-profile{{calib={calib}}},dispatch{{rule=fiddler}}"


def _ok(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _traces(model: str, tmp_path) -> tuple[str, str]:
    """A 1+2-token evaluation trace and a calibration trace of another seed."""
    trace, calib = str(tmp_path / "t.npz"), str(tmp_path / "c.npz")
    _ok(
        "trace",
        "gen",
        "--model",
        model,
        "--tokens",
        "3",
        "--prompt",
        "1",
        "--seed",
        "0",
        "-o",
        trace,
    )
    _ok("trace", "gen", "--model", model, "--tokens", "16", "--prompt", "8", "--seed", "1", "-o", calib)  # fmt: skip
    return trace, calib


def _run(model: str, trace: str, policy: str, calib: str) -> dict:
    how = ["-p", FIDDLER.format(calib=calib)] if policy == "fiddler" else ["--policy", policy]
    out = _ok("run", model, "--target", TARGET, "--trace", trace, *how, "--json")
    result = json.loads(out)["result"]
    assert result["decode_tokens"] == 2 and 0 < result["bound_s"] <= result["e2e_s"]
    assert len([r for r in result["busy"] if r.startswith("ndp") and r != "ndplink"]) == 16
    return result


def test_glm_runs_on_the_trimoe_machine_with_the_cpu_busy_under_fiddler(tmp_path):
    trace, calib = _traces("glm-4.5-air", tmp_path)
    result = _run("glm-4.5-air", trace, "fiddler", calib)
    assert result["busy"]["cpu"] > 0.1  # cold experts computed on the AMX host


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_every_trimoe_model_runs_with_paper_monde_and_fiddler(model, tmp_path):
    trace, calib = _traces(model, tmp_path)
    for policy in ("paper", "monde", "fiddler"):
        result = _run(model, trace, policy, calib)
        if policy == "monde":  # EP over the 16 units: every unit holds experts and computes
            assert sum(result["busy"][f"ndp{i}"] > 0 for i in range(16)) >= 8
