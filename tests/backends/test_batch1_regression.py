"""Batch 1, requests one after another: schedules and reports equal those recorded before the
serving restructure (batch1_regression.py says how they were made and when to re-record)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch1_regression import FIXTURE, case_keys, key_of, run_case  # noqa: E402

RECORDED = json.loads(FIXTURE.read_text(encoding="utf-8"))
CASES = list(case_keys())
QUICK = {"mixtral-8x7b/paper/24x2p16", "mixtral-8x7b/lru/24x2p16", "mixtral-8x7b/monde/24x2p16"}


def _check(case, tmp_path):
    key = key_of(*case)
    got = run_case(*case, tmp_path)
    want = RECORDED[key]
    assert {k: got[k] for k in want if k.endswith("_s")} == {
        k: want[k] for k in want if k.endswith("_s")
    }, key
    assert got == want, key


@pytest.mark.parametrize("case", [c for c in CASES if key_of(*c) in QUICK])
def test_batch1_unchanged_quick(case, tmp_path):
    _check(case, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if key_of(*c) not in QUICK])
def test_batch1_unchanged(case, tmp_path):
    _check(case, tmp_path)


def test_fixture_covers_every_case():
    assert sorted(RECORDED) == sorted(key_of(*c) for c in CASES)
