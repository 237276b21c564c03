"""Structured attributes of ndpc's IR: enums and frozen dataclasses, validated when built.

Every attribute class has a `MNEMONIC` (its textual name, `#ffn<...>`); fields print in declaration
order as `name = value`. Enums print as bare keywords (their `.value`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from ndpc.ir.types import DType


class RoutingRule(Enum):
    """How router logits become the k chosen experts and their weights."""

    SOFTMAX_TOPK = "softmax_topk"  # softmax over all experts, then top-k (Mixtral, Qwen, OLMoE)
    TOPK_SOFTMAX = "topk_softmax"  # top-k logits, softmax over those k (GPT-OSS)
    SIGMOID_GROUP_TOPK = "sigmoid_group_topk"  # sigmoid + bias, group-limited top-k (DeepSeek-V3)
    SPARSEMIXER = "sparsemixer"  # PhiMoE: masked softmax per slot, no TopK node
    TOP1_CAPACITY = "top1_capacity"  # Switch: argmax with an expert capacity factor


class Activation(Enum):
    SWIGLU = "swiglu"
    GEGLU = "geglu"
    RELU = "relu"
    GELU = "gelu"
    SILU = "silu"

    @property
    def gated(self) -> bool:
        """Gated activations have a gate and an up projection (3 matrices per expert)."""
        return self in (Activation.SWIGLU, Activation.GEGLU)


class NormKind(Enum):
    RMS = "rms"
    LAYER = "layer"


class AttentionKind(Enum):
    MHA = "mha"
    GQA = "gqa"
    MLA = "mla"  # DeepSeek multi-head latent attention: the KV cache holds a compressed latent


class DeviceKind(Enum):
    GPU = "gpu"
    NDP = "ndp"
    HOST = "host"


class ShardAxis(Enum):
    """How an expert's weights are cut across NDP units.

    `ffn`: Megatron-style, gate/up by columns and down by rows of d_ff; each unit emits a partial
    sum of the full output (needs a reduction). `none`: the whole expert lives on one unit.
    """

    NONE = "none"
    FFN = "ffn"


class ReduceSite(Enum):
    """Where the partial sums of a TP-split expert are added."""

    GPU = "gpu"  # partials cross the host link to the GPU
    NDP = "ndp"  # partials cross the inter-unit link to one NDP unit (the lowest of the shard set)


class DispatchRule(Enum):
    """The run-time rule that sends each activated expert to the GPU or to NDP units.

    One per policy family; the backend interprets it per layer and step, after the router.
    """

    NDP_ONLY = "ndp_only"  # every expert on its NDP shard set (ablations `ep`, `tp`)
    BALANCE = "balance"  # the paper's load-balancing-aware GPU/NDP split (Algorithm B)
    ONDEMAND = "ondemand"  # copy missing experts to the GPU after the router, no overlap
    LRU = "lru"  # ondemand with an LRU expert cache in GPU memory
    FIDDLER = "fiddler"  # resident on GPU, else min(host-CPU compute, copy + GPU)
    MONDE = "monde"  # top-N experts by tokens to the GPU, the rest on their home NDP unit
    DUPLEX = "duplex"  # by arithmetic intensity: few-token experts on NDP, many-token on GPU
    CTXAWARE = "ctxaware"  # prefill-pinned GPU set, the rest on NDP, no migration
    EPLB = "eplb"  # replicated hot experts, least-loaded replica
    ORACLE = "oracle"  # oracle-cache bound: balance split, Belady GPU cache filled one layer ahead
    MONDE_LB = "monde_lb"  # MoNDE with cost-model GPU/NDP balancing in decode too
    ORACLE_OPT = "oracle_opt"  # oracle-opt bound: rounds the optimum LP (backends/optimum.py)
    TRIMOE = "trimoe"  # TriMoE: hot -> GPU, warm -> host CPU, cold -> NDP, greedy makespan refine


class CounterSource(Enum):
    """What the dataset-free prefetcher counts."""

    PREFILL = "prefill"  # counts from the current request's prompt only
    PREFILL_DECODE = "prefill_decode"  # and keeps counting during decode (with hysteresis)


class CounterScope(Enum):
    """Whose routing counts rank the prefetcher's experts."""

    REQUEST = "request"  # the current request's (the paper's: its prompt, then its decode)
    ALL = "all"  # every request's so far (the batch's sequences share one GPU pool)


class PrefetchAllocation(Enum):
    """How the prefetch budget is shared among MoE layers."""

    LAYER = "layer"  # an equal quota of experts per layer (the paper's per-layer cap)
    GLOBAL = "global"  # one pool: the hottest (layer, expert) pairs by count per byte


