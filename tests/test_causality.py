"""Causality: a schedule's ops up to step t never depend on the trace after step t.

For every online policy (all non-oracle entries of `ndpc.compiler.policies.POLICIES`) the trace is
changed after token t (different experts and weights), the schedule is emitted again, and every
op tagged with a token <= t (columns and dependencies) must be identical. Oracle policies are
expected to differ: they look ahead by design (checked so this test can fail).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "backends"))
from emit_fixtures import compile_and_emit, qwen_like, trace_for  # noqa: E402

from ndpc.compiler.policies import POLICIES  # noqa: E402
from ndpc.traces.format import save_trace  # noqa: E402

PROMPT, TOKENS = 24, 56
# A small GPU, so expert memory is scarce (~21 of the 64 experts fit) and residency choices matter.
SMALL_GPU = ("gpu.memory_gib=1.0",)
ONLINE = sorted(name for name, spec in POLICIES.items() if not spec.oracle)
ORACLES = sorted(name for name, spec in POLICIES.items() if spec.oracle)


def _perturbed(trace, after: int, seed: int):
    """`trace` with every token > `after` routed to other experts (same shapes and phases)."""
    rng = np.random.default_rng(seed)
    experts = trace.experts.copy()
    weights = trace.weights.copy()
    n_experts = trace.meta.experts
    for t in range(after + 1, len(experts)):
        for layer in range(experts.shape[1]):
            pick = rng.choice(n_experts, size=experts.shape[2], replace=False)
            experts[t, layer] = pick
            weights[t, layer] = np.sort(rng.random(len(pick)).astype(np.float32))[::-1]
    return dataclasses.replace(trace, experts=experts, weights=weights)


def _pipeline(policy: str, trace, calib: Path, tmp: Path) -> str:
    """The policy's pipeline with its calibration input filled in: an offline profile (another
    trace, `calib`) for fiddler-style passes, the evaluated trace itself for `@trace` (oracles)."""
    text = POLICIES[policy].pipeline
    if "calib=@trace" in text:
        path = tmp / f"evaluated-{id(trace)}.npz"
        save_trace(trace, path)
        return text.replace("calib=@trace", f"calib={path}")
    return text.replace("fiddler-profile,", f"fiddler-profile{{calib={calib}}},")


def _prefix_len(schedule, last_token: int) -> int:
    """Number of leading ops tagged with a token <= last_token (ops are emitted step by step)."""
    later = np.flatnonzero(schedule.token > last_token)
    return int(later[0]) if len(later) else len(schedule)


def _same_prefix(a, b, n: int) -> list[str]:
    """Columns (and the dependency lists) that differ within the first n ops."""
    diffs = [name for name in ("kind", "resource", "flops", "mem_bytes", "link_bytes", "token",
                               "layer", "expert", "shard", "unit", "reason")
             if not np.array_equal(getattr(a, name)[:n], getattr(b, name)[:n])]  # fmt: skip
    if not np.array_equal(a.dep_ptr[: n + 1], b.dep_ptr[: n + 1]):
        diffs.append("dep_ptr")
    elif not np.array_equal(a.dep_idx[: a.dep_ptr[n]], b.dep_idx[: b.dep_ptr[n]]):
        diffs.append("dep_idx")
    return diffs


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    module = qwen_like(layers=2, experts=32)
    tmp = tmp_path_factory.mktemp("causality")
    calib = tmp / "calib.npz"  # an offline profile from another run (not the evaluated trace)
    save_trace(trace_for(2, 32, 8, tokens=64, prompt=32, seed=99), calib)
    return module, trace_for(2, 32, 8, tokens=TOKENS, prompt=PROMPT, seed=6), calib, tmp


@pytest.mark.parametrize("policy", ONLINE)
@pytest.mark.parametrize("t", [PROMPT - 1, PROMPT + 9])
def test_online_policies_ignore_the_future(base, policy: str, t: int) -> None:
    module, trace, calib, tmp = base
    changed = _perturbed(trace, t, seed=t)
    a, _ = compile_and_emit(module, _pipeline(policy, trace, calib, tmp), trace, SMALL_GPU)
    b, _ = compile_and_emit(module, _pipeline(policy, changed, calib, tmp), changed, SMALL_GPU)
    n = _prefix_len(a, t)
    assert n == _prefix_len(b, t) and n > 0
    assert not _same_prefix(a, b, n), f"{policy}: steps <= {t} changed with the future"
    # and the change is visible after t (otherwise this test could not fail)
    assert _same_prefix(a, b, len(a)) or len(a) != len(b)


@pytest.mark.parametrize("policy", ORACLES)
def test_oracles_do_look_ahead(base, policy: str) -> None:
    module, trace, calib, tmp = base
    t = PROMPT + 9
    changed = _perturbed(trace, t, seed=1)
    a, _ = compile_and_emit(module, _pipeline(policy, trace, calib, tmp), trace, SMALL_GPU)
    b, _ = compile_and_emit(module, _pipeline(policy, changed, calib, tmp), changed, SMALL_GPU)
    n = min(_prefix_len(a, t), _prefix_len(b, t))
    assert _same_prefix(a, b, n) or _prefix_len(a, t) != _prefix_len(b, t)
