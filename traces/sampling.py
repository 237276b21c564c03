"""Sparse exact sampling of top-k routing: k experts without replacement from softmax(logits).

The generator's logits are a per-(domain, layer) base distribution q plus a few positive bonuses
(cross-layer affinity, temporal anchors). Drawing k experts without replacement from
p_e ~ q_e * exp(bonus_e) has the same distribution as Gumbel-top-k over all E experts (an
exponential race: expert e "arrives" at X_e ~ Exp(rate p_e); the first k arrivals are the
choice), but costs O(k (log E + m + k)) per token and layer instead of O(E). Each draw takes
the base part q (inverse CDF, the chosen experts' intervals stepped over) or the bonus experts'
extra mass q_e (exp(bonus_e) - 1), in proportion to what is left of each; a chosen expert's
mass leaves both parts. No draw is ever rejected.

The race also gives each chosen expert its noisy logit s_j = -log(T_j), T_j the j-th arrival
time (T_j = T_{j-1} + Exp(1) / remaining rate), as a dense Gumbel-top-k would see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gamma

import numpy as np


@dataclass(frozen=True)
class BaseTables:
    """Base distributions, one row per (domain, layer): probabilities and flattened CDFs."""

    q: np.ndarray  # float64 [R, E], rows sum to 1
    cdf_flat: np.ndarray  # [R*E]: row r's CDF shifted by r, so one searchsorted serves all rows
    temperature: float
    q_pow_sum: np.ndarray  # [R]: sum_e q^(1/temperature), for un-renormalised weights

    @staticmethod
    def build(q: np.ndarray, temperature: float = 1.0) -> BaseTables:
        """Tables for the rows of q [R, E] (normalised here)."""
        q = q / q.sum(axis=1, keepdims=True)
        cdf = np.cumsum(q, axis=1)
        cdf[:, -1] = 1.0
        flat = (cdf + np.arange(len(q))[:, None]).ravel()
        return BaseTables(q, flat, temperature, (q ** (1.0 / temperature)).sum(axis=1))

    def draw(self, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Expert per entry of `rows` from q[rows] by inverse CDF at uniforms `u`."""
        E = self.q.shape[1]
        idx = np.searchsorted(self.cdf_flat, rows + np.minimum(u, 1 - 1e-12), side="right")
        return np.minimum(idx - rows * E, E - 1)


@dataclass(frozen=True)
class Draw:
    """The k chosen experts per token (best first), their noisy logits and routing weights."""

    experts: np.ndarray  # int64 [n, k]
    scores: np.ndarray  # float64 [n, k]: log(q_e) + bonus_e + Gumbel noise
    weights: np.ndarray  # float32 [n, k]


