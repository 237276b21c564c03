"""compiler/policies.py: every named policy is a valid pipeline; names and flags are consistent."""

from __future__ import annotations

import pytest

from ndpc.compiler.passes.pipeline import parse_pipeline
from ndpc.compiler.policies import POLICIES, get_policy
from ndpc.ir.diagnostics import NdpcError


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_pipelines_parse(name: str) -> None:
    spec = POLICIES[name]
    assert parse_pipeline(spec.pipeline)
    assert spec.doc.strip()
    assert spec.oracle == name.startswith("oracle-")


def test_the_paper_and_its_ablations() -> None:
    assert POLICIES["paper"].pipeline == "tp-split,balance,prefetch"
    assert POLICIES["tp-lb"].pipeline == "tp-split,balance"
    assert POLICIES["tp"].pipeline == "tp-split"
    with pytest.raises(NdpcError, match="did you mean 'paper'"):
        get_policy("papers")
