"""Validation of trace headers and arrays: every rule the format states, with token/layer named."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ndpc.traces.errors import TraceError
from ndpc.traces.types import FORMAT_NAME, READ_VERSIONS, PathLike, Trace, TraceMeta

# Limits a header may declare. Every reader allocates per-layer x per-expert tables from them, so
# they bound memory before any record is read: layer tags are int16 in schedules, expert ids int32.
MAX_LAYERS = 2**15 - 1
MAX_EXPERTS = 2**31 - 1
MAX_TABLE = 2**24  # layers x experts cells (DeepSeek-V3: 58 x 256 = 14,848)
MAX_WEIGHT = float(np.finfo(np.float32).max)  # weights are stored as float32
MAX_ARRIVAL_S = 1e12  # request arrival times (s); a huge JSON integer compares exactly
MAX_COUNT = 2**53  # selection counts: exact as floats; a (pooled) layer total stays within int64


def parse_json(text: str | bytes, path: PathLike | None, where: str = "") -> Any:
    """`json.loads`, with every way untrusted text can fail it (syntax, over-long integers, deep
    nesting) turned into one TraceError naming the file and `where` (a line number or field)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TraceError(path, f"invalid JSON: {err.msg} (column {err.colno})", where) from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise TraceError(path, f"invalid JSON: {err}", where) from None
    except RecursionError:
        raise TraceError(path, "invalid JSON: nested too deeply", where) from None


def is_int(value: Any) -> bool:
    """A JSON integer (not a bool, which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A JSON number (int or float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_weight(value: Any, path: PathLike | None, where: str) -> float:
    """A routing weight: a finite number in [0, float32 max], as a float (null counts as NaN)."""
    if value is None or isinstance(value, float) and not math.isfinite(value):
        raise TraceError(path, f"routing weight is NaN or infinite ({value!r})", where)
    if not is_number(value):
        raise TraceError(path, f"routing weight {value!r} is not a number", where)
    if not 0 <= value <= MAX_WEIGHT:  # (a huge int compares exactly, never overflows)
        raise TraceError(path, f"routing weight {value!r} must be in [0, {MAX_WEIGHT:.4g}]", where)
    return float(value)


def check_sizes(
    layers: int, experts: int, k: int, path: PathLike | None, where: str = "header"
) -> None:
    """Layer and expert counts within what every reader can hold (see MAX_TABLE)."""
    if layers > MAX_LAYERS or experts > MAX_EXPERTS or layers * experts > MAX_TABLE:
        raise TraceError(
            path,
            f"{layers} layers x {experts} experts is beyond what ndpc holds "
            f"(layers <= {MAX_LAYERS}, layers x experts <= {MAX_TABLE:,})",
            where,
        )
    if not 1 <= k <= experts:
        raise TraceError(path, f"k={k} must be in [1, experts={experts}]", where)


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
    bad = trace.weights < 0
    if trace.weights.dtype.itemsize > 4:  # (narrower floats cannot exceed float32's range)
        bad |= trace.weights > MAX_WEIGHT
    if bad.any():
        t, l, j = _first_bad(bad)
        raise TraceError(
            path,
            f"routing weight {float(trace.weights[t, l, j])!r} must be in [0, {MAX_WEIGHT:.4g}]",
            where(t, l),
        )
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
    if header.get("version") not in READ_VERSIONS:
        raise TraceError(
            path,
            f"header: unsupported version {header.get('version')!r} (this ndpc reads "
            f"{', '.join(map(str, READ_VERSIONS))})",
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
    check_sizes(header["layers"], header["experts"], header["k"], path)
    seed = header.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise TraceError(path, f"header: 'seed' must be an integer or null, got {seed!r}", "header")
    if not isinstance(header.get("params", {}), dict):
        raise TraceError(path, "header: 'params' must be an object", "header")
    try:  # JSON's "\\ud83d" escapes can give lone surrogates, which no output can encode
        json.dumps(header, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise TraceError(path, "header: a string holds a lone UTF-16 surrogate", "header") from None
    if "requests" in header:
        _check_requests(header, path)
    return header


def _check_requests(header: dict[str, Any], path: PathLike) -> None:
    """Version 2's `requests` object: `arrival_s`, one finite time >= 0 per request."""
    requests = header["requests"]
    if header["version"] < 2:
        raise TraceError(path, "header: 'requests' needs version 2", "header")
    arrivals = requests.get("arrival_s") if isinstance(requests, dict) else None
    if not isinstance(arrivals, list):
        raise TraceError(path, "header: 'requests.arrival_s' must be a list of seconds", "header")
    for i, t in enumerate(arrivals):
        if not is_number(t) or not 0 <= t <= MAX_ARRIVAL_S:  # NaN and inf fail the comparison
            raise TraceError(
                path,
                f"header: requests.arrival_s[{i}] = {t!r} must be a time in [0, {MAX_ARRIVAL_S:g}] s",
                "header",
            )

    its = requests.get("iterations")
    if its is None:
        return
    if not isinstance(its, list):
        raise TraceError(
            path, "header: 'requests.iterations' must be a list of iterations", "header"
        )
    for i, it in enumerate(its):
        if not isinstance(it, list) or not it:
            raise TraceError(path, f"header: requests.iterations[{i}] must be a non-empty list of "
                             "[first row, tokens] slices", "header")  # fmt: skip
        for j, sl in enumerate(it):
            ok = isinstance(sl, list) and len(sl) == 2 and all(is_int(v) for v in sl)
            if not ok or not (0 <= sl[0] < 2**63 and 1 <= sl[1] < 2**63):
                raise TraceError(path, f"header: requests.iterations[{i}][{j}] = {sl!r} must be "
                                 "[first row >= 0, tokens >= 1]", "header")  # fmt: skip


