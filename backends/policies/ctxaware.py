"""Context-aware placement (arXiv 2512.04476, Algorithm 1), FP16 variant.

During a request's prefill, count per (layer, expert) the activations P and the routing-score sum
W; normalise each per layer; score S = alpha * P~ + (1 - alpha) * W~ (alpha = 0.5). The top-K
experts of each layer are pinned in GPU memory for the request's whole decode; the others run on
the NDP units; nothing migrates during decode. (The paper's low-bit NDP replicas are left out: the
issue asks for the FP16 policy.)
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.5


def prefill_scores(
    experts: np.ndarray, weights: np.ndarray, num_experts: int, alpha: float = ALPHA
) -> np.ndarray:
    """S [L, E] from one request's prefill tokens (`experts`, `weights`: [T, L, k]).

    Normalisation (a guess; the paper says only "normalise"): each of P and W divided by its
    layer's total, so both are distributions over the layer's experts.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    _, layers, _ = experts.shape
    scores = np.zeros((layers, num_experts), dtype=np.float64)
    for layer in range(layers):
        ids = experts[:, layer, :].ravel()
        w = weights[:, layer, :].ravel().astype(np.float64)
        p = np.bincount(ids, minlength=num_experts)[:num_experts].astype(np.float64)
        s = np.bincount(ids, weights=w, minlength=num_experts)[:num_experts]
        p_tot, s_tot = p.sum(), s.sum()
        scores[layer] = alpha * (p / p_tot if p_tot else p) + (1 - alpha) * (
            s / s_tot if s_tot else s
        )
    return scores


def pins_per_layer(budget_bytes: int, moe_layers: int, expert_bytes: int, num_experts: int) -> int:
    """K: how many experts per layer fit a GPU expert budget shared evenly by all MoE layers."""
    if moe_layers <= 0 or expert_bytes <= 0:
        raise ValueError("moe_layers and expert_bytes must be positive")
    return max(0, min(num_experts, budget_bytes // (moe_layers * expert_bytes)))


def pinned_sets(scores: np.ndarray, k_pin: int) -> list[tuple[int, ...]]:
    """Per layer, the top-`k_pin` experts by score (ties: lower id); experts never seen are
    not pinned (a zero score says nothing about the request)."""
    out = []
    for row in scores:
        order = np.lexsort((np.arange(row.size), -row))[:k_pin]
        out.append(tuple(sorted(int(e) for e in order if row[e] > 0)))
    return out
