"""`tp-split`: tensor-parallel split of every routed expert across the NDP units (Algorithm A).

Before -> after, per MoE layer:

    %y = moe.experts(%h, %route)                      %hb = moe.broadcast(%h) {src = @gpu, units}
                                            ->        %p  = moe.expert_shards(%hb, %route) {shards}
                                                      %y  = moe.reduce(%p) {site}

Each expert's gate and up projections are split by columns and its down projection by rows
(Megatron MLP split), so each of its `degree` shards produces a partial sum of the output. The
shard table gives each expert its degree and units (round-robin start so every unit gets the same
number of shards); the reduction site is GPU (partials over the host link) or one NDP unit
(partials over the inter-unit link, one result to the GPU), whichever the cost model makes faster.
`degree=auto` lets the cost model pick the degree per layer from the expected decode time of a
layer (k random experts: the busiest unit's shard work + broadcast + partial-sum return). Shards
must fit each unit's memory; otherwise the pass fails naming the need and the capacity.
Module-level `moe.device` declarations for @gpu, @host and @ndp0.. are added when missing.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import ClassVar

from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.target import Target
from ndpc.compiler.passes.base import MAX_UNITS, ModulePass, PassContext, option
from ndpc.ir.attrs import (
    DeviceKind,
    ReduceSite,
    ShardAxis,
    ShardSpec,
    ShardTable,
)
from ndpc.ir.core import Func, Module, Op, SymbolRef, Value
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import BroadcastOp, DeviceOp, ExpertShardsOp, ExpertsOp, ReduceOp, RouterOp
from ndpc.ir.rewrite import replace_uses_iter
from ndpc.ir.types import DistributedType, TensorType

GIB = 1 << 30
SAMPLES = 256  # Monte-Carlo draws of k activated experts when estimating a degree's layer time


def ensure_devices(module: Module, units: int) -> Module:
    """`module` with @gpu, @host and @ndp0..@ndp{units-1} declared (existing ones are kept)."""
    have = {op.sym.name for op in module.decls if isinstance(op, DeviceOp)}
    new: list[Op] = []
    if "gpu" not in have:
        new.append(DeviceOp(sym=SymbolRef("gpu"), kind=DeviceKind.GPU))
    if "host" not in have:
        new.append(DeviceOp(sym=SymbolRef("host"), kind=DeviceKind.HOST))
    for i in range(units):
        if f"ndp{i}" not in have:
            new.append(DeviceOp(sym=SymbolRef(f"ndp{i}"), kind=DeviceKind.NDP, index=i))
    if not new:
        return module
    devices = [op for op in module.decls if isinstance(op, DeviceOp)]
    rest = [op for op in module.decls if not isinstance(op, DeviceOp)]
    return dataclasses.replace(module, decls=(*devices, *new, *rest))


def round_robin_units(expert: int, degree: int, units: int) -> tuple[int, ...]:
    """Units of `expert`'s shards: `degree` consecutive units starting at expert * degree mod N."""
    start = (expert * degree) % units
    return tuple(sorted((start + j) % units for j in range(degree)))


def reduce_time(times: ExpertTimes, used: int, site: ReduceSite, tokens: int = 1) -> float:
    """Time to bring `used` units' partial sums to the GPU, reducing at `site`."""
    if used <= 0:
        return 0.0
    if site is ReduceSite.NDP:
        return (used - 1) * times.act_link(tokens) + times.act_up(tokens)
    return used * times.act_up(tokens)


def choose_site(times: ExpertTimes, units: int, has_link: bool) -> ReduceSite:
    """GPU or NDP reduction, whichever returns `units` partial sums to the GPU sooner."""
    if not has_link or units <= 1:
        return ReduceSite.GPU
    ndp = reduce_time(times, units, ReduceSite.NDP)
    return ReduceSite.NDP if ndp < reduce_time(times, units, ReduceSite.GPU) else ReduceSite.GPU


