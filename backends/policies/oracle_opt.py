"""`oracle-opt`: an offline schedule that rounds the optimum LP's choices (docs/optimum.md).

The LP of `ndpc.backends.optimum` says what the best schedule does on a target: keep the experts
the trace uses most in GPU memory from the start (free static residency, chosen with foresight by
the pipeline's `fiddler-profile{calib=@trace}`), and per layer-step split the activated experts
over GPU (resident), NDP units and, where a long prefill leaves it time, the host CPU so that the
resources finish together. This policy is that rounding: per layer-step an integer split, found
greedily on the cost model's times (balance's split, resident experts offloaded to NDP while
that shortens the layer, then experts moved to the CPU while that shortens it). It sees the trace
only through the pipeline's static profile, but that profile is the evaluated trace: an oracle,
reported as a bound (`optimum_bound_s <= optimum <= oracle-opt's e2e`), never as a result.
"""

from __future__ import annotations

import numpy as np

from ndpc.backends.policies.balance import BalancePolicy
from ndpc.backends.policies.base import LayerDecision, LayerView, PolicyContext, Where
from ndpc.backends.policies.offload import offload_resident
from ndpc.backends.policies.split import build_problem, makespan
from ndpc.backends.target import resource_names

GPU_RESIDENT, GPU_FETCH, NDP, CPU = (int(Where.GPU_RESIDENT), int(Where.GPU_FETCH), int(Where.NDP),
                                     int(Where.CPU))  # fmt: skip
EPS = 1e-12
CPU_CANDIDATES = 12  # largest NDP experts tried on the CPU per move


class OracleOptPolicy(BalancePolicy):
    """Balance's split + resident offload + host-CPU moves, on an oracle static residency."""

    NAME = "oracle_opt"
    ORACLE = True

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self._cpu_memo: dict[tuple, int] = {}

    def dispatch(self, view: LayerView) -> LayerDecision:
        dec = super().dispatch(view)
        where = [int(w) for w in dec.where]
        times = self.times[view.plan.index]
        where = offload_resident(view, times, self.ctx.units, where)
        where = self._cpu_moves(view, where)
        return LayerDecision(where=np.array(where, dtype=np.uint8), moves=dec.moves)

    def _layer_time(self, view: LayerView, where: list[int]) -> float:
        """Estimated layer time: balance's GPU/NDP model for the non-CPU experts, the CPU path
        (inputs down, kernels one after another, last result up) for the others."""
        times = self.times[view.plan.index]
        counts = view.counts
        keep = [i for i, w in enumerate(where) if w != CPU]
        t = 0.0
        if keep:
            problem, _ = build_problem(view, times, self.ctx.units, np.asarray(keep))
            problem.gpu_base = 0.0
            for pos, i in enumerate(keep):
                if where[i] == GPU_RESIDENT:  # in GPU memory: no copy, no DIMM hold
                    problem.fetch_time[pos] = 0.0
                    if problem.fetch_hold:
                        problem.fetch_hold[pos] = 0.0
            t = makespan(problem, [where[i] != NDP for i in keep])
        cpu = [int(counts[i]) for i, w in enumerate(where) if w == CPU]
        if cpu:
            chain = times.act_down(cpu[0]) + sum(times.cpu(c) for c in cpu) + times.act_up(cpu[-1])
            t = max(t, chain)
        return t

    def _cpu_moves(self, view: LayerView, where: list[int]) -> list[int]:
        """Move NDP experts to the host CPU one at a time while the layer gets shorter."""
        if self.ctx.target is None or "cpu" not in resource_names(self.ctx.target):
            return where
        if GPU_FETCH in where:
            # the emitter queues CPU results on pcie.h2d ahead of the layer's weight copies
            # (one FIFO link): a CPU expert would hold every copy behind its kernel
            return where
        times = self.times[view.plan.index]
        units = len(view.placement.units(view.plan.index, int(view.experts[0])))
        # a one-token expert on the CPU never pays off next to its NDP shards; skip the search
        if view.tokens == 1 and times.cpu(1) > times.ndp(1, units) * len(where):
            return where
        best = self._layer_time(view, where)
        while True:
            ndp = [i for i, w in enumerate(where) if w == NDP]
            ndp.sort(key=lambda i: (-int(view.counts[i]), i))
            pick = -1
            for i in ndp[:CPU_CANDIDATES]:
                where[i] = CPU
                t = self._layer_time(view, where)
                where[i] = NDP
                if t < best - EPS:
                    best, pick = t, i
            if pick < 0:
                return where
            where[pick] = CPU


POLICY = OracleOptPolicy
