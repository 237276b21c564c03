"""Context-aware placement (arXiv 2512.04476, Algorithm 1), FP16 variant.

During a request's prefill, count per (layer, expert) the activations P and the routing-score sum
W; normalise each per layer; score S = alpha * P~ + (1 - alpha) * W~ (alpha = 0.5). The top-K
experts of each layer are pinned in GPU memory for the request's whole decode; the others run on
the NDP units; nothing migrates during decode. (The paper's low-bit NDP replicas are left out: the
issue asks for the FP16 policy.)
"""

from __future__ import annotations

import numpy as np

from ndpc.backends.policies.base import (
    NO_ACTIONS,
    DispatchPolicy,
    LayerDecision,
    LayerView,
    PolicyContext,
    StepActions,
    Where,
)
from ndpc.backends.policies.monde import MondePolicy

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


def layer_scores(
    experts: np.ndarray,
    counts: np.ndarray,
    wsum: np.ndarray,
    num_experts: int,
    alpha: float = ALPHA,
) -> np.ndarray:
    """S [E] of one layer from its prefill step's activated experts, token counts and weight sums
    (the same rule as `prefill_scores`, from aggregated inputs)."""
    p = np.zeros(num_experts)
    w = np.zeros(num_experts)
    p[experts] = counts
    w[experts] = wsum
    p_tot, w_tot = p.sum(), w.sum()
    return alpha * (p / p_tot if p_tot else p) + (1 - alpha) * (w / w_tot if w_tot else w)


class CtxAwarePolicy(DispatchPolicy):
    """`ctxaware`: pin each layer's top-K prefill experts in GPU memory for the request's decode."""

    NAME = "ctxaware"
    PREFETCHER = "prefill-pinning"

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        bytes_ = max((p.expert_bytes for p in ctx.plans), default=1)
        most = max((p.experts for p in ctx.plans), default=0)
        self.k_pin = (
            pins_per_layer(ctx.gpu_expert_budget_bytes, len(ctx.plans), bytes_, most)
            if ctx.plans
            else 0
        )
        self.prefill_rule = MondePolicy(ctx)  # before a placement exists: MoNDE's system
        self.pinned: list[set[int]] = [set() for _ in ctx.plans]
        self._next: list[set[int]] = [set() for _ in ctx.plans]

    def dispatch(self, view: LayerView) -> LayerDecision:
        if view.phase == 0:
            cached = {int(e) for e in view.experts if view.resident[e]}
            split = self.prefill_rule.split(view, cached)
            pos = {int(e): i for i, e in enumerate(view.experts)}
            where = np.full(len(view.experts), int(Where.NDP), dtype=np.uint8)
            for e in split.gpu_fetch:
                where[pos[e]] = Where.GPU_FETCH
            for e in split.gpu_cached:
                where[pos[e]] = Where.GPU_RESIDENT
            return LayerDecision(where=where)
        where = np.where(view.resident[view.experts], int(Where.GPU_RESIDENT), int(Where.NDP))
        return LayerDecision(where=where.astype(np.uint8))

    def after_layer(self, view: LayerView) -> StepActions:
        if view.phase == 0 and self.k_pin > 0:
            s = layer_scores(view.experts, view.counts, view.weights, view.plan.experts)
            self._next[view.plan.index] = set(pinned_sets(s[None, :], self.k_pin)[0])
        return NO_ACTIONS

    def end_step(self, step: int, phase: int, request: int) -> StepActions:
        """After the prefill step: swap last request's pins for this request's (one placement)."""
        if phase != 0 or self.k_pin == 0:
            return NO_ACTIONS
        evict, fetch = [], []
        for index, (old, new) in enumerate(zip(self.pinned, self._next, strict=True)):
            evict += [(index, e) for e in sorted(old - new)]
            fetch += [(index, e) for e in sorted(new - old)]
        self.pinned = self._next
        self._next = [set() for _ in self.ctx.plans]
        return StepActions(evict=tuple(evict), prefetch=tuple(fetch))


POLICY = CtxAwarePolicy
