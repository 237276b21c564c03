"""`prefetch`: install the dataset-free prefetcher (Algorithm C) as a module-level policy.

Before -> after: adds `moe.prefetch_policy {policy = #prefetch<budget_bytes, source, hysteresis,
min_count>}` (replacing an earlier one). No calibration data is read: at run time
(`backends/policies/prefetcher.py`) the current request's own prefill counts choose, per MoE
layer, the hottest experts to copy to GPU memory within the budget; with `source=prefill_decode`
decode keeps counting and swaps experts with hysteresis. `allocation=global` shares the budget
as one pool over all layers instead of an equal quota per layer (`ndpc` policy; docs/passes.md);
`payback=true` copies a pair only once it has paid for itself (ski rental on the cost model) and
`scope=all` ranks by every request's counts. The budget defaults to what the target's
GPU memory leaves after the dense weights, the KV cache of `context` tokens and working space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ndpc.backends.emit_dense import expert_budget_bytes
from ndpc.compiler.passes.base import MAX_COUNT, MAX_GIB, ModulePass, PassContext, option
from ndpc.ir.attrs import CounterScope, CounterSource, PrefetchAllocation, PrefetchAttr
from ndpc.ir.core import Module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import PrefetchPolicyOp

GIB = 1 << 30


@dataclass(frozen=True)
class PrefetchPass(ModulePass):
    """Copy each request's hot experts (counted in its own prefill) to GPU memory within a budget."""

    name: ClassVar[str] = "prefetch"
    budget_gib: float | None = option(
        None, "GPU memory for prefetched experts in GiB (auto: what the target leaves)",
        lo=0, hi=MAX_GIB,
    )  # fmt: skip
    source: CounterSource = option(
        CounterSource.PREFILL_DECODE,
        "counters: prefill (prompt only) or prefill_decode (keep counting)",
    )
    hysteresis: float = option(
        2.0, "count margin a newcomer needs to evict a resident expert", lo=0
    )
    min_count: int = option(1, "never prefetch experts used fewer times", lo=0, hi=MAX_COUNT)
    context: int = option(
        4096, "KV-cache tokens reserved when deriving the budget", lo=0, hi=MAX_COUNT
    )
    allocation: PrefetchAllocation = option(
        PrefetchAllocation.LAYER,
        "budget sharing: layer (equal quota per layer) or global (one pool)",
    )
    payback: bool = option(
        False, "copy an expert only once its uses so far cost one copy's time more than on the GPU"
    )
    scope: CounterScope = option(
        CounterScope.REQUEST, "counts that rank experts: request (the current one's) or all"
    )

    def needs_target(self) -> str | None:
        return "budget-gib=N" if self.budget_gib is None else None

    def run(self, module: Module, ctx: PassContext) -> Module:
        if self.payback and self.allocation is not PrefetchAllocation.GLOBAL:
            raise NdpcError(
                "prefetch: payback=true needs allocation=global"
            )  # the pass manager points at this pass
        budget = self._budget(module, ctx)
        policy = PrefetchAttr(budget, self.source, float(self.hysteresis), int(self.min_count),
                              self.allocation, bool(self.payback), self.scope)  # fmt: skip
        decls = [op for op in module.decls if not isinstance(op, PrefetchPolicyOp)]
        decls.append(PrefetchPolicyOp(policy=policy))
        return dataclasses.replace(module, decls=tuple(decls))

    def _budget(self, module: Module, ctx: PassContext) -> int:
        if self.budget_gib is not None:
            return int(self.budget_gib * GIB)
        target = ctx.require_target(self.name)
        return expert_budget_bytes(module, int(target.gpu_memory_bytes), self.context)
