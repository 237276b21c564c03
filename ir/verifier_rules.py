"""Per-op verifier rules: what an op's `SIGNATURE` cannot state.

The verifier has already checked the op against its signature (operand and result counts and type
classes, `SameAs`, `same`); a rule adds the checks that relate types to attributes (`d_model`,
route `k`/`experts`, broadcast `units`) or to other ops (the layer of a route or KV cache). Each
rule takes the running verifier (typed `Checker`: `fail`, `width`, `unit_set`, `route_layer`,
`producer` and the declared `devices` / `ndp_units`) and one op.
`OP_CHECKS` maps op classes to their rule; docs/ir.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ndpc.ir import ops as o
from ndpc.ir.attrs import AttentionKind, DeviceKind, ReduceSite
from ndpc.ir.core import Op, Value
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.types import DistributedType, DType, RouteType, TensorType


class Checker(Protocol):
    """What a rule may use of the running verifier (`ndpc.ir.verifier._Verifier`)."""

    devices: dict[str, o.DeviceOp]
    ndp_units: set[int]
    producer: dict[Value, Op]

    def fail(self, op: Op | None, message: str) -> NdpcError: ...
    def width(self, op: Op, what: str, ty: TensorType, expected: int) -> None: ...
    def unit_set(self, op: Op, units: tuple[int, ...], what: str) -> None: ...
    def route_layer(self, op: Op, route: Value) -> RouteType: ...


Rule = Callable[[Checker, Any], None]  # (verifier, op of the rule's class)
OP_CHECKS: dict[type, Rule] = {}


def rule(cls: type) -> Callable[[Rule], Rule]:
    """Register `fn` as the verifier rule of op class `cls`."""

    def register(fn: Rule) -> Rule:
        OP_CHECKS[cls] = fn
        return fn

    return register


@rule(o.EmbeddingOp)
def _embedding(v: Checker, op: o.EmbeddingOp) -> None:
    # (tensor<...xi32> token ids) -> tensor<...x d_model x dtype>
    ids, out = op.operands[0].type, op.results[0].type
    if ids.dtype not in (DType.I32,):
        raise v.fail(op, "token ids must be i32")
    v.width(op, "the result", out, op.d_model)
    if out.dtype != op.dtype:
        raise v.fail(op, f"result element type must be {op.dtype.value}")


@rule(o.NormOp)
def _norm(v: Checker, op: o.NormOp) -> None:
    v.width(op, "the operand", op.operands[0].type, op.d_model)


@rule(o.AttentionOp)
def _attention(v: Checker, op: o.AttentionOp) -> None:
    # (hidden, kv cache of the same layer) -> hidden
    hidden, cache = op.operands[0].type, op.operands[1].type
    v.width(op, "operand #0", hidden, op.d_model)
    if op.heads % op.kv_heads:
        raise v.fail(op, f"heads ({op.heads}) must be a multiple of kv_heads ({op.kv_heads})")
    if op.kind is not AttentionKind.MLA and (cache.kv_heads, cache.head_dim) != (
        op.kv_heads,
        op.head_dim,
    ):
        raise v.fail(op, "kv cache type must match kv_heads and head_dim")
    if op.kind is AttentionKind.MLA and op.kv_lora_rank <= 0:
        raise v.fail(op, "mla attention needs kv_lora_rank > 0")
    source = v.producer.get(op.operands[1])
    if isinstance(source, o.KvCacheOp) and source.layer != op.layer:
        raise v.fail(op, f"uses the kv cache of layer {source.layer} in layer {op.layer}")


@rule(o.MlpOp)
def _mlp(v: Checker, op: o.MlpOp | o.SharedExpertsOp) -> None:
    v.width(op, "the operand", op.operands[0].type, op.ffn.d_model)


@rule(o.SharedExpertsOp)
def _shared(v: Checker, op: o.SharedExpertsOp) -> None:
    _mlp(v, op)


@rule(o.LmHeadOp)
def _lm_head(v: Checker, op: o.LmHeadOp) -> None:
    v.width(op, "the operand", op.operands[0].type, op.d_model)
    v.width(op, "the result", op.results[0].type, op.vocab)


@rule(o.RouterOp)
def _router(v: Checker, op: o.RouterOp) -> None:
    # hidden -> !moe.route<k = router.k, experts = experts>
    route = op.results[0].type
    if op.router.k > op.experts:
        raise v.fail(op, f"k = {op.router.k} exceeds experts = {op.experts}")
    if (route.k, route.experts) != (op.router.k, op.experts):
        raise v.fail(op, f"result must be !moe.route<k = {op.router.k}, experts = {op.experts}>")
    if op.experts % op.router.groups:
        raise v.fail(op, f"experts ({op.experts}) must divide into {op.router.groups} groups")


@rule(o.ExpertsOp)
def _experts(v: Checker, op: o.ExpertsOp) -> None:
    # (hidden, route) -> hidden
    v.width(op, "operand #0", op.operands[0].type, op.ffn.d_model)
    route = v.route_layer(op, op.operands[1])
    if route.experts != op.experts:
        raise v.fail(op, f"route has {route.experts} experts, op has {op.experts}")


@rule(o.DispatchOp)
def _dispatch(v: Checker, op: o.DispatchOp) -> None:
    # route -> route (same type): installs the run-time rule
    v.route_layer(op, op.operands[0])


@rule(o.BroadcastOp)
def _broadcast(v: Checker, op: o.BroadcastOp) -> None:
    # tensor on @src -> !moe.dist<tensor = T, units = len(units)>
    if op.src.name not in v.devices:
        raise v.fail(op, f"source @{op.src.name} is not a declared device")
    if not op.units:
        raise v.fail(op, "broadcasts to no NDP unit")
    v.unit_set(op, op.units, "units")
    if op.results[0].type != DistributedType(op.operands[0].type, len(op.units), False):
        raise v.fail(op, f"result must be !moe.dist<tensor = ..., units = {len(op.units)}>")


@rule(o.ExpertShardsOp)
def _expert_shards(v: Checker, op: o.ExpertShardsOp) -> None:
    # (dist hidden, route) -> !moe.dist<..., partial = true>: one #tp spec per expert
    hidden = op.operands[0].type
    v.width(op, "operand #0's tensor", hidden.tensor, op.ffn.d_model)
    route = v.route_layer(op, op.operands[1])
    if route.experts != op.experts:
        raise v.fail(op, f"route has {route.experts} experts, op has {op.experts}")
    if len(op.shards.specs) != op.experts:
        raise v.fail(op, f"shard table has {len(op.shards.specs)} specs for {op.experts} experts")
    source = v.producer.get(op.operands[0])
    reach = set(source.units) if isinstance(source, o.BroadcastOp) else None
    for expert, spec in enumerate(op.shards.specs):
        v.unit_set(op, spec.units, f"expert {expert}'s shards")
        if reach is not None and not reach.issuperset(spec.units):
            raise v.fail(op, f"expert {expert} runs on units the activations were not sent to")
    if op.results[0].type != DistributedType(hidden.tensor, hidden.units, True):
        raise v.fail(op, "result must be operand #0's type with partial = true")


@rule(o.ReduceOp)
def _reduce(v: Checker, op: o.ReduceOp) -> None:
    # !moe.dist<tensor = T, partial = true> -> T (summed at `site`, returned to the GPU)
    dist = op.operands[0].type
    if not dist.partial:
        raise v.fail(op, "operand must hold partial sums (partial = true)")
    if op.results[0].type != dist.tensor:
        raise v.fail(op, "result must be the operand's tensor type")
    if op.site is ReduceSite.NDP and not v.ndp_units:
        raise v.fail(op, "reduces on NDP but no NDP unit is declared")


@rule(o.DeviceOp)
def _device(v: Checker, op: o.DeviceOp) -> None:
    if op.kind is not DeviceKind.NDP and op.index != 0:
        raise v.fail(op, "only NDP devices take an index")
