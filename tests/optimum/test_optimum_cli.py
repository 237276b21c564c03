"""The bound in `ndpc compare` and `ndpc run` (CliRunner): one value per problem, a gap per row."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ndpc.compiler.cli import main
from ndpc.compiler.experiments.workload import generate_pair


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return str(generate_pair("deepseek-v2-lite", 4, 4, 1, tmp_path_factory.mktemp("opt"))[0])


def test_compare_json_same_bound_for_every_policy(trace):
    args = ["compare", "deepseek-v2-lite", "--target", "rtx5080-ndp", "--trace", trace,
            "--policies", "monde,ndpc,oracle-opt", "--json", "-j", "1"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["policies"]
    bounds = {row["optimum_bound_s"] for row in rows}
    assert len(bounds) == 1
    bound = bounds.pop()
    for row in rows:
        assert row["e2e_s"] >= bound
        assert row["gap_to_optimum"] == pytest.approx(row["e2e_s"] / bound, rel=1e-12)
        assert row["ttft_s"] >= row["optimum_ttft_s"]
        assert row["optimum_ttft_s"] + row["optimum_decode_s"] == pytest.approx(bound, rel=1e-12)
    assert rows[2]["oracle"] is True


def test_compare_table_names_both_bounds(trace):
    args = ["compare", "deepseek-v2-lite", "--target", "rtx5080-ndp", "--trace", trace,
            "--policies", "paper", "-j", "1"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "packing eff" in result.output and "gap to opt" in result.output


def test_run_text_has_the_optimum(trace):
    args = ["run", "deepseek-v2-lite", "--target", "rtx5080-ndp", "--trace", trace,
            "--policy", "paper"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "optimum (any schedule)" in x)
    assert "gap to it" in line and "docs/optimum.md" in line


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """3 requests arriving while others run (a serving trace) and 1 request alone."""
    d = tmp_path_factory.mktemp("serve")
    out = {}
    for name, n in (("three", 3), ("one", 1)):
        path = str(d / f"{name}.npz")
        rate = ["--arrival-rate", "2000"] if n > 1 else []  # one: a batch-1 trace
        args = ["trace", "gen", "--model", "deepseek-v2-lite", "--requests", str(n), *rate,
                "--prompt", "4", "--tokens", "7", "--seed", "1", "-o", path]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        out[name] = path
    return out


def test_run_json_has_the_serving_bound(served):
    args = ["run", "deepseek-v2-lite", "--target", "rtx5080-ndp", "--trace", served["three"],
            "--policy", "paper", "--max-batch", "2", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    opt = doc["optimum"]
    assert opt["optimum_batching"] == "as-run"
    assert doc["makespan_s"] >= opt["optimum_bound_s"] > 0
    assert doc["e2e_mean_s"] >= opt["optimum_e2e_mean_s"] > 0
    assert doc["ttft_mean_s"] >= opt["optimum_ttft_mean_s"] > 0
    assert opt["gap_to_optimum"] == pytest.approx(doc["makespan_s"] / opt["optimum_bound_s"])
    assert opt["optimum_throughput_tok_s"] >= doc["throughput_tok_s"]
    text = CliRunner().invoke(main, args[:-1])
    assert "optimum (any schedule of these iterations)" in text.output


def test_one_request_at_batch_1_serving_gives_the_batch_1_bound(served):
    base = ["run", "deepseek-v2-lite", "--target", "rtx5080-ndp", "--trace", served["one"],
            "--policy", "ndpc", "--json"]  # fmt: skip
    served1 = CliRunner().invoke(main, [*base, "--max-batch", "1"])
    batch1 = CliRunner().invoke(main, base)
    assert served1.exit_code == 0 and batch1.exit_code == 0, served1.output + batch1.output
    a, b = json.loads(served1.stdout), json.loads(batch1.stdout)
    assert "makespan_s" in a and "makespan_s" not in b  # the serving loop, then batch 1
    assert a["optimum"]["optimum_bound_s"] == b["optimum"]["optimum_bound_s"]
    assert a["optimum"]["optimum_cold_start_s"] == b["optimum"]["optimum_cold_start_s"]


def test_compare_serving_table_has_the_gap(served):
    args = ["compare", "deepseek-v2-lite", "--target", "rtx5080-ndp", "--trace", served["three"],
            "--policies", "monde,oracle-cache", "--max-batch", "2", "-j", "1"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    head = next(x for x in result.output.splitlines() if "TTFT p50" in x)
    assert "bound" in head and "gap to opt" in head
