"""Resident-expert offload for `balance{offload-resident=true}` (part of the `ndpc` policy).

The paper's split (Algorithm B, `balance.py` + `split.py`) always runs GPU-resident experts on the GPU and
balances only the non-resident ones. With a large prefetch budget most activated experts are
resident (Qwen3: ~75% in decode), so the GPU side (resident kernels one after another) can
outlast the NDP side, whose units sit idle. A resident expert's shards are still in NDP memory
(prefetches copy, they do not move), so it can run there at no copy cost. Rule: starting from the
balance decision, repeatedly move the resident expert whose move shortens the layer most
(`split.makespan` cost model, resident experts with zero copy time), until none does.
Causal: uses only the current layer's router output and the residency. O(r^2 (k + N)) per
layer-step for r resident of k activated experts and N units.
"""

from __future__ import annotations

import numpy as np

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import LayerView, Where
from ndpc.backends.policies.split import build_problem, makespan

GPU_RESIDENT, NDP = int(Where.GPU_RESIDENT), int(Where.NDP)
EPS = 1e-12  # seconds: a move must shorten the layer by more than this


def offload_resident(
    view: LayerView, times: ExpertTimes, units: int, where: list[int]
) -> list[int]:
    """`where` with some GPU_RESIDENT experts sent to NDP, each move shortening the layer."""
    resident = [i for i, w in enumerate(where) if w == GPU_RESIDENT]
    if not resident:
        return where
    problem, _ = build_problem(view, times, units, np.arange(len(where)))
    problem.gpu_base = 0.0  # every activated expert is a candidate here, resident ones included
    for i in resident:  # already in GPU memory: no copy, no DIMM hold
        problem.fetch_time[i] = 0.0
        if problem.fetch_hold:
            problem.fetch_hold[i] = 0.0
    on_gpu = [w != NDP for w in where]
    best = makespan(problem, on_gpu)
    while True:
        pick = -1
        for i in resident:
            if not on_gpu[i]:
                continue
            on_gpu[i] = False
            t = makespan(problem, on_gpu)
            on_gpu[i] = True
            if t < best - EPS:
                best, pick = t, i
        if pick < 0:
            break
        on_gpu[pick] = False
    return [NDP if w == GPU_RESIDENT and not g else w for w, g in zip(where, on_gpu, strict=True)]


def offload_first(where: list[int], m: int) -> list[int]:
    """`where` with its first `m` GPU_RESIDENT experts sent to NDP (the memoised decode case,
    where identical candidates make the choice of which ones irrelevant to the time)."""
    out = list(where)
    for i, w in enumerate(where):
        if m <= 0:
            break
        if w == GPU_RESIDENT:
            out[i] = NDP
            m -= 1
    return out
