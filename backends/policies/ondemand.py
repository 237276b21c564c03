"""MoE-OnDemand: every activated expert is copied to the GPU after the router, then computed there.

The baseline named in Pre-gated MoE (ISCA 2024): all experts live in host (here: NDP-DIMM) memory,
and an expert's weights move to the GPU only after the gate picked it, so gate selection, weight
migration and expert compute are serialised (HF-Accelerate style hooks: copy, compute, next expert).
Nothing is kept between steps (`lru` adds a cache).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ndpc.backends.policies.base import DispatchPolicy, LayerDecision, LayerView, Where, all_on


def fetch_order(tokens: Mapping[int, int], weight: Mapping[int, float]) -> list[int]:
    """The order experts are copied and computed: the router's order (higher weight first)."""
    return sorted(tokens, key=lambda e: (-weight.get(e, 0.0), e))


def serial_finish(
    order: Sequence[int],
    tokens: Mapping[int, int],
    fetch_time: float,
    gpu_time: Callable[[int], float],
    cached: set[int] | frozenset[int] = frozenset(),
) -> float:
    """Layer time with no overlap: per expert, copy (unless cached) then compute."""
    return sum((0.0 if e in cached else fetch_time) + gpu_time(tokens[e]) for e in order)


class OnDemandPolicy(DispatchPolicy):
    """`ondemand`: copy every activated expert to the GPU after the router; nothing is kept."""

    NAME = "ondemand"

    def dispatch(self, view: LayerView) -> LayerDecision:
        dec = all_on(view, Where.GPU_FETCH)
        dec.serial = True  # copy e1, compute e1, copy e2, ...: no overlap
        return dec


POLICY = OnDemandPolicy
