"""The sparse top-k sampler against dense Gumbel-top-k; statistics on hand-made traces; the
1M-token streaming check (slow tier)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ndpc.traces.format import Trace, TraceMeta, TraceWriter, save_trace
from ndpc.traces.generate import iter_generate
from ndpc.traces.sampling import BaseTables, sample_topk
from ndpc.traces.show import compute_stats
from ndpc.traces.stats import stats_memory_bound, trace_stats, uniform_pair_floor

REPO = Path(__file__).resolve().parents[2]


def test_sparse_sampler_matches_dense_gumbel_topk() -> None:
    rng = np.random.default_rng(0)
    E, k, n = 10, 3, 60_000
    q = rng.dirichlet(np.full(E, 0.7), size=2)
    rows = rng.integers(2, size=n)
    ids = np.tile(np.array([[1, 4, 4, 7]]), (n, 1))  # expert 4 twice: the larger bonus counts
    vals = np.array([2.0, 1.5, 1.0, 0.5])
    draw = sample_topk(np.random.default_rng(1), BaseTables.build(q), rows, k, ids, vals)
    bonus = np.zeros(E)
    bonus[[1, 4, 7]] = [2.0, 1.5, 0.5]
    dense = np.log(q[rows]) + bonus + rng.gumbel(size=(n, E))
    want = np.argsort(-dense, axis=1)[:, :k]
    for j in range(k):  # each rank's expert frequencies agree within sampling noise
        a = np.bincount(draw.experts[:, j], minlength=E) / n
        b = np.bincount(want[:, j], minlength=E) / n
        assert np.abs(a - b).max() < 0.01, (j, a, b)
    top = np.take_along_axis(dense, want, axis=1)
    assert np.allclose(draw.scores.mean(axis=0), top.mean(axis=0), atol=0.03)
    dense_w = np.exp(top - top[:, :1])
    assert draw.weights[:, 0].mean() == pytest.approx(
        (dense_w[:, 0] / dense_w.sum(axis=1)).mean(), abs=0.01
    )
    assert (np.sort(draw.experts, axis=1)[:, 1:] != np.sort(draw.experts, axis=1)[:, :-1]).all()


def hand_trace() -> Trace:
    ex = np.array(
        [
            [[0, 1], [2, 3]],
            [[1, 0], [2, 1]],
            [[2, 3], [0, 1]],  # request 1 starts here: no pair with the token before
            [[2, 0], [0, 3]],
        ]
    )
    w = np.full(ex.shape, 0.5, np.float32)
    return Trace(
        TraceMeta("hand", 2, 4, 2),
        ex,
        w,
        np.array([0, 1, 0, 1], np.uint8),
        np.array([0, 0, 1, 1], np.int32),
    )


def test_stats_on_a_hand_computed_trace() -> None:
    t = hand_trace()
    r = trace_stats([t], t.meta, t.tokens)
    l0, l1 = r["layers"]
    assert l0["counts"] == [3, 2, 2, 1] and l1["counts"] == [2, 2, 2, 2]
    assert l0["max_mean"] == pytest.approx(1.5) and l1["max_mean"] == pytest.approx(1.0)
    # pairs (0,1) and (2,3): layer 0 overlaps {0,1}&{1,0} = 2/2, {2,3}&{2,0} = 1/2
    assert l0["overlap"] == pytest.approx(0.75) and l0["top1_repeat"] == pytest.approx(0.5)
    assert l1["overlap"] == pytest.approx((1 / 2 + 1 / 2) / 2) and l1["p_any"] == 1.0
    assert r["requests"] == 2 and r["prefill_tokens"] == 2 and r["decode_tokens"] == 2
    # fit on tokens 0-1: top-1 0 -> next top-1 2, 1 -> 2; score tokens 2-3 (top-1 2, 2: unseen
    # -> static guess 2; true next top-1: 0, 0)
    assert l0["next_top1_acc"] == 0.0 and l1["next_top1_acc"] is None
    assert r["summary"]["overlap"]["noise_floor"] == pytest.approx(0.5)


def test_uniform_pair_floor_is_exact() -> None:
    floor = uniform_pair_floor(8, 2)
    assert floor["p_any"] == pytest.approx(1 - (6 * 5) / (8 * 7))  # C(6,2)/C(8,2)
    assert floor["overlap"] == 0.25 and floor["top1_repeat"] == 0.125


def test_stats_do_not_depend_on_chunking(tmp_path: Path) -> None:
    from ndpc.traces.generate import generate_trace

    t = generate_trace(5, 16, 3, tokens=300, prompt=100, seed=4, requests=3)
    save_trace(t, tmp_path / "t.npz")
    whole = trace_stats([t], t.meta, t.tokens)
    for chunk in (1, 7, 4096):
        assert compute_stats(tmp_path / "t.npz", chunk) == {"file": "t.npz", **whole}


_CHILD = """
import json, sys
sys.path.insert(0, {repo!r})
from ndpc.traces.show import compute_stats
def hwm():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")
before = hwm()
report = compute_stats({path!r}, {chunk})
print(json.dumps({{"work": hwm() - before, "counts": [e["counts"] for e in report["layers"]], "tokens": report["tokens"]}}))
"""


@pytest.mark.slow
def test_million_tokens_stream_within_the_memory_bound(tmp_path: Path) -> None:
    """1M tokens through `trace stats` in a fresh process: peak working set <= the documented bound."""
    L, E, k, chunk = 8, 64, 4, 16384
    path = tmp_path / "big.npz"
    counts = np.zeros((L, E), dtype=np.int64)
    gen = iter_generate(L, E, k, tokens=250_000, prompt=1000, seed=0, requests=4)
    first = next(gen)
    with TraceWriter(path, first.meta) as w:
        for c in [first, *gen]:
            w.write(c)
            for l in range(L):
                counts[l] += np.bincount(c.experts[:, l].ravel(), minlength=E)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(repo=str(REPO), path=str(path), chunk=chunk)],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(out.stdout)
    assert res["tokens"] == 1_000_000
    assert res["counts"] == counts.tolist()
    assert res["work"] <= stats_memory_bound(L, E, k, chunk)
