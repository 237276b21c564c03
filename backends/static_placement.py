"""Static placement of expert weights, shared by compiler passes and run-time policies.

- `pack_shards`: expert shards onto NDP units (LPT on expected load). The `balance` pass packs at
  compile time (uniform popularity); the balance policy re-packs a layer whose popularity drifted.
- `popularity` / `resident_sets`: the offline profile of a calibration trace and the most popular
  experts that fill the GPU budget (the `fiddler-profile` pass; Fiddler's static residency).
"""

from __future__ import annotations

import heapq

import numpy as np


def pack_shards(
    degrees: list[int], load: list[float], units: int, current: list[tuple[int, ...]] | None = None
) -> list[tuple[int, ...]]:
    """Place each expert's `degrees[e]` shards on distinct units, balancing expected load (LPT).

    `load[e]` is the expected work of the whole expert; each shard carries load / degree. Experts
    are placed heaviest first on the least-loaded units; ties prefer the expert's `current` units
    (so re-plans move few weights), then the lowest unit index. O(E log E + E N log N).
    """
    order = sorted(range(len(degrees)), key=lambda e: (-load[e] / degrees[e], e))
    unit_load = [0.0] * units
    out: list[tuple[int, ...]] = [()] * len(degrees)
    for e in order:
        if degrees[e] > units:
            raise ValueError(f"expert {e} has degree {degrees[e]} > {units} units")
        mine = set(current[e]) if current else set()
        ranked = heapq.nsmallest(
            degrees[e], range(units), key=lambda u: (unit_load[u], u not in mine, u)
        )
        for u in ranked:
            unit_load[u] += load[e] / degrees[e]
        out[e] = tuple(sorted(ranked))
    return out


def popularity(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """Selection counts [L, E] of a trace's `experts` array [T, L, k] (the offline profile)."""
    tokens, layers, _ = experts.shape
    counts = np.zeros((layers, num_experts), dtype=np.int64)
    for layer in range(layers):
        ids = experts[:, layer, :].ravel()
        counts[layer] = np.bincount(ids[ids >= 0], minlength=num_experts)[:num_experts]
    return counts


def resident_sets(counts: np.ndarray, slots: int) -> list[tuple[int, ...]]:
    """The `slots` most popular (layer, expert) pairs over all layers, as sorted per-layer tuples.

    Ties go to the lower layer, then the lower expert id (deterministic).
    """
    layers, num_experts = counts.shape
    flat = counts.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))  # count desc, then index asc
    chosen = order[: max(0, min(slots, flat.size))]
    per_layer: list[list[int]] = [[] for _ in range(layers)]
    for idx in chosen:
        if flat[idx] > 0:  # an expert never seen in calibration is not worth a slot
            per_layer[idx // num_experts].append(int(idx % num_experts))
    return [tuple(sorted(p)) for p in per_layer]
