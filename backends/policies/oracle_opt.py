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
from ndpc.backends.policies.base import LayerDecision, LayerView
from ndpc.backends.policies.host_cpu import cpu_moves
from ndpc.backends.policies.offload import offload_resident


class OracleOptPolicy(BalancePolicy):
    """Balance's split + resident offload + host-CPU moves (`host_cpu.py`), on an oracle
    static residency."""

    NAME = "oracle_opt"
    ORACLE = True

    def dispatch(self, view: LayerView) -> LayerDecision:
        dec = super().dispatch(view)
        where = [int(w) for w in dec.where]
        times = self.times[view.plan.index]
        where = offload_resident(view, times, self.ctx.units, where)
        where = cpu_moves(view, times, self.ctx.units, self.ctx.target, where)
        return LayerDecision(where=np.array(where, dtype=np.uint8), moves=dec.moves)


POLICY = OracleOptPolicy
