"""Energy figures are present for every policy (`ndpc compare --json` over all of them)."""

from __future__ import annotations

import json
from pathlib import Path

from harness import run_cli

from ndpc.compiler.policies import POLICIES


def test_every_policy_reports_energy(tmp_path: Path):
    trace = tmp_path / "t.npz"
    res = run_cli(["trace", "gen", "--model", "tiny-mixtral", "--tokens", "8", "--prompt", "4",
                   "--seed", "0", "-o", str(trace)])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    res = run_cli(["compare", "tiny-mixtral", "--target", "rtx5080-ndp", "--trace", str(trace),
                   "--policies", ",".join(POLICIES), "--json", "-j", "1", "--no-progress"], 120)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    rows = json.loads(res.stdout)["policies"]
    assert {r["policy"] for r in rows} == set(POLICIES)
    for r in rows:
        assert "error" not in r, r
        assert r["energy_j"] > 0 and r["energy_per_token_j"] == r["energy_j"] / 4, r["policy"]
        assert r["tokens_per_j"] == 4 / r["energy_j"], r["policy"]
