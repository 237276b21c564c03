"""`balance`: install the paper's load-balancing-aware GPU/NDP dispatch (Algorithm B).

Before -> after, per MoE layer (after tp-split):

    %p = moe.expert_shards(%hb, %route)        %d = moe.dispatch(%route) {dispatch = #dispatch<
                                        ->          rule = balance, replan_interval, drift_threshold>}
                                               %p = moe.expert_shards(%hb, %d) {shards = packed}

The run-time rule (`backends/policies/balance.py`) splits each step's activated experts between
the GPU (resident, or fetched over the host link) and the NDP units with the cost model. The
static part is done here: shards of experts whose degree is below the unit count are packed onto
units by LPT on expected load (uniform popularity at compile time: no data set), so every unit
holds an equal share; at run time the rule re-packs when observed popularity drifts by more than
`drift-threshold` (L1 distance), checked every `replan-interval` decode steps (0 = never), and
the weight moves are charged in the schedule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ndpc.backends.static_placement import pack_shards
from ndpc.compiler.passes.base import MAX_COUNT, ModulePass, PassContext, option
from ndpc.ir.attrs import DispatchAttr, DispatchRule, ShardSpec, ShardTable
from ndpc.ir.core import Func, Module, Op, Value
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import BroadcastOp, DispatchOp, ExpertShardsOp, RouterOp
from ndpc.ir.rewrite import replace_uses_iter


@dataclass(frozen=True)
class BalancePass(ModulePass):
    """Split each step's activated experts between GPU and NDP units by the cost model (run-time rule + static shard packing)."""

    name: ClassVar[str] = "balance"
    needs_shards: ClassVar[bool] = True
    replan_interval: int = option(
        64, "decode steps between drift checks (0: never re-plan)", lo=0, hi=MAX_COUNT
    )
    drift_threshold: float = option(
        0.5, "re-pack a layer when its popularity moved this far (L1)", lo=0
    )
    offload_resident: bool = option(
        False, "let GPU-resident experts run on NDP when that shortens the layer"
    )
    host_cpu: bool = option(
        False, "let NDP experts run on the host CPU when that shortens the layer"
    )

    def run(self, module: Module, ctx: PassContext) -> Module:
        if not module.ops_of(ExpertShardsOp):
            raise NdpcError(
                f"balance: module @{module.name} has no expert shards; run tp-split first",
                module.loc,
            )
        attr = DispatchAttr(
            DispatchRule.BALANCE,
            replan_interval=self.replan_interval,
            drift_threshold=self.drift_threshold,
            offload_resident=bool(self.offload_resident),
            host_cpu=bool(self.host_cpu),
        )
        funcs = tuple(_rewrite(f, attr) for f in module.funcs)
        return dataclasses.replace(module, funcs=funcs)


def _rewrite(func: Func, attr: DispatchAttr) -> Func:
    routes: set[Value] = set()
    reach: dict[Value, tuple[int, ...]] = {}  # broadcast result -> its units
    mapping: dict[Value, Value] = {}
    ops: list[Op] = []
    for op in replace_uses_iter(func.ops, mapping):
        if isinstance(op, DispatchOp):  # an earlier dispatch rule is replaced
            mapping[op.result] = op.operands[0]
            continue
        if isinstance(op, RouterOp):
            routes.add(op.result)
        elif isinstance(op, BroadcastOp):
            reach[op.result] = op.units
        elif isinstance(op, ExpertShardsOp) and op.operands[1] in routes:
            route = op.operands[1]
            d = Value(route.type, f"l{op.layer}_dispatch")
            ops.append(DispatchOp(operands=(route,), results=(d,), loc=op.loc, layer=op.layer,
                                  dispatch=attr))  # fmt: skip
            units = reach.get(op.operands[0]) or _all_units(op)
            op = dataclasses.replace(op, operands=(op.operands[0], d), shards=_packed(op, units))
        ops.append(op)
    return dataclasses.replace(func, ops=tuple(ops))


def _all_units(op: ExpertShardsOp) -> tuple[int, ...]:
    return tuple(sorted({u for s in op.shards.specs for u in s.units}))


def _packed(op: ExpertShardsOp, units: tuple[int, ...]) -> ShardTable:
    """Re-pack partially split experts over `units` by LPT on uniform expected load."""
    specs = op.shards.specs
    degrees = [s.degree for s in specs]
    if min(degrees) >= len(units):
        return op.shards
    slot = {u: i for i, u in enumerate(units)}
    current = [tuple(slot[u] for u in s.units if u in slot) for s in specs]
    load = [float(op.ffn.weight_bytes)] * len(specs)
    placed = pack_shards(degrees, load, len(units), current)
    return ShardTable(
        tuple(
            ShardSpec(s.degree, tuple(units[i] for i in p), s.axis, s.reduce)
            for s, p in zip(specs, placed, strict=True)
        )
    )