def first_occurrence(ids: np.ndarray) -> np.ndarray:
    """Mask [n, m]: True where the id did not appear in an earlier column of the row."""
    order = np.argsort(ids, axis=1, kind="stable")
    srt = np.take_along_axis(ids, order, axis=1)
    first_sorted = np.ones(ids.shape, dtype=bool)
    first_sorted[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    return first


def sample_topk(
    rng: np.random.Generator,
    tables: BaseTables,
    rows: np.ndarray,
    k: int,
    bonus_ids: np.ndarray | None = None,
    bonus_vals: np.ndarray | None = None,
    renormalize: bool = True,
) -> Draw:
    """Choose k experts per token without replacement from q[rows] * exp(bonus).

    rows [n]: table row of each token; bonus_ids [n, m] with per-column values bonus_vals [m]
    (>= 0, columns in non-increasing value order: a repeated id keeps its first, largest bonus).
    """
    n = len(rows)
    if bonus_ids is None:
        bonus_ids, bonus_vals = np.zeros((n, 0), np.int64), np.zeros(0)
    vals = (
        np.where(first_occurrence(bonus_ids), np.asarray(bonus_vals)[None, :], 0.0)
        if bonus_ids.shape[1]
        else np.zeros((n, 0))
    )
    q_bonus = tables.q[rows[:, None], bonus_ids]
    extra = q_bonus * np.expm1(vals)  # mass the bonuses add on top of q (q sums to 1)
    total = 1.0 + extra.sum(axis=1)
    remaining = extra.copy()
    chosen = np.full((n, k), -1, dtype=np.int64)
    log_mass = np.empty((n, k))
    scores = np.empty((n, k))
    arrival = np.zeros(n)
    rate = total.copy()  # mass of the experts not chosen yet
    for j in range(k):
        e = _draw_new(rng, tables, rows, chosen[:, :j], bonus_ids, remaining)
        chosen[:, j] = e
        hit = bonus_ids == e[:, None]
        bonus_e = (vals * hit).sum(axis=1)
        remaining[hit] = 0.0
        log_mass[:, j] = np.log(tables.q[rows, e]) + bonus_e
        arrival += rng.standard_exponential(n) / np.maximum(rate, 1e-300)
        scores[:, j] = -np.log(arrival)
        rate -= np.exp(log_mass[:, j])
    weights = _weights(tables, rows, scores, log_mass, q_bonus, vals, renormalize)
    return Draw(chosen, scores, weights)


def _draw_new(
    rng: np.random.Generator,
    tables: BaseTables,
    rows: np.ndarray,
    chosen: np.ndarray,
    bonus_ids: np.ndarray,
    remaining: np.ndarray,
) -> np.ndarray:
    """One expert per token from p restricted to the experts not chosen yet (no rejection).

    A draw lands in the base part (q minus the chosen experts' q) or in the remaining bonus
    mass. In the base part the uniform is mapped back onto the full CDF by stepping over the
    intervals of the chosen experts in CDF order.
    """
    n, E = len(rows), tables.q.shape[1]
    q_chosen = tables.q[rows[:, None], chosen]  # [n, j]
    base_left = 1.0 - q_chosen.sum(axis=1)
    cum = np.cumsum(remaining, axis=1) if remaining.shape[1] else np.zeros((n, 1))
    u = rng.random(n) * (base_left + cum[:, -1])
    out = np.empty(n, dtype=np.int64)
    base = u < base_left
    if base.any():
        r, v = rows[base], u[base]
        starts = tables.cdf_flat[r[:, None] * E + chosen[base]] - r[:, None] - q_chosen[base]
        order = np.argsort(starts, axis=1)
        starts = np.take_along_axis(starts, order, axis=1)
        widths = np.take_along_axis(q_chosen[base], order, axis=1)
        for i in range(starts.shape[1]):  # skip each removed interval that starts at or below v
            v = v + widths[:, i] * (starts[:, i] <= v)
        out[base] = tables.draw(r, v)
    if not base.all():
        pick = np.argmax(cum[~base] > (u[~base] - base_left[~base])[:, None], axis=1)
        out[~base] = bonus_ids[~base][np.arange(len(pick)), pick]
    return out


def _weights(
    tables: BaseTables,
    rows: np.ndarray,
    scores: np.ndarray,
    log_mass: np.ndarray,
    q_bonus: np.ndarray,
    vals: np.ndarray,
    renormalize: bool,
) -> np.ndarray:
    """softmax(s / temperature) at the chosen experts.

    Renormalised over the k chosen: exact. Otherwise the denominator adds the experts not chosen
    by their expected contribution E[exp(s_e / t)] = p_e^(1/t) Gamma(1 - 1/t) (t > 1): their
    noisy logits are never drawn.
    """
    inv = 1.0 / tables.temperature
    z = scores * inv
    top = z[:, :1]
    e = np.exp(z - top)
    if renormalize:
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    total = tables.q_pow_sum[rows] + (q_bonus**inv * np.expm1(vals * inv)).sum(axis=1)
    rest = np.maximum(total - np.exp(log_mass * inv).sum(axis=1), 0.0) * gamma(1.0 - inv)
    return (e / (e.sum(axis=1, keepdims=True) + rest[:, None] * np.exp(-top))).astype(np.float32)