def check_arrivals(trace: Trace, path: PathLike | None = None) -> None:
    """A trace's arrival times must number its distinct requests; recorded iterations must cover
    every row once, each slice one request's rows of one phase, each request's rows in order."""
    arrivals = trace.meta.arrivals
    if arrivals is None:
        return
    n = len(np.unique(trace.request))
    if len(arrivals) != n:
        raise TraceError(
            path, f"header: requests.arrival_s has {len(arrivals)} times for {n} requests", "header"
        )
    if trace.meta.iterations is not None:
        check_iterations(trace, path)


def check_iterations(trace: Trace, path: PathLike | None = None) -> None:
    """See `check_arrivals`: the recorded iterations of an imported serving capture."""
    T = trace.tokens
    seen = np.zeros(T, dtype=bool)
    done_to: dict[int, int] = {}  # request -> rows of it covered so far (their end)
    first_row: dict[int, int] = {}
    req = np.asarray(trace.request)
    phase = np.asarray(trace.phase)
    for r, start in zip(*np.unique(req, return_index=True), strict=True):
        first_row[int(r)] = int(start)
    for i, it in enumerate(trace.meta.iterations or ()):
        members = set()
        for j, (f, n) in enumerate(it):
            where = f"header: requests.iterations[{i}][{j}] (rows {f}..{f + n - 1})"
            if f + n > T:
                raise TraceError(path, f"{where}: beyond the trace's {T} rows", "header")
            r = int(req[f])
            if np.any(req[f : f + n] != r) or np.any(phase[f : f + n] != phase[f]):
                raise TraceError(path, f"{where}: spans two requests or two phases", "header")
            if r in members:
                raise TraceError(path, f"{where}: request {r} twice in one iteration", "header")
            members.add(r)
            if f != done_to.get(r, first_row[r]):
                raise TraceError(path, f"{where}: request {r}'s rows out of order", "header")
            done_to[r] = f + n
            seen[f : f + n] = True
    if not seen.all():
        miss = int(np.flatnonzero(~seen)[0])
        raise TraceError(path, f"header: requests.iterations miss row {miss}", "header")


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
