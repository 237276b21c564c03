"""Iterations: what the step emitter emits at a time.

An iteration is a `Batch` of sequence slices (`SeqSlice`: one request's prefill tokens, or a
chunk of them, or one decode token). The step emitter emits a batch as the attention of each
slice and every MoE layer once for the whole batch (tokens of all slices grouped per expert).

`sequential_batches` is the paper's set-up: batch 1, one request after another, the prefill of a
request as one slice and each decode token as one slice. The serving loop
(`ndpc.backends.serving`) makes batches of several requests' slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ndpc.traces.types import Trace


@dataclass(frozen=True)
class SeqSlice:
    """Tokens [first, first + tokens) of the trace, all of one request and one phase."""

    request: int
    phase: int  # backends.schedule.Phase value: 0 prefill, 1 decode
    first: int  # trace row of the slice's first token
    tokens: int
    context: int  # tokens of this request already in the KV cache before the slice
    starts_request: bool = False  # the request's first slice (policies' start_request hook)


@dataclass(frozen=True)
class Batch:
    """One iteration: its number and its slices (in emission order)."""

    index: int
    slices: tuple[SeqSlice, ...]

    @property
    def tokens(self) -> int:
        """Tokens of all slices."""
        return sum(s.tokens for s in self.slices)


def iter_steps(trace: Trace) -> Iterator[tuple[int, int, int, int]]:
    """(phase, request, first token, token count) per batch-1 step, in trace order."""
    n = len(trace.phase)
    t = 0
    while t < n:
        end = t + 1
        if trace.phase[t] == 0:
            req = trace.request[t]
            while end < n and trace.phase[end] == 0 and trace.request[end] == req:
                end += 1
        yield int(trace.phase[t]), int(trace.request[t]), t, end - t
        t = end


def count_steps(trace: Trace) -> int:
    """Steps of the batch-1 walk: one prefill per request with prompt tokens + decode tokens."""
    decode = int(np.count_nonzero(trace.phase == 1))
    prefill_requests = len(np.unique(trace.request[trace.phase == 0]))
    return decode + prefill_requests


def sequential_batches(trace: Trace) -> Iterator[Batch]:
    """Batch 1, requests one after another, in trace order (one slice per batch)."""
    current, context = None, 0
    for index, (phase, request, first, tokens) in enumerate(iter_steps(trace)):
        starts = request != current
        if starts:
            current, context = request, 0
        yield Batch(index, (SeqSlice(request, phase, first, tokens, context, starts),))
        context += tokens
