"""Routing statistics, computed in one streaming pass with bounded memory.

Per MoE layer: selection counts; load skew (max/mean, Gini, normalised entropy); consecutive-token
reuse (overlap |S_t & S_t-1| / k, P(any overlap), top-1 repeat), over pairs of adjacent tokens of the
same request; next-layer predictability (a table P(next top-1 | top-1) and P(next set | top-1) fit on
the first half of the tokens, scored on the second half, beside the static "most popular" guess);
prefill-vs-decode similarity (Jensen-Shannon divergence of the per-layer distributions). Every
statistic comes with the value a uniform router shows at the same sample size (`noise_floor`).
Definitions in docs/traces.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ndpc.traces.types import Popularity, Trace, TraceMeta, chunk_bytes

_BLOCK = 4096  # tokens per inner step: bounds the [B, L, k, k] overlap temporary
DEFAULT_CHUNK = 16384  # tokens per chunk read by `trace stats`
_FLOOR_REPS = 32


# ------------------------------------------------------------------ per-distribution measures


def max_over_mean(counts: np.ndarray) -> np.ndarray:
    """Largest count / mean count along the last axis (1.0 = perfectly balanced)."""
    counts = np.asarray(counts, dtype=np.float64)
    mean = counts.mean(axis=-1)
    return np.divide(counts.max(axis=-1), mean, out=np.zeros_like(mean), where=mean > 0)


def gini(counts: np.ndarray) -> np.ndarray:
    """Gini coefficient of the counts along the last axis (0 = balanced)."""
    x = np.sort(np.asarray(counts, dtype=np.float64), axis=-1)
    n = x.shape[-1]
    total = x.sum(axis=-1)
    rank = np.arange(1, n + 1, dtype=np.float64)
    g = 2.0 * (x * rank).sum(axis=-1) / np.maximum(n * total, 1e-300) - (n + 1.0) / n
    return np.where(total > 0, g, 0.0)


def entropy_norm(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy of the normalised counts divided by log(E) (1 = uniform)."""
    c = np.asarray(counts, dtype=np.float64)
    p = c / np.maximum(c.sum(axis=-1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
    return h / np.log(c.shape[-1]) if c.shape[-1] > 1 else np.zeros_like(h)


def js_divergence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits between count vectors (last axis), 0 when either is empty."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sa, sb = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    p, q = a / np.maximum(sa, 1e-300), b / np.maximum(sb, 1e-300)
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, x * np.log2(x / m), 0.0).sum(axis=-1)

    jsd = 0.5 * kl(p) + 0.5 * kl(q)
    return np.where((sa[..., 0] > 0) & (sb[..., 0] > 0), jsd, 0.0)


# ------------------------------------------------------------------ uniform-router noise floors


def uniform_counts(tokens: int, experts: int, k: int, reps: int, seed: int = 0) -> np.ndarray:
    """Selection counts [reps, E] of a uniform top-k router over `tokens` tokens.

    Exact sampling for small samples; above ~4M draws a Gaussian with the exact mean and
    covariance of uniform k-subsets (var n p (1-p), cov -n p (1-p) / (E-1), p = k/E).
    """
    rng = np.random.default_rng([seed, tokens, experts, k])
    if tokens * experts <= 4_000_000:
        out = np.empty((reps, experts), dtype=np.float64)
        for r in range(reps):
            picks = np.argpartition(rng.random((tokens, experts)), k - 1, axis=1)[:, :k]
            out[r] = np.bincount(picks.ravel(), minlength=experts)
        return out
    p = k / experts
    z = rng.standard_normal((reps, experts))
    z -= z.mean(axis=1, keepdims=True)
    scale = np.sqrt(tokens * p * (1 - p) * experts / (experts - 1))
    return tokens * p + scale * z


def skew_floor(tokens: int, experts: int, k: int) -> dict[str, float]:
    """max/mean, Gini and normalised entropy a uniform router shows at this sample size."""
    if tokens <= 0:
        return {"max_mean": 0.0, "gini": 0.0, "entropy": 0.0}
    c = uniform_counts(tokens, experts, k, _FLOOR_REPS)
    return {
        "max_mean": float(max_over_mean(c).mean()),
        "gini": float(gini(c).mean()),
        "entropy": float(entropy_norm(c).mean()),
    }


def jsd_floor(n_a: int, n_b: int, experts: int, k: int) -> float:
    """Mean JS divergence between two uniform-router samples of n_a and n_b tokens."""
    if n_a <= 0 or n_b <= 0:
        return 0.0
    a = uniform_counts(n_a, experts, k, _FLOOR_REPS, seed=1)
    b = uniform_counts(n_b, experts, k, _FLOOR_REPS, seed=2)
    return float(js_divergence(a, b).mean())


def uniform_pair_floor(experts: int, k: int) -> dict[str, float]:
    """Expected consecutive-token overlap, P(any overlap) and top-1 repeat of independent uniform top-k."""
    p_none = 1.0
    for i in range(k):  # P(a second random k-set misses the first one)
        p_none *= (experts - k - i) / (experts - i) if experts - k - i > 0 else 0.0
    return {"overlap": k / experts, "p_any": 1.0 - p_none, "top1_repeat": 1.0 / experts}


# ------------------------------------------------------------------ streaming accumulator


class StatsAccumulator:
    """Accumulates every statistic over chunks of one trace; memory O(L E^2), not O(T)."""

    def __init__(self, meta: TraceMeta, total_tokens: int):
        L, E = meta.layers, meta.experts
        self.meta, self.total = meta, total_tokens
        self.half = total_tokens // 2  # tokens [0, half) fit the predictors, [half, T) score them
        self.counts = np.zeros((2, L, E), dtype=np.int64)  # per phase
        self.pairs = 0
        self.overlap = np.zeros(L)
        self.p_any = np.zeros(L)
        self.top1_repeat = np.zeros(L)
        self.top1_weight = np.zeros(L)
        self.weight_mass = np.zeros(L)
        self.requests = 0
        self._prev: tuple[np.ndarray, int] | None = None  # last token's experts [L, k], request
        self._fit1 = np.zeros((max(L - 1, 0), E * E), dtype=np.int64)
        self._fitset = np.zeros((max(L - 1, 0), E * E), dtype=np.int64)
        self._pred: tuple[np.ndarray, ...] | None = None
        self.scored = 0
        self.hits = np.zeros((4, max(L - 1, 0)))  # table top-1, table set, static top-1, static set
        self.seen = 0

    def update(self, chunk: Trace) -> None:
        """Add the next chunk of tokens (chunks must arrive in order)."""
        for start in range(0, chunk.tokens, _BLOCK):
            self._block(chunk.slice(start, start + _BLOCK))

    def _block(self, c: Trace) -> None:
        n, L, E = c.tokens, self.meta.layers, self.meta.experts
        if n == 0:
            return
        ex = c.experts.astype(np.int64)
        for ph in (0, 1):
            sel = ex[c.phase == ph]
            idx = (np.arange(L)[None, :, None] * E + sel).ravel()
            self.counts[ph] += np.bincount(idx, minlength=L * E).reshape(L, E)
        self.top1_weight += c.weights[:, :, 0].sum(axis=0, dtype=np.float64)
        self.weight_mass += c.weights.sum(axis=2, dtype=np.float64).sum(axis=0)
        self._pairs(ex, c.request)
        g0 = self.seen
        fit_end = min(max(self.half - g0, 0), n)
        if fit_end > 0:
            self._fit(ex[:fit_end])
        if fit_end < n and self.half > 0:
            self._score(ex[fit_end:])
        self.seen += n

    def _pairs(self, ex: np.ndarray, req: np.ndarray) -> None:
        req = req.astype(np.int64)
        if self._prev is not None:
            ex_all = np.concatenate([self._prev[0][None], ex])
            req_all = np.concatenate([[self._prev[1]], req])
        else:
            ex_all, req_all = ex, req
            self.requests += 1 if len(req) else 0
        same = req_all[1:] == req_all[:-1]
        self.requests += int((~same).sum())
        cur, prev = ex_all[1:][same], ex_all[:-1][same]
        if len(cur):
            shared = (cur[:, :, :, None] == prev[:, :, None, :]).sum(axis=(2, 3))
            self.overlap += shared.sum(axis=0) / self.meta.k
            self.p_any += (shared > 0).sum(axis=0)
            self.top1_repeat += (cur[:, :, 0] == prev[:, :, 0]).sum(axis=0)
            self.pairs += len(cur)
        self._prev = (ex[-1].copy(), int(req[-1]))

    def _fit(self, ex: np.ndarray) -> None:
        L, E = self.meta.layers, self.meta.experts
        if L < 2:
            return
        lay = np.arange(L - 1)[None, :]
        cur = ex[:, :-1, 0] * E  # [n, L-1]
        flat = (lay * E * E + cur + ex[:, 1:, 0]).ravel()
        self._fit1 += np.bincount(flat, minlength=(L - 1) * E * E).reshape(L - 1, E * E)
        flat = ((lay * E * E + cur)[:, :, None] + ex[:, 1:, :]).ravel()
        self._fitset += np.bincount(flat, minlength=(L - 1) * E * E).reshape(L - 1, E * E)

    def _predictors(self) -> tuple[np.ndarray, ...]:
        L, E, k = self.meta.layers, self.meta.experts, self.meta.k
        t1 = self._fit1.reshape(L - 1, E, E)
        ts = self._fitset.reshape(L - 1, E, E)
        # static guesses: the first half's most popular top-1 / k experts of the next layer
        static1 = np.argmax(t1.sum(axis=1), axis=1)  # [L-1]
        static_set = np.argsort(-ts.sum(axis=1), axis=1, kind="stable")[:, :k]  # [L-1, k]
        pred1 = np.where(t1.sum(axis=2) > 0, np.argmax(t1, axis=2), static1[:, None])
        order = np.argsort(-ts, axis=2, kind="stable")[:, :, :k]
        empty = ts.sum(axis=2) == 0
        pred_set = np.where(empty[:, :, None], static_set[:, None, :], order)
        return pred1, pred_set, static1, static_set

    def _score(self, ex: np.ndarray) -> None:
        L, k = self.meta.layers, self.meta.k
        if L < 2:
            return
        if self._pred is None:
            self._pred = self._predictors()
        pred1, pred_set, static1, static_set = self._pred
        lay = np.arange(L - 1)[None, :]
        top1, nxt = ex[:, :-1, 0], ex[:, 1:, :]
        guess1 = pred1[lay, top1]  # [n, L-1]
        guess_set = pred_set[lay, top1]  # [n, L-1, k]
        self.hits[0] += (guess1 == nxt[:, :, 0]).sum(axis=0)
        self.hits[1] += (guess_set[:, :, :, None] == nxt[:, :, None, :]).sum(axis=(0, 2, 3)) / k
        self.hits[2] += (static1[None, :] == nxt[:, :, 0]).sum(axis=0)
        self.hits[3] += (static_set[None, :, :, None] == nxt[:, :, None, :]).sum(axis=(0, 2, 3)) / k
        self.scored += len(ex)

    def result(self) -> dict[str, Any]:
        """The statistics as a JSON-ready dict (see docs/traces.md for every key)."""
        return trace_report(self)


def _summary(values: np.ndarray, floor: float | None, **extra: Any) -> dict[str, Any]:
    vals = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {
        "mean": _r(vals.mean()) if len(vals) else None,
        "min": _r(vals.min()) if len(vals) else None,
        "max": _r(vals.max()) if len(vals) else None,
        "noise_floor": _r(floor) if floor is not None else None,
    }
    out.update({key: _r(v) if isinstance(v, float) else v for key, v in extra.items()})
    return out


def _r(x: Any) -> float:
    return round(float(x), 6)


def skew_report(counts: np.ndarray, meta: TraceMeta, tokens_per_layer: int) -> dict[str, Any]:
    """Per-layer skew entries and their summary for counts [L, E] from `tokens_per_layer` tokens."""
    mm, g, h = max_over_mean(counts), gini(counts), entropy_norm(counts)
    floor = skew_floor(tokens_per_layer, meta.experts, meta.k)
    layers = [
        {
            "layer": l,
            "counts": [int(c) for c in counts[l]],
            "max_mean": _r(mm[l]),
            "gini": _r(g[l]),
            "entropy": _r(h[l]),
        }
        for l in range(meta.layers)
    ]
    summary = {
        "max_mean": _summary(mm, floor["max_mean"]),
        "gini": _summary(g, floor["gini"]),
        "entropy": _summary(h, floor["entropy"]),
    }
    return {"layers": layers, "summary": summary}


def trace_report(acc: StatsAccumulator) -> dict[str, Any]:
    """Assemble the JSON report of a finished accumulator."""
    meta, T = acc.meta, acc.seen
    counts = acc.counts.sum(axis=0)
    n_pre, n_dec = (int(acc.counts[p, 0].sum()) // meta.k if meta.layers else 0 for p in (0, 1))
    rep = skew_report(counts, meta, T)
    pairs = max(acc.pairs, 1)
    per = {
        "overlap": acc.overlap / pairs,
        "p_any": acc.p_any / pairs,
        "top1_repeat": acc.top1_repeat / pairs,
        "top1_weight": acc.top1_weight / max(T, 1),
        "weight_mass": acc.weight_mass / max(T, 1),
    }
    scored = max(acc.scored, 1)
    nxt = acc.hits / scored
    jsd = js_divergence(acc.counts[0], acc.counts[1])
    for l, entry in enumerate(rep["layers"]):
        entry.update({key: _r(v[l]) for key, v in per.items()})
        has_next = l < meta.layers - 1 and acc.scored > 0
        entry["next_top1_acc"] = _r(nxt[0, l]) if has_next else None
        entry["next_set_recall"] = _r(nxt[1, l]) if has_next else None
        entry["prefill_decode_jsd"] = _r(jsd[l]) if n_pre and n_dec else None
    floor = uniform_pair_floor(meta.experts, meta.k)
    s = rep["summary"]
    for key in ("overlap", "p_any", "top1_repeat"):
        s[key] = _summary(per[key], floor[key] if acc.pairs else None, pairs=acc.pairs)
    s["top1_weight"] = _summary(per["top1_weight"], None)
    s["next_top1_acc"] = _summary(
        nxt[0],
        1.0 / meta.experts,
        static=float(nxt[2].mean()) if len(nxt[2]) else 0.0,
        scored_tokens=acc.scored,
    )
    s["next_set_recall"] = _summary(
        nxt[1],
        meta.k / meta.experts,
        static=float(nxt[3].mean()) if len(nxt[3]) else 0.0,
        scored_tokens=acc.scored,
    )
    if acc.scored == 0:
        s["next_top1_acc"] = s["next_set_recall"] = None
    s["prefill_decode_jsd"] = (
        _summary(jsd, jsd_floor(n_pre, n_dec, meta.experts, meta.k)) if n_pre and n_dec else None
    )
    return {
        "kind": "trace",
        "model": meta.model,
        "experts": meta.experts,
        "k": meta.k,
        "tokens": T,
        "requests": acc.requests,
        "prefill_tokens": n_pre,
        "decode_tokens": n_dec,
        "layers": rep["layers"],
        "summary": s,
    }


def trace_stats(chunks: Iterable[Trace], meta: TraceMeta, total_tokens: int) -> dict[str, Any]:
    """Statistics of a trace given as a stream of chunks (see `ndpc.traces.format.iter_chunks`)."""
    acc = StatsAccumulator(meta, total_tokens)
    for chunk in chunks:
        acc.update(chunk)
    return acc.result()


def popularity_stats(pop: Popularity) -> dict[str, Any]:
    """Skew statistics of a popularity table (counts only: no temporal or cross-layer figures)."""
    rep = skew_report(pop.counts, pop.meta, pop.tokens)
    return {
        "kind": "popularity",
        "model": pop.meta.model,
        "experts": pop.meta.experts,
        "k": pop.meta.k,
        "tokens": pop.tokens,
        **rep,
    }


def stats_memory_bound(layers: int, experts: int, k: int, chunk_tokens: int = DEFAULT_CHUNK) -> int:
    """Bytes `trace stats` may use beyond the interpreter and imports (docs/traces.md).

    One chunk in memory plus its validation temporaries (<= 2x the chunk), the inner block's
    temporaries, and the next-layer tables: two [L-1, E, E] int64 accumulators plus up to four
    temporaries of that size while they are updated or turned into predictors.
    """

    per_block = min(chunk_tokens, _BLOCK) * layers * k * (8 * 6 + k)
    tables = 6 * max(layers - 1, 0) * experts * experts * 8
    return 3 * chunk_bytes(chunk_tokens, layers, k, experts) + per_block + tables + (16 << 20)