def expected_layer_time(
    times: ExpertTimes, experts: int, k: int, degree: int, units: int, site: ReduceSite, seed: int
) -> float:
    """Expected decode time of one layer on NDP with every expert split `degree` ways."""
    rng = random.Random(seed)
    shard = times.ndp(1, degree)
    placed = [round_robin_units(e, degree, units) for e in range(experts)]
    total = 0.0
    for _ in range(SAMPLES):
        loads = [0] * units
        for e in rng.sample(range(experts), min(k, experts)):
            for u in placed[e]:
                loads[u] += 1
        used = sum(1 for x in loads if x)
        total += max(loads) * shard + reduce_time(times, used, site)
    return times.act_down(1) + total / SAMPLES


def choose_degree(
    times: ExpertTimes, experts: int, k: int, units: int, has_link: bool, seed: int
) -> tuple[int, ReduceSite, dict[int, float]]:
    """The degree (1..units) with the least expected layer time, its site, and every estimate."""
    estimates: dict[int, float] = {}
    sites: dict[int, ReduceSite] = {}
    for d in range(1, units + 1):
        sites[d] = choose_site(times, units, has_link)
        estimates[d] = expected_layer_time(times, experts, k, d, units, sites[d], seed)
    best = min(estimates, key=lambda d: (estimates[d], -d))
    return best, sites[best], estimates


@dataclass(frozen=True)
class TpSplitPass(ModulePass):
    """Split each routed expert across NDP units (gate/up by columns, down by rows); add broadcast and reduction."""

    name: ClassVar[str] = "tp-split"
    makes_shards: ClassVar[bool] = True
    units: int | None = option(
        None, "NDP units to split over (auto: the target's unit count)", lo=1, hi=MAX_UNITS
    )
    degree: int | None = option(
        None, "shards per expert, 1..units (auto: cost model's pick per layer)", lo=1, hi=MAX_UNITS
    )
    reduce: ReduceSite | None = option(
        None, "where partial sums are added: gpu or ndp (auto: the cost model's pick)"
    )

    def needs_target(self) -> str | None:
        return "units=N" if self.units is None else None

    def run(self, module: Module, ctx: PassContext) -> Module:
        target = ctx.target
        units = self.units if self.units is not None else _target_units(target)
        if units < 1:
            raise NdpcError(f"tp-split: units must be >= 1, got {units}")
        if target is not None and units > target.ndp_units:
            raise NdpcError(
                f"tp-split: units={units} but target {target.name} has {target.ndp_units} NDP "
                f"unit(s) (--set ndp.units={units} to model more)"
            )
        if self.degree is not None and not 1 <= self.degree <= units:
            raise NdpcError(f"tp-split: degree must be in 1..{units}, got {self.degree}")
        has_link = target is not None and target.has_ndp_link
        if self.reduce is ReduceSite.NDP and target is not None and not has_link:
            raise NdpcError(
                f"tp-split: reduce=ndp needs an inter-unit link; {target.name} has none"
            )
        funcs = tuple(self._split_func(f, units, has_link, ctx) for f in module.funcs)
        out = ensure_devices(dataclasses.replace(module, funcs=funcs), units)
        _check_capacity(out, units, target)
        return out

    def _split_func(self, func: Func, units: int, has_link: bool, ctx: PassContext) -> Func:
        ops: list[Op] = []
        mapping: dict[Value, Value] = {}
        k_of: dict[int, int] = {}
        # the plan depends only on the expert shape, count and k: layers alike share one (a
        # 94-layer model with 16 units spent ~40 s re-drawing the same Monte-Carlo estimate)
        plans: dict[tuple, tuple[int, ReduceSite]] = {}
        for op in replace_uses_iter(func.ops, mapping):
            if isinstance(op, RouterOp):
                k_of[op.layer] = op.router.k
            if not isinstance(op, ExpertsOp):
                ops.append(op)
                continue
            key = (op.ffn, op.experts, k_of.get(op.layer, 1))
            if key not in plans:
                plans[key] = self._plan(op, key[2], units, has_link, ctx)
            degree, site = plans[key]
            ops.extend(_split_op(op, degree, units, site, mapping))
        return dataclasses.replace(func, ops=tuple(ops))

    def _plan(
        self, op: ExpertsOp, k: int, units: int, has_link: bool, ctx: PassContext
    ) -> tuple[int, ReduceSite]:
        if ctx.cost is None:  # no target: the paper's even split, partials to the GPU
            site = self.reduce or ReduceSite.GPU
            return (self.degree or units), site
        times = ExpertTimes(op.ffn, ctx.cost, op.ffn.dtype.nbytes)
        if self.degree is None:
            degree, site, _ = choose_degree(times, op.experts, k, units, has_link, ctx.seed)
        else:
            degree = self.degree
            site = choose_site(times, min(units, op.experts * degree), has_link)
        if self.reduce is not None:
            site = self.reduce
        return degree, site


