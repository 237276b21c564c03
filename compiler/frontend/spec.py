"""What the front end knows about a model before it becomes IR: plain frozen records.

Both paths into the IR fill these records: the ONNX importer (from a graph) and the zoo (from a
`ModelConfig`). `ndpc.compiler.frontend.builder.build_module` turns a `ModelSpec` into an IR module, so
there is one code path for IR construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ndpc.ir.attrs import AttentionKind, FfnAttr, NormKind, RouterAttr
from ndpc.ir.types import DType


@dataclass(frozen=True)
class AttentionSpec:
    """Self-attention of one decoder layer (shapes only)."""

    kind: AttentionKind
    heads: int
    kv_heads: int
    head_dim: int
    kv_lora_rank: int = 0  # MLA latent width
    kv_cache_dim: int = 0  # per-token cache width for MLA (latent + rope key); 0 = 2*kv*head_dim


@dataclass(frozen=True)
class MoeSpec:
    """The MoE block of one layer: router and routed experts (+ optional shared experts)."""

    experts: int
    router: RouterAttr
    ffn: FfnAttr
    shared_count: int = 0
    shared_ffn: FfnAttr | None = None  # one shared expert's shape
    shared_gated: bool = False
    form: str = ""  # which ONNX pattern it was recognised as (fused, gather-bmm, ...); "" = zoo
    weight_bits: int = 0  # QMoE expert weight bits (0 = the ffn dtype)


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer: attention (None when the graph has none) and a dense MLP or an MoE block.

    `locs` maps a role ("norm1", "attention", "norm2", "router", "experts", "shared", "mlp",
    "add1", "add2", "kv") to the ONNX node name it came from; missing roles use `anchor`.
    """

    index: int
    attention: AttentionSpec | None
    mlp: FfnAttr | None = None
    moe: MoeSpec | None = None
    norm: NormKind = NormKind.RMS
    anchor: str = ""
    locs: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def kind(self) -> str:
        """ "moe" or "dense"."""
        return "moe" if self.moe is not None else "dense"

    def loc_name(self, role: str) -> str:
        """The ONNX node an op of `role` came from."""
        return self.locs.get(role, self.anchor)

    def weight_bytes(self, d_model: int, dtype: DType) -> int:
        """Bytes of this layer's MLP/MoE weights (router included; attention not counted)."""
        if self.moe is None:
            return self.mlp.weight_bytes if self.mlp is not None else 0
        moe = self.moe
        total = moe.experts * moe.ffn.weight_bytes
        if moe.weight_bits:  # quantised experts: packed weights, bias not counted
            total = moe.experts * moe.ffn.matrices * moe.ffn.d_model * moe.ffn.d_ff
            total = total * moe.weight_bits // 8
        total += int(moe.experts * d_model * dtype.nbytes)  # router
        if moe.shared_ffn is not None:
            total += moe.shared_count * moe.shared_ffn.weight_bytes
        return total


@dataclass(frozen=True)
class ModelSpec:
    """A whole decoder-only model: embedding, layers, final norm, LM head.

    `vocab` is 0 when the graph has no embedding / LM head (a bare MoE block); the builder then
    takes hidden states as the function argument and returns hidden states.
    """

    name: str
    d_model: int
    vocab: int
    dtype: DType
    layers: tuple[LayerSpec, ...]
    source: str = ""  # file or zoo name
    embed_loc: str = ""
    final_norm_loc: str = ""
    lm_head_loc: str = ""
    notes: tuple[str, ...] = ()  # what the importer inferred rather than read (shown in --summary)

    @property
    def moe_layers(self) -> tuple[LayerSpec, ...]:
        """The layers with an MoE block."""
        return tuple(layer for layer in self.layers if layer.moe is not None)
