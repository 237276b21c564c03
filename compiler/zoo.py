"""The model zoo: real MoE models' shapes from their public config.json files.

(Stub written by the lead so other packages can code against `ModelConfig`; the front-end issue
fills in every model with cited sources.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Everything ndpc needs about a model's shape; no weights."""

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

    @property
    def moe_layers(self) -> int:
        return self.layers - len(self.dense_layers)


ZOO: dict[str, ModelConfig] = {
    "qwen3-30b-a3b": ModelConfig(
        name="qwen3-30b-a3b",
        hf_id="Qwen/Qwen3-30B-A3B",
        layers=48,
        dense_layers=(),
        d_model=2048,
        d_ff_expert=768,
        d_ff_dense=0,
        experts=128,
        top_k=8,
        shared_experts=0,
        vocab=151936,
        heads=32,
        kv_heads=4,
        head_dim=128,
    ),
}


def get_model(name: str) -> ModelConfig:
    """The zoo entry called `name` (raises KeyError for unknown names; see the front-end issue)."""
    return ZOO[name.lower()]
