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
