"""Shared inputs for the emitter and causality tests: small models, traces, a compile helper."""

from __future__ import annotations

from pathlib import Path

from ndpc.backends.emit import emit_schedule
from ndpc.compiler.passes.pipeline import make_context, parse_pipeline
from ndpc.ir.builder import synthetic_module
from ndpc.ir.core import Module
from ndpc.ir.parser import parse_module
from ndpc.traces.generate import generate_trace

REPO = Path(__file__).resolve().parents[2]
MODEL2 = REPO / "tests" / "filecheck" / "passes" / "model2.ndpir"
TARGET = "rtx5080-ndp"


def tiny_module() -> Module:
    """Two MoE layers, 8 experts, top-2, d_model 64 (see model2.ndpir)."""
    return parse_module(MODEL2.read_text(encoding="utf-8"), str(MODEL2))


def qwen_like(layers: int = 2, experts: int = 32) -> Module:
    """Qwen3-30B-A3B-shaped layers (d_model 2048, d_ff 768, top-8) but fewer of them."""
    return synthetic_module(layers, experts, k=8, d_model=2048, d_ff=768, name="qwenlike")


def trace_for(module_layers: int, experts: int, k: int, tokens: int, prompt: int, seed: int = 0,
              requests: int = 1):  # fmt: skip
    return generate_trace(module_layers, experts, k, tokens, prompt, seed, requests=requests)


def compile_and_emit(module: Module, pipeline: str, trace, overrides=()):
    """Run `pipeline` on `module` for the test target and emit over `trace`."""
    ctx = make_context(TARGET, overrides)
    for p in parse_pipeline(pipeline):
        module = p.run(module, ctx)
    return emit_schedule(module, trace, ctx.target, ctx.cost), ctx
