"""Trace data types shared by the readers, writers, generators and statistics.

`ndpc.traces.format` re-exports them; docs/traces.md describes every field. Checking a trace
against the format's rules is `ndpc.traces.validate.check_trace` (the data types know nothing of
validation, so `validate` can build on them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT_NAME = "ndpc-trace"
FORMAT_VERSION = 2  # 2: optional `requests` header object (arrival times); 1 is still read
READ_VERSIONS = (1, 2)
TRACE_MEMBERS = ("experts", "weights", "phase", "request")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class TraceMeta:
    """What a trace describes: its model shape and where it came from."""

    model: str
    layers: int  # MoE layers (trace layer i = the i-th router of the model)
    experts: int
    k: int
    source: str = ""  # "synthetic", "import:<format>", "capture:<onnx file>"
    generator: str = ""  # generator preset / importer / capture tool that made it
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # generator params, import summary, ...
    # arrival time in seconds of each request, in request-id order (None: no serving workload,
    # requests run one after another as soon as the previous one finished)
    arrivals: tuple[float, ...] | None = None
    # recorded decode batches (an imported serving capture): per iteration, its slices as
    # (first row, tokens), each one request's consecutive rows of one phase (None: not recorded)
    iterations: tuple[tuple[tuple[int, int], ...], ...] | None = None

    def header(self, kind: str, tokens: int) -> dict[str, Any]:
        """The JSON header written into a file of `kind` ("trace" or "popularity"). Traces
        without arrival times are written as version 1 (readable by older ndpc)."""
        out = {
            "format": FORMAT_NAME,
            "version": 1 if self.arrivals is None else FORMAT_VERSION,
            "kind": kind,
            "model": self.model,
            "layers": self.layers,
            "experts": self.experts,
            "k": self.k,
            "tokens": tokens,
            "source": self.source,
            "generator": self.generator,
            "seed": self.seed,
            "params": self.params,
        }
        if self.arrivals is not None:
            out["requests"] = {"arrival_s": list(self.arrivals)}
            if self.iterations is not None:
                out["requests"]["iterations"] = [[list(s) for s in it] for it in self.iterations]
        return out


@dataclass(frozen=True)
class Trace:
    """Per-token routing: `experts`/`weights` [T, L, k] (best first), `phase` and `request` [T]."""

    meta: TraceMeta
    experts: np.ndarray
    weights: np.ndarray
    phase: np.ndarray
    request: np.ndarray

    @property
    def tokens(self) -> int:
        """T, the number of tokens."""
        return int(self.experts.shape[0])

    def __len__(self) -> int:
        return self.tokens

    def slice(self, start: int, stop: int) -> Trace:
        """Tokens [start, stop) as a new trace sharing the metadata."""
        return Trace(
            self.meta,
            self.experts[start:stop],
            self.weights[start:stop],
            self.phase[start:stop],
            self.request[start:stop],
        )


@dataclass(frozen=True)
class Popularity:
    """Per-layer expert selection counts without token order (e.g. aggregated measurements)."""

    meta: TraceMeta
    counts: np.ndarray  # int64 [L, E]

    @property
    def tokens(self) -> int:
        """Tokens per layer implied by the counts (each token selects k experts)."""
        return int(round(float(self.counts[0].sum()) / self.meta.k)) if len(self.counts) else 0


def experts_dtype(experts: int) -> np.dtype:
    """The smallest integer type the format uses for expert ids of a model with `experts`."""
    return np.dtype(np.int16) if experts <= np.iinfo(np.int16).max else np.dtype(np.int32)


def chunk_bytes(tokens: int, layers: int, k: int, experts: int) -> int:
    """Bytes of one decoded chunk of `tokens` tokens (the unit of the streaming memory bound)."""
    per_token = layers * k * (experts_dtype(experts).itemsize + 4) + 1 + 4
    return tokens * per_token


def meta_from_header(header: dict[str, Any]) -> TraceMeta:
    """The TraceMeta stored in a validated header."""
    return TraceMeta(
        model=str(header.get("model", "")),
        layers=header["layers"],
        experts=header["experts"],
        k=header["k"],
        source=str(header.get("source", "")),
        generator=str(header.get("generator", "")),
        seed=header.get("seed"),
        params=header.get("params", {}),
        arrivals=_arrivals(header),
        iterations=_iterations(header),
    )


def _iterations(header: dict[str, Any]) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    its = (header.get("requests") or {}).get("iterations")
    return None if its is None else tuple(tuple((int(f), int(n)) for f, n in it) for it in its)


def _arrivals(header: dict[str, Any]) -> tuple[float, ...] | None:
    requests = header.get("requests")
    return None if requests is None else tuple(float(t) for t in requests["arrival_s"])