class Attr:
    """Base class of structured attributes."""

    MNEMONIC: ClassVar[str]


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class FfnAttr(Attr):
    """Shape and numerics of one expert (or dense MLP): d_model × d_ff with an activation."""

    MNEMONIC: ClassVar[str] = "ffn"
    d_model: int
    d_ff: int
    activation: Activation
    bias: bool
    dtype: DType
    quant_block: int = 0  # block size of block-wise quantisation (QMoE); 0 = per-channel / none
    clamp: float = 0.0  # SwiGLU clamp limit (GPT-OSS); 0 = none

    def __post_init__(self) -> None:
        _positive("d_model", self.d_model)
        _positive("d_ff", self.d_ff)
        if self.quant_block < 0 or self.clamp < 0:
            raise ValueError("quant_block and clamp must be non-negative")

    @property
    def matrices(self) -> int:
        return 3 if self.activation.gated else 2

    @property
    def params(self) -> int:
        biases = (self.matrices - 1) * self.d_ff + self.d_model if self.bias else 0
        return self.matrices * self.d_model * self.d_ff + biases

    @property
    def weight_bytes(self) -> int:
        """Bytes of one expert's weights (scales of quantised formats not counted)."""
        return int(self.params * self.dtype.nbytes)

    def flops_per_token(self) -> int:
        """Multiply-adds × 2 for one token through the expert."""
        return 2 * self.matrices * self.d_model * self.d_ff


@dataclass(frozen=True)
class RouterAttr(Attr):
    """The routing rule of one MoE layer."""

    MNEMONIC: ClassVar[str] = "router"
    rule: RoutingRule
    k: int
    renormalize: bool
    groups: int = 1  # expert groups (DeepSeek-V3 n_group)
    topk_groups: int = 1  # groups kept before the final top-k
    capacity_factor: float = 0.0  # top-1 with capacity (Switch); 0 = unlimited

    def __post_init__(self) -> None:
        _positive("k", self.k)
        _positive("groups", self.groups)
        if not 1 <= self.topk_groups <= self.groups:
            raise ValueError(f"topk_groups must be in 1..groups, got {self.topk_groups}")
        if self.capacity_factor < 0:
            raise ValueError("capacity_factor must be non-negative")


@dataclass(frozen=True)
class ShardSpec(Attr):
    """How one expert is split: `degree` shards on NDP `units` (len(units) == degree)."""

    MNEMONIC: ClassVar[str] = "tp"
    degree: int
    units: tuple[int, ...]
    axis: ShardAxis
    reduce: ReduceSite

    def __post_init__(self) -> None:
        _positive("degree", self.degree)
        if len(self.units) != self.degree:
            raise ValueError(f"degree {self.degree} needs {self.degree} units, got {self.units}")
        if len(set(self.units)) != len(self.units):
            raise ValueError(f"units repeat in {self.units}")
        if self.degree > 1 and self.axis is ShardAxis.NONE:
            raise ValueError("degree > 1 needs axis = ffn")


@dataclass(frozen=True)
class ShardTable(Attr):
    """One `ShardSpec` per expert of a layer (index = expert id).

    The printer run-length encodes equal neighbours (`[0:128] = #tp<...>`), so a uniform split of
    128 experts is one line; `--expand` prints every expert.
    """

    MNEMONIC: ClassVar[str] = "shards"
    specs: tuple[ShardSpec, ...]

    def runs(self) -> list[tuple[int, int, ShardSpec]]:
        """Maximal runs [start, stop) of equal specs, in expert order."""
        out: list[tuple[int, int, ShardSpec]] = []
        for i, spec in enumerate(self.specs):
            if out and out[-1][2] == spec:
                out[-1] = (out[-1][0], i + 1, spec)
            else:
                out.append((i, i + 1, spec))
        return out


@dataclass(frozen=True)
class DispatchAttr(Attr):
    """Parameters of the run-time dispatch rule (unused fields keep their defaults)."""

    MNEMONIC: ClassVar[str] = "dispatch"
    rule: DispatchRule
    gpu_slots: int = 0  # MoNDE top-N / fixed GPU expert count; 0 = chosen by the rule
    token_threshold: int = 0  # Duplex/Fiddler: tokens from which to the GPU; 0 = cost model
    replan_interval: int = 0  # steps between re-plans of the static part; 0 = never
    drift_threshold: float = 0.0  # re-plan when popularity drift (L1 distance) exceeds this
    offload_resident: bool = False  # balance: GPU-resident experts may run on NDP (ndpc policy)
    host_cpu: bool = (
        False  # balance: NDP experts may run on the host CPU (ndpc policy); trimoe: CPU tier
    )
    refine: bool = True  # trimoe: bottleneck-aware greedy refinement after the classification

    def __post_init__(self) -> None:
        if min(self.gpu_slots, self.token_threshold, self.replan_interval) < 0:
            raise ValueError("dispatch counts must be non-negative")
        if self.drift_threshold < 0:
            raise ValueError("drift_threshold must be non-negative")


@dataclass(frozen=True)
class PrefetchAttr(Attr):
    """The dataset-free prefetcher: counters choose the hot experts copied to GPU memory."""

    MNEMONIC: ClassVar[str] = "prefetch"
    budget_bytes: int  # GPU memory for prefetched experts, all layers together
    source: CounterSource
    hysteresis: float = 1.0  # a candidate replaces a resident expert once its count exceeds by this
    min_count: int = 1  # experts used fewer times than this are never prefetched
    allocation: PrefetchAllocation = PrefetchAllocation.LAYER
    payback: bool = False  # copy a pair only once its past uses cost a copy's time (ski rental)
    scope: CounterScope = CounterScope.REQUEST

    def __post_init__(self) -> None:
        if self.budget_bytes < 0:
            raise ValueError("budget_bytes must be non-negative")
        if self.hysteresis < 0 or self.min_count < 0:
            raise ValueError("hysteresis and min_count must be non-negative")
