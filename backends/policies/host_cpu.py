"""Host-CPU moves for `balance{host-cpu=true}` (part of the `ndpc` policy) and `oracle-opt`.

The split of `balance` uses two resources, the GPU and the NDP units. The host CPU is a third:
an expert runs there on its inputs sent down and its result sent up (`pcie.d2h`/`pcie.h2d`), its
kernel reading the weights from host memory. The optimum LP (docs/optimum.md) uses it whenever
the NDP side is the bottleneck of a layer. Rule: after the GPU/NDP split, repeatedly move to the
CPU the NDP expert (of the CPU_CANDIDATES with the most tokens) whose move shortens the layer most
(`split.makespan` for the GPU/NDP part, the CPU chain down + kernels + up for the rest), until
none does. In a layer that fetches (prefill), the CPU takes the NDP experts with the most tokens
and the rest is split again (`_resplit`). In such a layer the emitter issues the CPU work last,
so the CPU results queue on `pcie.h2d` (one FIFO link) behind the layer's weight copies and
partial sums (never ahead of them, where they would hold every copy behind a CPU kernel); in a
layer without copies it issues it first (the results then go up before the partial sums).
Causal: uses only the current layer's router output and the residency. O(c k (k + N)) per move
for c candidates, k activated experts and N units.
"""

from __future__ import annotations

import numpy as np

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import LayerView, Where
from ndpc.backends.policies.split import build_problem, greedy_split, makespan
from ndpc.backends.target import resource_names

GPU_RESIDENT, GPU_FETCH, NDP, CPU = (int(Where.GPU_RESIDENT), int(Where.GPU_FETCH), int(Where.NDP),
                                     int(Where.CPU))  # fmt: skip
EPS = 1e-12  # seconds: a move must shorten the layer by more than this
CPU_CANDIDATES = 12  # largest NDP experts tried on the CPU per move
STOP = 0.05  # the prefill scan stops once a layer is this much longer than the best


def layer_time(view: LayerView, times: ExpertTimes, units: int, where: list[int]) -> float:
    """Estimated layer time: balance's GPU/NDP model for the non-CPU experts, the CPU path
    (inputs down, kernels one after another, last result up) for the others."""
    counts = view.counts
    keep = [i for i, w in enumerate(where) if w != CPU]
    t = 0.0
    if keep:
        problem, _ = build_problem(view, times, units, np.asarray(keep))
        problem.gpu_base = 0.0
        for pos, i in enumerate(keep):
            if where[i] == GPU_RESIDENT:  # in GPU memory: no copy, no DIMM hold
                problem.fetch_time[pos] = 0.0
                if problem.fetch_hold:
                    problem.fetch_hold[pos] = 0.0
        t = makespan(problem, [where[i] != NDP for i in keep])
    cpu = [int(counts[i]) for i, w in enumerate(where) if w == CPU]
    if cpu:
        done = times.act_down(cpu[0]) + sum(times.cpu(c) for c in cpu)
        if GPU_FETCH in where:
            # the results queue on pcie.h2d behind the layer's copies and partial sums
            t = max(t, done) + sum(times.act_up(c) for c in cpu)
        else:
            t = max(t, done + times.act_up(cpu[-1]))
    return t


def cpu_moves(
    view: LayerView, times: ExpertTimes, units: int, target, where: list[int]
) -> list[int]:
    """`where` with NDP experts moved to the host CPU one at a time while the layer shortens."""
    if target is None or "cpu" not in resource_names(target) or NDP not in where:
        return where
    if GPU_FETCH in where:
        return _resplit(view, times, units, where)
    shards = len(view.placement.units(view.plan.index, int(view.experts[0])))
    # a one-token expert on the CPU never pays off next to its NDP shards; skip the search
    if view.tokens == 1 and times.cpu(1) > times.ndp(1, shards) * len(where):
        return where
    where = list(where)
    best = layer_time(view, times, units, where)
    while True:
        ndp = [i for i, w in enumerate(where) if w == NDP]
        ndp.sort(key=lambda i: (-int(view.counts[i]), i))
        pick = -1
        for i in ndp[:CPU_CANDIDATES]:
            where[i] = CPU
            t = layer_time(view, times, units, where)
            where[i] = NDP
            if t < best - EPS:
                best, pick = t, i
        if pick < 0:
            return where
        where[pick] = CPU


def _resplit(view: LayerView, times: ExpertTimes, units: int, where: list[int]) -> list[int]:
    """A layer that fetches (prefill): moving one NDP expert to the CPU does not shorten it while
    the host link, busy with the copies, is as long as the NDP side. So the CPU takes the p NDP
    experts with the most tokens and the rest is split again between GPU and NDP (balance's
    `greedy_split`); p grows while the layer gets shorter."""
    counts = view.counts
    ndp = sorted((i for i, w in enumerate(where) if w == NDP), key=lambda i: (-int(counts[i]), i))
    free = [i for i, w in enumerate(where) if w in (NDP, GPU_FETCH)]
    best, best_t = where, layer_time(view, times, units, where)
    for p in range(1, len(ndp) + 1):
        on_cpu = set(ndp[:p])
        cpu_done = times.act_down(int(counts[ndp[0]])) + sum(
            times.cpu(int(counts[i])) for i in on_cpu
        )
        if cpu_done >= best_t:
            break
        rest = [i for i in free if i not in on_cpu]
        trial = list(where)
        for i in on_cpu:
            trial[i] = CPU
        if rest:
            problem, _ = build_problem(view, times, units, np.asarray(rest))
            for i, g in zip(rest, greedy_split(problem), strict=True):
                trial[i] = GPU_FETCH if g else NDP
        t = layer_time(view, times, units, trial)
        if t < best_t - EPS:
            best, best_t = trial, t
        elif p > 1 and t > best_t * (1 + STOP):
            break
    return best
