"""The model zoo: real MoE models' shapes from their public config.json files.

The real models live in `zoo_models.toml` next to this file, each number with its source. Small
synthetic configurations for quick experiments (`small-*`, `tiny-*`) are generated here. A zoo name
is accepted wherever a model file is (`ndpc.compiler.frontend.load_model`).
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ndpc.ir.diagnostics import NdpcError

ZOO_FILE = Path(__file__).with_name("zoo_models.toml")


@dataclass(frozen=True)
class ModelConfig:
    """Everything ndpc needs about a model's shape; no weights.

    The first fields are the cross-team contract; the later ones (with defaults) describe routing,
    activation and attention variants. `sources` maps a field name (or "*") to where its value
    comes from.
    """

    name: str  # zoo key, e.g. "qwen3-30b-a3b"
    hf_id: str
    layers: int  # decoder layers
    dense_layers: tuple[int, ...]  # indices of dense (non-MoE) decoder layers
    d_model: int
    d_ff_expert: int
    d_ff_dense: int  # dense layers' MLP width (0 if none)
    experts: int
    top_k: int
    shared_experts: int  # 0 if none
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    d_ff_shared: int = 0  # one shared expert's width (0: same as d_ff_expert)
    shared_gated: bool = False  # shared experts scaled by a sigmoid gate (Qwen1.5-MoE)
    routing: str = "softmax_topk"  # an ir.attrs.RoutingRule value
    renormalize: bool = True  # top-k weights renormalised to sum to 1
    groups: int = 1  # DeepSeek-V3 n_group
    topk_groups: int = 1  # DeepSeek-V3 topk_group
    activation: str = "swiglu"  # an ir.attrs.Activation value
    expert_bias: bool = False  # experts have biases (GPT-OSS)
    clamp: float = 0.0  # clamped SwiGLU limit (GPT-OSS 7.0)
    expert_capacity: int = 0  # Switch top-1 capacity in tokens (0 = none)
    attention: str = "gqa"  # an ir.attrs.AttentionKind value
    kv_lora_rank: int = 0  # MLA latent width
    q_lora_rank: int = 0  # MLA query low-rank width (0 = a plain q_proj)
    kv_cache_dim: int = 0  # MLA per-token cache width (latent + rope key)
    norm: str = "rms"  # an ir.attrs.NormKind value
    dtype: str = "bf16"  # an ir.types.DType value
    synthetic: bool = False  # generated here, not a public checkpoint
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def moe_layers(self) -> int:
        """Decoder layers with an MoE block."""
        return self.layers - len(self.dense_layers)

    @property
    def shared_width(self) -> int:
        """One shared expert's d_ff."""
        return self.d_ff_shared or self.d_ff_expert

    def source_of(self, field_name: str) -> str:
        """Where `field_name`'s value comes from."""
        return self.sources.get(field_name) or self.sources.get("*", "")


def _load_real_models() -> dict[str, ModelConfig]:
    with ZOO_FILE.open("rb") as f:
        data = tomllib.load(f)
    known = {f.name for f in fields(ModelConfig)}
    out: dict[str, ModelConfig] = {}
    for name, entry in data.items():
        entry = dict(entry)
        unknown = set(entry) - known
        if unknown:
            raise NdpcError(f"{ZOO_FILE.name}: [{name}] has unknown fields {sorted(unknown)}")
        entry["dense_layers"] = tuple(entry["dense_layers"])
        out[name] = ModelConfig(name=name, **entry)
    return out


_SYNTHETIC_SOURCE = {"*": "synthetic ndpc configuration for quick experiments (not a checkpoint)"}


def _small_models() -> dict[str, ModelConfig]:
    """2/4/8 experts x hidden 1024/2048/4096 x top-1/top-2, Mixtral-like proportions."""
    out = {}
    for experts in (2, 4, 8):
        for hidden in (1024, 2048, 4096):
            for k in (1, 2):
                name = f"small-{experts}e-{hidden}h-top{k}"
                heads = hidden // 128
                out[name] = ModelConfig(
                    name=name,
                    hf_id="",
                    layers=8,
                    dense_layers=(),
                    d_model=hidden,
                    d_ff_expert=hidden * 7 // 2,
                    d_ff_dense=0,
                    experts=experts,
                    top_k=k,
                    shared_experts=0,
                    vocab=32000,
                    heads=heads,
                    kv_heads=max(1, heads // 4),
                    head_dim=128,
                    renormalize=k > 1,
                    synthetic=True,
                    sources=_SYNTHETIC_SOURCE,
                )
    return out


def _tiny_models() -> dict[str, ModelConfig]:
    """Tiny configurations (hidden 64) that onnxruntime executes with random weights."""
    base = dict(
        hf_id="",
        d_model=64,
        d_ff_expert=32,
        d_ff_dense=0,
        experts=8,
        top_k=2,
        shared_experts=0,
        vocab=256,
        heads=4,
        kv_heads=2,
        head_dim=16,
        synthetic=True,
        sources={
            "*": "the research note's tiny export config (RN §0): hidden 64, "
            "8 experts, top-2, expert intermediate 32, vocab 256"
        },
    )
    return {
        "tiny-mixtral": ModelConfig(name="tiny-mixtral", layers=2, dense_layers=(), **base),
        "tiny-qwen2-moe": ModelConfig(
            name="tiny-qwen2-moe",
            layers=2,
            dense_layers=(0,),
            **{**base, "d_ff_dense": 128, "shared_experts": 1},
            d_ff_shared=64,
            shared_gated=True,
            renormalize=False,
        ),
        "tiny-deepseek-v3": ModelConfig(
            name="tiny-deepseek-v3",
            layers=3,
            dense_layers=(0,),
            **{**base, "d_ff_dense": 128, "shared_experts": 1},
            routing="sigmoid_group_topk",
            groups=2,
            topk_groups=1,
        ),
    }


ZOO: dict[str, ModelConfig] = {**_load_real_models(), **_small_models(), **_tiny_models()}


def get_model(name: str) -> ModelConfig:
    """The zoo entry called `name` (case-insensitive); unknown names raise NdpcError."""
    key = name.lower()
    if key in ZOO:
        return ZOO[key]
    close = [n for n in ZOO if n.startswith(key)][:3] or difflib.get_close_matches(
        key, list(ZOO), n=3, cutoff=0.5
    )
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `ndpc model list`"
    raise NdpcError(f"unknown model '{name}'{hint}")


def real_models() -> list[ModelConfig]:
    """The public checkpoints of the zoo, in file order."""
    return [cfg for cfg in ZOO.values() if not cfg.synthetic]
