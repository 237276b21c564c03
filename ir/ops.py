"""The ops of ndpc's IR (the `moe` dialect). One small frozen dataclass per op.

Before passes a module describes the model: embedding, per decoder layer norms, attention with its
KV cache, a dense MLP or an MoE block (router + experts + optional shared experts), LM head.
Passes add devices, tensor-parallel shard tables, activation broadcasts, partial-sum reductions,
dispatch rules, GPU residency and the prefetch policy. `OPS` maps text names to classes.

Each op class declares its operand and result types in `SIGNATURE` (`ndpc.ir.signature`); the
verifier checks them, and `ndpc.ir.verifier_rules` adds what depends on attributes or other ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ndpc.ir.attrs import (
    AttentionKind,
    DeviceKind,
    DispatchAttr,
    FfnAttr,
    NormKind,
    PrefetchAttr,
    ReduceSite,
    RouterAttr,
    ShardTable,
)
from ndpc.ir.core import Op, SymbolRef
from ndpc.ir.signature import NO_VALUES, Is, SameAs, Signature
from ndpc.ir.types import DistributedType, DType, KvCacheType, RouteType, TensorType

# --- module-level declarations -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DeviceOp(Op):
    """A device of the target: the GPU, the host or one NDP unit (`index` counts NDP units)."""

    OP_NAME: ClassVar[str] = "moe.device"
    SIGNATURE: ClassVar[Signature] = NO_VALUES
    sym: SymbolRef
    kind: DeviceKind
    index: int = 0


@dataclass(frozen=True, kw_only=True)
class PrefetchPolicyOp(Op):
    """The dataset-free prefetch policy, applied at run time by the backend."""

    OP_NAME: ClassVar[str] = "moe.prefetch_policy"
    SIGNATURE: ClassVar[Signature] = NO_VALUES
    policy: PrefetchAttr


@dataclass(frozen=True, kw_only=True)
class ResidentOp(Op):
    """Experts of `layer` whose weights are in GPU memory from the start (static residency)."""

    OP_NAME: ClassVar[str] = "moe.resident"
    SIGNATURE: ClassVar[Signature] = NO_VALUES
    layer: int
    experts: tuple[int, ...]


# --- dense blocks --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EmbeddingOp(Op):
    """Token ids -> hidden states."""

    OP_NAME: ClassVar[str] = "moe.embedding"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(TensorType, "the token-id operand"),), results=(Is(TensorType),)
    )
    vocab: int
    d_model: int
    dtype: DType


@dataclass(frozen=True, kw_only=True)
class NormOp(Op):
    """RMSNorm / LayerNorm over d_model (`layer` = -1 for the final norm)."""

    OP_NAME: ClassVar[str] = "moe.norm"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(TensorType),), results=(SameAs(0),), same=True
    )
    layer: int
    kind: NormKind
    d_model: int


@dataclass(frozen=True, kw_only=True)
class KvCacheOp(Op):
    """The KV cache of one layer (its size grows with the sequence; see KvCacheType)."""

    OP_NAME: ClassVar[str] = "moe.kv_cache"
    SIGNATURE: ClassVar[Signature] = Signature(operands=(), results=(Is(KvCacheType),))
    layer: int


@dataclass(frozen=True, kw_only=True)
class AttentionOp(Op):
    """Self-attention incl. QKV/O projections, reading and appending to its KV cache."""

    OP_NAME: ClassVar[str] = "moe.attention"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(TensorType), Is(KvCacheType)), results=(SameAs(0),)
    )
    layer: int
    kind: AttentionKind
    d_model: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: DType
    kv_lora_rank: int = 0  # MLA latent width (0 for MHA/GQA)


@dataclass(frozen=True, kw_only=True)
class MlpOp(Op):
    """A dense (non-MoE) feed-forward block."""

    OP_NAME: ClassVar[str] = "moe.mlp"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(TensorType),), results=(SameAs(0),), same=True
    )
    layer: int
    ffn: FfnAttr


@dataclass(frozen=True, kw_only=True)
class AddOp(Op):
    """Residual addition."""

    OP_NAME: ClassVar[str] = "moe.add"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(TensorType), Is(TensorType)), results=(SameAs(0),), same=True
    )


@dataclass(frozen=True, kw_only=True)
class LmHeadOp(Op):
    """Hidden states -> vocabulary logits."""

    OP_NAME: ClassVar[str] = "moe.lm_head"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(TensorType),), results=(Is(TensorType),)
    )
    vocab: int
    d_model: int
    dtype: DType


@dataclass(frozen=True, kw_only=True)
class ReturnOp(Op):
    """Ends a function; its operands are the function's results."""

    OP_NAME: ClassVar[str] = "moe.return"
    SIGNATURE: ClassVar[Signature] = Signature(operands=None, results=())


