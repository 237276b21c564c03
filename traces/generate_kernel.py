"""Compiled (numba) per-token kernel of the generator's exact sparse top-k sampler.

The same algorithm as traces/sampling.py's `sample_topk` (an exponential race drawn without
replacement in O(k (log E + m + k)) per token, see that module), written as one loop over tokens
so that no [n, m] temporaries are built per draw. It consumes the same random numbers in the same
order (per draw j: n uniforms, then n standard exponentials, drawn by the caller with numpy) and
sums in numpy's pairwise order, so its choices match `sample_topk` for the same generator state
(tests/traces/test_generate_kernel.py); floats may differ from it in the last bit (numba's exp/log).

The layer's bonus experts are assembled inside the kernel from the sticky anchors and the previous
layer's choices through the layer-to-layer transition table (see traces/generate.py `_bonuses`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _pwsum(a: np.ndarray, n: int) -> float:
    """sum(a[:n]) in numpy's pairwise order (exact for n <= 128, the sizes used here)."""
    if n < 8:
        s = 0.0
        for i in range(n):
            s += a[i]
        return s
    r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
    r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
    i = 8
    while i + 8 <= n:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        s += a[i]
        i += 1
    return s


@njit(cache=True)
def topk_kernel(
    rows,  # int64 [n]: table row of each token
    cdf_flat,  # float64 [R*E]: BaseTables.cdf_flat
    guide,  # int64 [R, E]: guide[r, b] = first expert of row r whose CDF exceeds b / E
    q,  # float64 [R, E]
    q_pow_sum,  # float64 [R]
    q_pow,  # float64 [R, E]: q ** (1 / temperature)
    anchors,  # int64 [n, a] (a may be 0): bonus columns 0..a-1
    prev,  # int64 [n, kp] (kp may be 0): previous layer's choices
    trans,  # int64 [E, f]: experts favoured by each expert of the previous layer
    col_j,  # int64 [m]: bonus column c is anchor col_t[c] (col_j[c] < 0) or what the
    col_t,  # int64 [m]: col_j[c]-th previous choice favours via transition col_t[c]
    em1,  # float64 [m]: expm1(bonus value) of each column (columns largest value first)
    em1_inv,  # float64 [m]: expm1(bonus value / temperature)
    eb,  # float64 [m]: exp(bonus value)
    eb_inv,  # float64 [m]: exp(bonus value / temperature)
    U,  # float64 [k, n]: uniforms
    X,  # float64 [k, n]: standard exponentials
    inv,  # 1 / temperature
    gamma_c,  # Gamma(1 - inv) (un-renormalised weights)
    renormalize,  # bool
    out_experts,  # int64 [n, k]
    out_weights,  # float32 [n, k]
):
    k, n = U.shape
    E = q.shape[1]
    m = col_j.shape[0]
    mark = np.full(E, -1, np.int64)  # mark[e] == i: e is a bonus expert of token i ...
    col = np.empty(E, np.int64)  # ... first in column col[e]
    taken = np.full(E, -1, np.int64)  # taken[e] == i: token i chose e already
    ids = np.empty(m, np.int64)
    remaining = np.empty(m)
    tmp = np.empty(max(m, 1))
    chosen = np.empty(k, np.int64)
    starts = np.empty(k)
    widths = np.empty(k)
    scores = np.empty(k)
    ew = np.empty(k)
    mass_inv = np.empty(k)
    for i in range(n):
        r = rows[i]
        row = r * E
        # the bonus experts, ordered; a repeated id keeps its first (largest) bonus
        rem = 0.0  # bonus mass left (the extra q_e * expm1(bonus_e) of experts not chosen)
        for c in range(m):
            pj = col_j[c]
            e = anchors[i, col_t[c]] if pj < 0 else trans[prev[i, pj], col_t[c]]
            ids[c] = e
            if mark[e] != i:
                mark[e] = i
                col[e] = c
                remaining[c] = q[r, e] * em1[c]
                rem += remaining[c]
                tmp[c] = q_pow[r, e] * em1_inv[c]
            else:
                tmp[c] = 0.0
                remaining[c] = 0.0
        base_left = 1.0  # base mass left (q of experts not chosen)
        rate = 1.0 + rem  # total mass left
        arrival = 0.0
        for j in range(k):
            # --- one expert from p restricted to the experts not chosen yet (no rejection)
            u = U[j, i] * (base_left + rem)
            if u < base_left:
                # step over the chosen experts' CDF intervals (kept sorted by start)
                v = u
                for t in range(j):
                    v += widths[t] if starts[t] <= v else 0.0
                x = r + min(v, 1 - 1e-12)
                # searchsorted(side="right") within row r, from the guide table's bucket
                e = guide[r, max(int(min(v, 1.0) * E) - 1, 0)]
                while e < E - 1 and cdf_flat[row + e] <= x:
                    e += 1
            else:
                d = u - base_left
                e = -1
                s = 0.0
                for c in range(m):
                    s += remaining[c]
                    if s > d:
                        e = ids[c]
                        break
                if e < 0:  # rounding: the last expert with bonus mass left
                    for c in range(m):
                        if remaining[c] > 0.0:
                            e = ids[c]
            if e < 0 or taken[e] == i:  # rounding at an interval edge (vanishingly rare)
                e = max(e, 0)
                while taken[e] == i:
                    e = (e + 1) % E
            taken[e] = i
            chosen[j] = e
            qe = q[r, e]
            st = cdf_flat[row + e] - r - qe  # insert e's interval, sorted by start
            h = j - 1
            while h >= 0 and starts[h] > st:
                starts[h + 1] = starts[h]
                widths[h + 1] = widths[h]
                h -= 1
            starts[h + 1] = st
            widths[h + 1] = qe
            base_left = max(base_left - qe, 0.0)
            mass = qe
            mass_inv[j] = q_pow[r, e]
            if mark[e] == i:
                c = col[e]
                if remaining[c] > 0.0:
                    rem = max(rem - remaining[c], 0.0)
                    remaining[c] = 0.0
                    mass = qe * eb[c]
                    mass_inv[j] *= eb_inv[c]
            # arrival > 0 even when the exponential is 0.0: log(0) would make the weights NaN
            arrival = max(arrival + X[j, i] / max(rate, 1e-300), 1e-300)
            scores[j] = -np.log(arrival)
            rate -= mass
        # --- weights: softmax(scores / temperature) at the chosen experts
        top = scores[0] * inv
        for j in range(k):
            ew[j] = np.exp(scores[j] * inv - top)
        den = _pwsum(ew, k)
        if not renormalize:
            tot = q_pow_sum[r] + _pwsum(tmp, m)
            rest = max(tot - _pwsum(mass_inv, k), 0.0) * gamma_c
            den = den + rest * np.exp(-top)
        for j in range(k):
            out_experts[i, j] = chosen[j]
            out_weights[i, j] = np.float32(ew[j] / den)
