"""Work of the dense (non-expert) blocks, and the GPU memory left for expert weights.

Used by the emitter (FLOPs and bytes of each GPU kernel) and by the `prefetch` pass (the default
budget). Counts are per decode step of one token or per prefill step of `tokens` tokens with
`context` tokens already cached. MLA (DeepSeek) projections are approximated from the op's
attributes (heads, head_dim, kv_lora_rank): the exact LoRA ranks of the query path are not in the IR.
"""

from __future__ import annotations

from dataclasses import dataclass

from ndpc.ir.attrs import AttentionKind
from ndpc.ir.core import Module
from ndpc.ir.ops import AttentionOp, EmbeddingOp, LmHeadOp, MlpOp, RouterOp, SharedExpertsOp

GIB = 1 << 30
ROPE_DIM = 64  # MLA's decoupled rotary key width (DeepSeek-V2/V3)


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes read from memory by one kernel."""

    flops: float
    mem_bytes: float


def attention_params(op: AttentionOp) -> int:
    """Weights of the QKV and output projections."""
    d, h, kv, hd = op.d_model, op.heads, op.kv_heads, op.head_dim
    if op.kind is AttentionKind.MLA and op.kv_lora_rank:
        r = op.kv_lora_rank
        q = d * h * (hd + ROPE_DIM)
        kv_down = d * (r + ROPE_DIM)
        kv_up = r * h * 2 * hd
        return q + kv_down + kv_up + h * hd * d
    return d * hd * (2 * h + 2 * kv)


def kv_bytes_per_token(op: AttentionOp) -> float:
    """KV-cache bytes one token adds to one layer."""
    if op.kind is AttentionKind.MLA and op.kv_lora_rank:
        return (op.kv_lora_rank + ROPE_DIM) * op.dtype.nbytes
    return 2 * op.kv_heads * op.head_dim * op.dtype.nbytes


def attention_work(op: AttentionOp, tokens: int, context: int) -> Work:
    """Norm + projections + attention over `context + tokens` cached tokens (causal)."""
    return Work(*AttentionShape(op).work(tokens, context))


class AttentionShape:
    """`attention_work` with the op's constants computed once (the emitter prices the attention
    of every layer of every step)."""

    __slots__ = ("params", "b", "kv", "heads", "head_dim", "d", "key")

    def __init__(self, op: AttentionOp) -> None:
        self.params = attention_params(op)
        self.b = op.dtype.nbytes
        self.kv = kv_bytes_per_token(op)
        self.heads, self.head_dim, self.d = op.heads, op.head_dim, op.d_model
        # every number `work` reads: equal keys give equal work
        self.key = (self.params, self.b, self.kv, self.heads, self.head_dim, self.d)

    def work(self, tokens: int, context: int) -> tuple[float, float]:
        """(FLOPs, bytes) of `tokens` new tokens after `context` cached ones."""
        params, b = self.params, self.b
        # each new token attends to context + its causal prefix: sum = tokens*context + tokens*(tokens+1)/2
        pairs = tokens * context + tokens * (tokens + 1) / 2
        flops = 2.0 * params * tokens + 4.0 * self.heads * self.head_dim * pairs
        mem = params * b + (context + tokens) * self.kv + 2 * tokens * self.d * b
        return flops, mem


def batch_attention_work(op: AttentionOp, slices: list[tuple[int, int]]) -> Work:
    """One batched attention kernel over several sequences' (tokens, context) slices: the
    projection weights are read once, each sequence attends over its own KV cache."""
    params = attention_params(op)
    b = op.dtype.nbytes
    tokens = sum(t for t, _ in slices)
    pairs = sum(t * c + t * (t + 1) / 2 for t, c in slices)
    cached = sum(c + t for t, c in slices)
    flops = 2.0 * params * tokens + 4.0 * op.heads * op.head_dim * pairs
    mem = params * b + cached * kv_bytes_per_token(op) + 2 * tokens * op.d_model * b
    return Work(flops, mem)


def mlp_work(op: MlpOp, tokens: int) -> Work:
    """A dense MLP block over `tokens` tokens."""
    f = op.ffn
    return Work(
        float(f.flops_per_token() * tokens),
        f.weight_bytes + 2 * tokens * f.d_model * f.dtype.nbytes,
    )


def shared_work(op: SharedExpertsOp, tokens: int) -> Work:
    """The always-active shared experts over `tokens` tokens."""
    f = op.ffn
    return Work(
        float(op.count * f.flops_per_token() * tokens),
        op.count * f.weight_bytes + 2 * tokens * f.d_model * f.dtype.nbytes,
    )


def router_work(op: RouterOp, d_model: int, act_bytes: float, tokens: int) -> Work:
    """Norm + gate GEMV + top-k."""
    return Work(2.0 * d_model * op.experts * tokens, d_model * op.experts * act_bytes)


def lm_head_work(op: LmHeadOp) -> Work:
    """Final norm + logits of the step's last token (prefill needs only the last one)."""
    return Work(2.0 * op.vocab * op.d_model, op.vocab * op.d_model * op.dtype.nbytes)


def dense_weight_bytes(module: Module) -> float:
    """Bytes of every weight that stays in GPU memory: embeddings, attention, dense MLPs, shared
    experts, routers and the LM head (routed experts excluded)."""
    total = 0.0
    for op in module.walk():
        if isinstance(op, AttentionOp):
            total += attention_params(op) * op.dtype.nbytes
        elif isinstance(op, MlpOp):
            total += op.ffn.weight_bytes
        elif isinstance(op, SharedExpertsOp):
            total += op.count * op.ffn.weight_bytes
        elif isinstance(op, (EmbeddingOp, LmHeadOp)):
            total += op.vocab * op.d_model * op.dtype.nbytes
        elif isinstance(op, RouterOp):
            total += op.experts * _d_model(module) * 2
    return total


def _d_model(module: Module) -> int:
    for op in module.walk():
        d = getattr(op, "d_model", None)
        if isinstance(d, int):
            return d
    return 0


def kv_cache_bytes(module: Module, tokens: int) -> float:
    """KV cache of every layer for `tokens` tokens of context."""
    return sum(kv_bytes_per_token(op) * tokens for op in module.ops_of(AttentionOp))


def expert_budget_bytes(
    module: Module, gpu_memory_bytes: int, context_tokens: int, working_fraction: float = 0.05
) -> int:
    """GPU memory left for expert weights: total - dense weights - KV cache for `context_tokens`
    - working space (`working_fraction` of memory, at least 512 MiB). Never negative."""
    working = max(working_fraction * gpu_memory_bytes, 512 * (1 << 20))
    free = gpu_memory_bytes - dense_weight_bytes(module) - kv_cache_bytes(module, context_tokens)
    return max(0, int(free - working))