# --- MoE blocks ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RouterOp(Op):
    """The gate of an MoE layer: hidden -> route (k experts and weights per token)."""

    OP_NAME: ClassVar[str] = "moe.router"
    SIGNATURE: ClassVar[Signature] = Signature(operands=(Is(TensorType),), results=(Is(RouteType),))
    layer: int
    experts: int
    router: RouterAttr


@dataclass(frozen=True, kw_only=True)
class ExpertsOp(Op):
    """The routed experts of an MoE layer, not yet placed: (hidden, route) -> hidden."""

    OP_NAME: ClassVar[str] = "moe.experts"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(TensorType), Is(RouteType, "the route operand")), results=(SameAs(0),)
    )
    layer: int
    experts: int
    ffn: FfnAttr


@dataclass(frozen=True, kw_only=True)
class SharedExpertsOp(Op):
    """Always-active shared experts (`gated`: scaled by a sigmoid gate, as in Qwen1.5-MoE)."""

    OP_NAME: ClassVar[str] = "moe.shared_experts"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(TensorType),), results=(SameAs(0),), same=True
    )
    layer: int
    count: int
    ffn: FfnAttr
    gated: bool = False


# --- after passes --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DispatchOp(Op):
    """Installs the run-time dispatch rule of a layer: route -> dispatched route."""

    OP_NAME: ClassVar[str] = "moe.dispatch"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(RouteType, "the route operand"),), results=(SameAs(0),), same=True
    )
    layer: int
    dispatch: DispatchAttr


@dataclass(frozen=True, kw_only=True)
class BroadcastOp(Op):
    """Activation transfer: hidden states from `src` to NDP `units` (-> distributed value)."""

    OP_NAME: ClassVar[str] = "moe.broadcast"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(TensorType),), results=(Is(DistributedType),)
    )
    layer: int
    src: SymbolRef
    units: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class ExpertShardsOp(Op):
    """The routed experts, split per `shards`: (distributed hidden, route) -> partial sums."""

    OP_NAME: ClassVar[str] = "moe.expert_shards"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(DistributedType), Is(RouteType, "the route operand")),
        results=(Is(DistributedType),),
    )
    layer: int
    experts: int
    ffn: FfnAttr
    shards: ShardTable


@dataclass(frozen=True, kw_only=True)
class ReduceOp(Op):
    """Sums the partial outputs of split experts at `site` and returns the result to the GPU."""

    OP_NAME: ClassVar[str] = "moe.reduce"
    SIGNATURE: ClassVar[Signature] = Signature(
        operands=(Is(DistributedType),), results=(Is(TensorType),)
    )
    layer: int
    site: ReduceSite


OPS: dict[str, type[Op]] = {
    cls.OP_NAME: cls
    for cls in (
        DeviceOp,
        PrefetchPolicyOp,
        ResidentOp,
        EmbeddingOp,
        NormOp,
        KvCacheOp,
        AttentionOp,
        MlpOp,
        AddOp,
        LmHeadOp,
        ReturnOp,
        RouterOp,
        ExpertsOp,
        SharedExpertsOp,
        DispatchOp,
        BroadcastOp,
        ExpertShardsOp,
        ReduceOp,
    )
}
