"""`prefetch`: install the dataset-free prefetcher (Algorithm C) as a module-level policy.

Before -> after: adds `moe.prefetch_policy {policy = #prefetch<budget_bytes, source, hysteresis,
min_count>}` (replacing an earlier one). No calibration data is read: at run time
(`backends/policies/prefetcher.py`) the current request's own prefill counts choose, per MoE
layer, the hottest experts to copy to GPU memory within the budget; with `source=prefill_decode`
decode keeps counting and swaps experts with hysteresis. `allocation=global` shares the budget
as one pool over all layers instead of an equal quota per layer (`ndpc` policy; docs/passes.md). The budget defaults to what the target's
GPU memory leaves after the dense weights, the KV cache of `context` tokens and working space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from ndpc.backends.emit_dense import expert_budget_bytes
from ndpc.compiler.passes.base import ModulePass, PassContext
from ndpc.ir.attrs import CounterSource, PrefetchAllocation, PrefetchAttr
from ndpc.ir.core import Module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import PrefetchPolicyOp

GIB = 1 << 30


@dataclass(frozen=True)
class PrefetchPass(ModulePass):
    """Copy each request's hot experts (counted in its own prefill) to GPU memory within a budget."""

    name: ClassVar[str] = "prefetch"
    budget_gib: float | None = field(
        default=None,
        metadata={"doc": "GPU memory for prefetched experts in GiB (auto: what the target leaves)"},
    )
    source: str = field(
        default="prefill_decode",
        metadata={"doc": "counters: prefill (prompt only) or prefill_decode (keep counting)"},
    )
    hysteresis: float = field(
        default=2.0, metadata={"doc": "count margin a newcomer needs to evict a resident expert"}
    )
    min_count: int = field(default=1, metadata={"doc": "never prefetch experts used fewer times"})
    context: int = field(
        default=4096, metadata={"doc": "KV-cache tokens reserved when deriving the budget"}
    )
    allocation: str = field(
        default="layer",
        metadata={"doc": "budget sharing: layer (equal quota per layer) or global (one pool)"},
    )

    def run(self, module: Module, ctx: PassContext) -> Module:
        try:
            source = CounterSource(self.source)
        except ValueError:
            choices = ", ".join(c.value for c in CounterSource)
            raise NdpcError(
                f"prefetch: source must be one of {choices}, got '{self.source}'"
            ) from None
        try:
            allocation = PrefetchAllocation(self.allocation)
        except ValueError:
            choices = ", ".join(a.value for a in PrefetchAllocation)
            raise NdpcError(
                f"prefetch: allocation must be one of {choices}, got '{self.allocation}'"
            ) from None
        if self.budget_gib is not None and self.budget_gib < 0:
            raise NdpcError(f"prefetch: budget-gib must be >= 0, got {self.budget_gib}")
        if self.context < 0:
            raise NdpcError(f"prefetch: context must be >= 0, got {self.context}")
        budget = self._budget(module, ctx)
        policy = PrefetchAttr(
            budget, source, float(self.hysteresis), int(self.min_count), allocation
        )
        decls = [op for op in module.decls if not isinstance(op, PrefetchPolicyOp)]
        decls.append(PrefetchPolicyOp(policy=policy))
        return dataclasses.replace(module, decls=tuple(decls))

    def _budget(self, module: Module, ctx: PassContext) -> int:
        if self.budget_gib is not None:
            return int(self.budget_gib * GIB)
        target = ctx.require_target(self.name)
        return expert_budget_bytes(module, int(target.gpu_memory_bytes), self.context)
