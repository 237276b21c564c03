"""NDP-only dispatch (ablations `ep`, `tp`): every activated expert runs on its NDP shard units.

Experts already resident in GPU memory (static `moe.resident` or a prefetcher) still run on the
GPU: there is no reason to recompute them on NDP. Without residency this is pure NDP execution.
"""

from __future__ import annotations

import numpy as np

from ndpc.backends.policies.base import DispatchPolicy, LayerDecision, LayerView, Where


class NdpOnlyPolicy(DispatchPolicy):
    """Everything on NDP, except experts that are already in GPU memory."""

    NAME = "ndp_only"

    def dispatch(self, view: LayerView) -> LayerDecision:
        where = np.full(len(view.experts), int(Where.NDP), dtype=np.uint8)
        where[view.resident[view.experts]] = Where.GPU_RESIDENT
        return LayerDecision(where=where)


POLICY = NdpOnlyPolicy
