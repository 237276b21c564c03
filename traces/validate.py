"""Validation of trace headers and arrays: every rule the format states, with token/layer named."""

from __future__ import annotations

from typing import Any

import numpy as np

from ndpc.traces.errors import TraceError
from ndpc.traces.types import FORMAT_NAME, FORMAT_VERSION, PathLike, Trace, TraceMeta


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_trace(trace: Trace, path: PathLike | None = None, first_token: int = 0) -> None:
    """Raise TraceError (naming token and layer) if any array of `trace` breaks the format's rules."""
    check_chunk(trace, path, first_token, None)


def check_chunk(
    trace: Trace, path: PathLike | None, first: int, prev: tuple[int, int] | None
) -> None:
    """Validate one chunk whose first token has global index `first`.

    `prev` is (request, phase) of the token before the chunk, so rules spanning chunk boundaries
    (non-decreasing requests, prefill before decode) hold for the whole file.
    """
    m = trace.meta
    shape = (trace.tokens, m.layers, m.k)
    where = lambda t, l=None: f"token {first + t}" + (f", layer {l}" if l is not None else "")  # noqa: E731
    for name, arr in (("experts", trace.experts), ("weights", trace.weights)):
        if arr.shape != shape:
            raise TraceError(path, f"{name} has shape {arr.shape}, expected {shape} (T, layers, k)")
    if not np.issubdtype(trace.experts.dtype, np.integer):
        raise TraceError(path, f"experts must be integers, got {trace.experts.dtype}")
    bad = (trace.experts < 0) | (trace.experts >= m.experts)
    if bad.any():
        t, l, j = _first_bad(bad)
        raise TraceError(
            path, f"expert id {trace.experts[t, l, j]} out of range [0, {m.experts})", where(t, l)
        )
    if m.k > 1:
        ordered = np.sort(trace.experts, axis=2)
        dup = (ordered[:, :, 1:] == ordered[:, :, :-1]).any(axis=2)
        if dup.any():
            t, l = _first_bad(dup)
            raise TraceError(path, f"expert chosen twice in one top-{m.k}", where(t, l))
    if not np.isfinite(trace.weights).all():
        t, l, _ = _first_bad(~np.isfinite(trace.weights))
        raise TraceError(path, "routing weight is NaN or infinite", where(t, l))
    for name, arr in (("phase", trace.phase), ("request", trace.request)):
        if arr.shape != (trace.tokens,):
            raise TraceError(path, f"{name} has shape {arr.shape}, expected ({trace.tokens},)")
    if (trace.phase > 1).any():
        raise TraceError(
            path, "phase must be 0 (prefill) or 1 (decode)", where(int(np.argmax(trace.phase > 1)))
        )
    _check_order(trace, path, where, prev)


def _check_order(
    trace: Trace, path: PathLike | None, where: Any, prev: tuple[int, int] | None
) -> None:
    req = trace.request.astype(np.int64)
    phase = trace.phase.astype(np.int64)
    if prev is not None:
        req = np.concatenate(([prev[0]], req))
        phase = np.concatenate(([prev[1]], phase))
    offset = 1 if prev is not None else 0
    if len(req) and req.min() < 0:
        raise TraceError(path, "request ids must be >= 0", where(int(np.argmax(req < 0)) - offset))
    step = np.diff(req)
    if (step < 0).any():
        raise TraceError(
            path, "request ids must be non-decreasing", where(int(np.argmax(step < 0)) + 1 - offset)
        )
    back = (step == 0) & (np.diff(phase) < 0)
    if back.any():
        raise TraceError(
            path,
            "prefill token after a decode token of the same request",
            where(int(np.argmax(back)) + 1 - offset),
        )


def check_header(header: Any, path: PathLike) -> dict[str, Any]:
    """Validate a parsed header (format, version, kind, sizes, seed, params); returns it."""
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise TraceError(path, f"header: 'format' must be {FORMAT_NAME!r}", "header")
    if header.get("version") != FORMAT_VERSION:
        raise TraceError(
            path,
            f"header: unsupported version {header.get('version')!r} (this ndpc reads {FORMAT_VERSION})",
            "header",
        )
    if header.get("kind") not in ("trace", "popularity"):
        raise TraceError(path, "header: 'kind' must be 'trace' or 'popularity'", "header")
    for key in ("layers", "experts", "k", "tokens"):
        value = header.get(key)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < (0 if key == "tokens" else 1)
        ):
            raise TraceError(
                path, f"header: {key!r} must be a positive integer, got {value!r}", "header"
            )
    if header["k"] > header["experts"]:
        raise TraceError(
            path, f"header: k={header['k']} exceeds experts={header['experts']}", "header"
        )
    seed = header.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise TraceError(path, f"header: 'seed' must be an integer or null, got {seed!r}", "header")
    if not isinstance(header.get("params", {}), dict):
        raise TraceError(path, "header: 'params' must be an object", "header")
    return header


def check_member_shapes(
    members: dict[str, Any], meta: TraceMeta, total: int, path: PathLike
) -> None:
    """Member shapes must match the header (T, L, k) and dtypes the field's kind."""
    want = {
        "experts": (total, meta.layers, meta.k),
        "weights": (total, meta.layers, meta.k),
        "phase": (total,),
        "request": (total,),
    }
    kinds = {"experts": "iu", "weights": "f", "phase": "u", "request": "iu"}
    for name, m in members.items():
        if tuple(m.shape) != want[name]:
            raise TraceError(
                path, f"member {name}.npy has shape {tuple(m.shape)}, header implies {want[name]}"
            )
        if m.dtype.kind not in kinds[name]:
            raise TraceError(path, f"member {name}.npy has dtype {m.dtype}, unsupported for {name}")