def _split_op(
    op: ExpertsOp, degree: int, units: int, site: ReduceSite, mapping: dict[Value, Value]
) -> list[Op]:
    """broadcast -> expert_shards -> reduce replacing one `moe.experts` (records the new result)."""
    axis = ShardAxis.FFN if degree > 1 else ShardAxis.NONE
    specs = tuple(
        ShardSpec(degree, round_robin_units(e, degree, units), axis, site)
        for e in range(op.experts)
    )
    reach = tuple(sorted({u for s in specs for u in s.units}))
    hidden, route = op.operands
    assert isinstance(hidden.type, TensorType)
    hint = f"l{op.layer}"
    xb = Value(DistributedType(hidden.type, len(reach)), f"{hint}_xb")
    part = Value(DistributedType(hidden.type, len(reach), partial=True), f"{hint}_part")
    y = Value(hidden.type, f"{hint}_moe")
    mapping[op.result] = y
    return [
        BroadcastOp(
            operands=(hidden,), results=(xb,), loc=op.loc, layer=op.layer,
            src=SymbolRef("gpu"), units=reach,
        ),
        ExpertShardsOp(
            operands=(xb, route), results=(part,), loc=op.loc, layer=op.layer,
            experts=op.experts, ffn=op.ffn, shards=ShardTable(specs),
        ),
        ReduceOp(operands=(part,), results=(y,), loc=op.loc, layer=op.layer, site=site),
    ]  # fmt: skip


def _target_units(target: Target | None) -> int:
    if target is None:
        raise NdpcError("tp-split: give units=N or a target (--target) to take it from")
    return target.ndp_units


def unit_bytes(module: Module, units: int) -> list[float]:
    """Expert-weight bytes each NDP unit holds under the module's shard tables."""
    need = [0.0] * units
    for op in module.ops_of(ExpertShardsOp):
        assert isinstance(op, ExpertShardsOp)
        for spec in op.shards.specs:
            for u in spec.units:
                if u < units:
                    need[u] += op.ffn.weight_bytes / spec.degree
    return need


def _check_capacity(module: Module, units: int, target: Target | None) -> None:
    """Fail when a unit's shards exceed its memory (the target's `ndp_capacity_bytes`)."""
    if target is None:
        return
    capacity = float(target.ndp_capacity_bytes)
    need = unit_bytes(module, units)
    worst = max(range(units), key=lambda u: need[u])
    if need[worst] > capacity:
        total = sum(need)
        raise NdpcError(
            f"tp-split: expert shards need {_size(need[worst])} on NDP unit {worst} but "
            f"{target.name} units hold {_size(capacity)} ({_size(total)} of experts "
            f"over {units} units); use more units (--set ndp.units=N) or larger ones "
            f"(--set ndp.capacity_gib=G)"
        )


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"
