"""Value types of ndpc's IR.

Types are small frozen dataclasses; each one knows its textual spelling, which the printer uses and
the parser reproduces (`tensor<?x2048xbf16>`, `!moe.route<k = 8, experts = 128>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar


class DType(Enum):
    """Element type of activations and weights; `bits` drives every byte count in ndpc."""

    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    F8E4M3 = "f8e4m3"
    I32 = "i32"
    I8 = "i8"
    I4 = "i4"

    @property
    def bits(self) -> int:
        return _DTYPE_BITS[self]

    @property
    def nbytes(self) -> float:
        """Bytes per element (0.5 for int4)."""
        return self.bits / 8


_DTYPE_BITS = {
    DType.F32: 32,
    DType.F16: 16,
    DType.BF16: 16,
    DType.F8E4M3: 8,
    DType.I32: 32,
    DType.I8: 8,
    DType.I4: 4,
}


class Type:
    """Base class of every IR type. Dialect types set `MNEMONIC` (`!moe.<mnemonic><...>`)."""

    MNEMONIC: ClassVar[str]


@dataclass(frozen=True)
class TensorType(Type):
    """A dense tensor; `None` in `shape` is a dynamic extent (the token dimension), printed `?`."""

    MNEMONIC: ClassVar[str] = "tensor"
    shape: tuple[int | None, ...]
    dtype: DType

    def __post_init__(self) -> None:
        for d in self.shape:
            if d is not None and d < 0:
                raise ValueError(f"negative tensor extent {d}")


@dataclass(frozen=True)
class RouteType(Type):
    """The router's decision for each token: `k` expert ids and weights out of `experts`."""

    MNEMONIC: ClassVar[str] = "route"

    k: int
    experts: int


@dataclass(frozen=True)
class KvCacheType(Type):
    """A layer's KV cache: `kv_heads` × `head_dim` per token and per K/V, grows with the sequence."""

    MNEMONIC: ClassVar[str] = "kv_cache"

    kv_heads: int
    head_dim: int
    dtype: DType


@dataclass(frozen=True)
class DistributedType(Type):
    """A tensor replicated on (or partial-summed across) `units` NDP units."""

    MNEMONIC: ClassVar[str] = "dist"

    tensor: TensorType
    units: int
    partial: bool = False
