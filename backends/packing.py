"""Static placement of expert shards on NDP units: `pack_shards` (LPT on expected load).

Used at compile time by the `balance` pass (uniform popularity) and at run time by the balance
policy when it re-packs a layer whose popularity drifted; neither owns it.
"""

from __future__ import annotations

import heapq


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
