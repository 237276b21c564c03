"""Duplex (MICRO 2024, arXiv 2409.01141): experts split by arithmetic intensity (token count).

Duplex pairs a high Op/B processor (xPU) with a low Op/B one (Logic-PIM) and, after the gate,
sends few-token experts to the low-Op/B side and many-token experts to the high-Op/B side, from a
precomputed per-expert time table; both run in parallel. Applied to this hardware: the NDP unit
holding the expert (expert parallelism, whole expert per unit) is the low-Op/B side; the GPU is
the high-Op/B side and must first copy the weights unless the expert is resident. An expert with n
tokens has Op/B ~ n (FP16 GEMM: 2n FLOPs per 2-byte weight), so the token count is the intensity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from backends.policies.monde import home_unit


def token_threshold(
    gpu_path: Callable[[int], float], ndp_time: Callable[[int], float], max_tokens: int
) -> int:
    """Smallest n in 1..max_tokens with gpu_path(n) < ndp_time(n) (the lookup table's crossover).

    Returns max_tokens + 1 when the GPU path never wins (every expert stays on NDP).
    """
    for n in range(1, max_tokens + 1):
        if gpu_path(n) < ndp_time(n):
            return n
    return max_tokens + 1


def threshold_bisect(
    gpu_path: Callable[[int], float], ndp_time: Callable[[int], float], max_tokens: int
) -> int:
    """`token_threshold` by bisection, for long prompts (both times grow monotonically in n and
    NDP time grows faster, so the GPU either never wins or wins from one crossover on)."""
    if gpu_path(max_tokens) >= ndp_time(max_tokens):
        return max_tokens + 1
    lo, hi = 1, max_tokens  # invariant: the GPU wins at hi
    while lo < hi:
        mid = (lo + hi) // 2
        if gpu_path(mid) < ndp_time(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class DuplexSplit:
    """One layer's split: experts on the GPU, and per NDP unit the experts it runs in order."""

    gpu: tuple[int, ...]
    ndp: dict[int, tuple[int, ...]]


def duplex_split(tokens: Mapping[int, int], threshold: int, units: int) -> DuplexSplit:
    """Experts with at least `threshold` tokens on the GPU, the rest on their home NDP unit."""
    gpu = tuple(sorted(e for e, n in tokens.items() if n >= threshold))
    ndp: dict[int, list[int]] = {}
    for e in sorted(tokens):
        if tokens[e] < threshold:
            ndp.setdefault(home_unit(e, units), []).append(e)
    return DuplexSplit(gpu=gpu, ndp={u: tuple(v) for u, v in sorted(ndp.items())})
