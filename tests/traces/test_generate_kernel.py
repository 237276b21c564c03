"""The generator's compiled sampling kernel: same draws as the numpy reference sampler, no NaN."""

from __future__ import annotations

import numpy as np
import pytest

from ndpc.traces.generate import (
    PRESETS,
    _bonus_columns,
    _guide,
    _sample,
    _world,
    generate_trace,
    with_overrides,
)
from ndpc.traces.generate_kernel import topk_kernel
from ndpc.traces.sampling import sample_topk
from ndpc.traces.validate import check_trace


def _reference_ids(anchors, prev, trans, k, p, w, l):
    """Bonus ids/values as the numpy sampler takes them (the pre-kernel `_bonuses`)."""
    ids, vals = [anchors], [np.full(anchors.shape[1], w.local_bonus[l], dtype=np.float64)]
    favoured = trans[prev]
    ids.append(favoured.reshape(len(prev), -1))
    vals.append(np.repeat(w.affinity[l] * p.affinity_decay ** np.arange(k, dtype=float), 3))
    all_vals = np.concatenate(vals)
    order = np.argsort(-all_vals, kind="stable")
    return np.concatenate(ids, axis=1)[:, order], all_vals[order]


@pytest.mark.parametrize("renormalize, temperature", [(True, 1.0), (True, 1.3), (False, 1.8)])
@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_draws_what_the_numpy_sampler_draws(renormalize, temperature, seed) -> None:
    """Same random stream -> the same experts and (to float rounding) the same weights."""
    L, E, k, n, l = 4, 64, 6, 3000, 2
    p = with_overrides(
        PRESETS["fine"],
        fanout=0.5,  # 3 favoured experts per choice
        local_bonus=(0.0, 2.0, 0.5),
        temperature=temperature,
        renormalize=renormalize,
    )
    w = _world(p, L, E, k, 1, seed)
    gen = np.random.default_rng(seed + 10)
    rows = gen.integers(len(w.tables.q), size=n)
    anchors = gen.integers(E, size=(n, 5))  # repeated ids within a row are allowed
    prev = np.stack([gen.permutation(E)[:k] for _ in range(n)])
    trans = w.transitions[l - 1]
    assert trans.shape[1] == 3
    ids, vals = _reference_ids(anchors, prev, trans, k, p, w, l)
    ref = sample_topk(np.random.default_rng(seed), w.tables, rows, k, ids, vals, renormalize)
    cols = _bonus_columns(p, w, l, anchors, prev, k)
    experts, weights = _sample(np.random.default_rng(seed), w, rows, k, renormalize, *cols)
    assert np.array_equal(experts, ref.experts)
    np.testing.assert_allclose(weights, ref.weights, rtol=1e-5, atol=1e-7)
    # without bonuses (the anchors' draw)
    ref0 = sample_topk(np.random.default_rng(seed), w.tables, rows, k)
    e0, w0 = _sample(np.random.default_rng(seed), w, rows, k, True)
    assert np.array_equal(e0, ref0.experts)
    np.testing.assert_allclose(w0, ref0.weights, rtol=1e-5, atol=1e-7)


def test_guide_table_agrees_with_binary_search() -> None:
    w = _world(PRESETS["fine"], 6, 128, 8, 1, 3)  # skewed popularity: long buckets
    guide, cdf = _guide(w.tables), w.tables.cdf_flat
    R, E = w.tables.q.shape
    u = np.random.default_rng(0).random((R, 200))
    for r in range(R):
        want = np.minimum(np.searchsorted(cdf, r + u[r], side="right") - r * E, E - 1)
        start = guide[r, np.maximum((u[r] * E).astype(int) - 1, 0)]
        assert np.all(start <= want)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_reported_nan_case_is_finite(preset: str) -> None:
    """Regression: generate_trace(2, 32, 8, 56, 24, seed=5) was reported to give NaN weights."""
    t = generate_trace(2, 32, 8, 56, 24, seed=5, preset=preset)
    assert np.isfinite(t.weights).all() and (t.weights > 0).all() and (t.weights <= 1).all()
    check_trace(t)


def test_zero_exponential_gives_finite_weights() -> None:
    """An exponential draw of exactly 0.0 (arrival time 0, log(0) = -inf) must not give NaN."""
    p = PRESETS["fine-shared"]
    w = _world(p, 2, 32, 8, 1, 5)
    n, k = 4, 8
    U = np.random.default_rng(0).random((k, n))
    X = np.zeros((k, n))  # all arrivals at time 0
    X[:, 1] = 1.0
    inv = 1.0 / p.temperature
    experts, weights = np.empty((n, k), np.int64), np.empty((n, k), np.float32)
    none = np.zeros((n, 0), np.int64)
    topk_kernel(
        np.zeros(n, np.int64),
        w.tables.cdf_flat,
        w.guide,
        w.tables.q,
        w.tables.q_pow_sum,
        w.q_pow,
        none,
        none,
        np.zeros((32, 1), np.int64),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        np.zeros(0),
        np.zeros(0),
        np.zeros(0),
        np.zeros(0),
        U,
        X,
        inv,
        1.0,
        False,
        experts,
        weights,
    )
    assert np.isfinite(weights).all()
    assert all(len(set(row)) == k for row in experts.tolist())


@pytest.mark.parametrize("seed", range(6))
def test_small_shapes_sweep_valid(seed: int) -> None:
    """Many small shapes: finite weights in (0, 1], k distinct experts per token and layer."""
    gen = np.random.default_rng(seed)
    for _ in range(8):
        E = int(gen.choice([2, 8, 16, 32, 64]))
        k = int(gen.integers(1, min(E, 9) + 1))
        L, T = int(gen.integers(1, 5)), int(gen.integers(1, 80))
        t = generate_trace(L, E, k, T, int(gen.integers(0, T + 1)), seed=int(gen.integers(99)))
        assert np.isfinite(t.weights).all() and (t.weights > 0).all() and (t.weights <= 1).all()
        srt = np.sort(t.experts.astype(np.int64), axis=2)
        assert (np.diff(srt, axis=2) > 0).all()
