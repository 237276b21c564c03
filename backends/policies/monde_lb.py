"""`monde-lb`: MoNDE with its GPU-NDP load balancing applied in decode as well as prefill.

MoNDE's published decode rule (as re-implemented: top `ceil(r * active)` experts to the GPU)
always copies at least one expert per layer step, even at batch 1 where no expert is hotter than
another and the copy costs more than computing near the data. This variant keeps everything else
of `monde` (expert parallelism, hottest-first order, cached experts first, LRU of copies) but picks
the number of GPU experts in every step by the cost model (the prefill rule of `monde`). It avoids
MoNDE's unconditional copies (faster on coarse-expert models, where a copy costs far more than NDP
compute) but also loses the cache hits those copies buy later (slower on fine-grained models); the
paper's advantage is reported against both and against the faster of the two.
"""

from __future__ import annotations

from ndpc.backends.policies.base import LayerView
from ndpc.backends.policies.monde import (
    MondePolicy,
    MondeSplit,
    hold_time,
    monde_prefill,
    source_units,
)


class MondeLbPolicy(MondePolicy):
    """`monde-lb`: MoNDE, GPU/NDP split by the cost model in every step."""

    NAME = "monde_lb"

    def split(self, view: LayerView, cached: set[int]) -> MondeSplit:
        index = view.plan.index
        t = self.times[index]
        tokens = {int(e): int(n) for e, n in zip(view.experts, view.counts, strict=True)}
        weight = {int(e): float(w) for e, w in zip(view.experts, view.weights, strict=True)}
        return monde_prefill(
            tokens, weight, cached, self.ctx.units, t.gpu, t.fetch(source_units(view.plan)),
            lambda n: t.ndp(n, 1), view.plan.dispatch.gpu_slots, hold_time(t),
        )  # fmt: skip


POLICY = MondeLbPolicy
