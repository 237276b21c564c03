"""`quantize`: store the routed experts' weights in a narrower type (weight-only quantisation).

Every `moe.experts` / `moe.expert_shards` op gets its `ffn` dtype replaced; activations, dense
layers and FLOPs stay as they are, so an expert's weight bytes, and with them every copy and every
memory-bound kernel, shrink by 16 / bits (scales not counted, as `FfnAttr.weight_bytes` says).
Models like llama.cpp's Q4/Q8 or HQQ's int4/int3 offloading set-ups: `quantize{weights=i4}`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from ndpc.compiler.passes.base import ModulePass, PassContext
from ndpc.ir.core import Module, Op
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import ExpertShardsOp, ExpertsOp
from ndpc.ir.types import DType

WEIGHT_TYPES = ("bf16", "f16", "f8e4m3", "i8", "i4")


@dataclass(frozen=True)
class QuantizePass(ModulePass):
    """Store the routed experts' weights as `weights` (bf16 | f16 | f8e4m3 | i8 | i4)."""

    name: ClassVar[str] = "quantize"
    weights: str = field(
        default="i4", metadata={"doc": "expert weight type: " + " | ".join(WEIGHT_TYPES)}
    )

    def run(self, module: Module, ctx: PassContext) -> Module:
        if self.weights not in WEIGHT_TYPES:
            raise NdpcError(
                f"quantize: weights={self.weights!r} is not one of {', '.join(WEIGHT_TYPES)}"
            )
        dtype = DType(self.weights)

        def rewrite(op: Op) -> Op:
            if isinstance(op, ExpertsOp | ExpertShardsOp) and op.ffn.dtype is not dtype:
                return dataclasses.replace(op, ffn=dataclasses.replace(op.ffn, dtype=dtype))
            return op

        funcs = tuple(
            dataclasses.replace(f, ops=tuple(rewrite(op) for op in f.ops)) for f in module.funcs
        )
        return dataclasses.replace(module, funcs=funcs)
