"""The line-oriented JSON interchange form of a trace (`.jsonl`), read in a streaming way.

Line 1 is the header object (the same fields as the `.npz` header, with
`"format": "ndpc-trace-jsonl"`). Every further line is one token:

    {"t": 0, "request": 0, "phase": 0, "experts": [[3, 1], ...L], "weights": [[0.7, 0.3], ...L]}

`t` counts tokens from 0 without gaps. A popularity file (kind "popularity") has one line per layer
instead: `{"layer": 0, "counts": [c_0, ..., c_{E-1}]}`. Full description: docs/traces.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ndpc.traces.errors import TraceError
from ndpc.traces.types import (
    FORMAT_VERSION,
    PathLike,
    Popularity,
    Trace,
    TraceMeta,
    experts_dtype,
    meta_from_header,
)
from ndpc.traces.validate import (
    MAX_COUNT,
    check_chunk,
    check_header,
    check_trace,
    check_weight,
    is_int,
    is_number,
    parse_json,
)

JSONL_FORMAT = "ndpc-trace-jsonl"


def write_jsonl(trace: Trace | Popularity, path: PathLike, chunk_tokens: int = 4096) -> None:
    """Write `trace` (or a popularity table) in the JSON-lines interchange form."""
    kind = "popularity" if isinstance(trace, Popularity) else "trace"
    header = trace.meta.header(kind, trace.tokens)
    header["format"] = JSONL_FORMAT
    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps(header, sort_keys=True) + "\n")
        if isinstance(trace, Popularity):
            for l, row in enumerate(trace.counts.tolist()):
                out.write(json.dumps({"layer": l, "counts": row}) + "\n")
            return
        check_trace(trace, path)
        for start in range(0, trace.tokens, chunk_tokens):
            _write_tokens(out, trace.slice(start, start + chunk_tokens), start)


def _write_tokens(out: Any, chunk: Trace, start: int) -> None:
    experts = chunk.experts.tolist()
    weights = np.round(chunk.weights.astype(np.float64), 7).tolist()
    for i in range(chunk.tokens):
        record = {
            "t": start + i,
            "request": int(chunk.request[i]),
            "phase": int(chunk.phase[i]),
            "experts": experts[i],
            "weights": weights[i],
        }
        out.write(json.dumps(record) + "\n")


def _parse_line(line: str, path: PathLike, lineno: int) -> Any:
    return parse_json(line, path, f"{lineno}")


def read_jsonl_header(path: PathLike) -> dict[str, Any]:
    """The validated header (line 1) of a `.jsonl` trace."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise TraceError(path, "not UTF-8 text", "1") from None
    except FileNotFoundError:
        raise TraceError(path, "no such file") from None
    return _header(first, path)


def _header(line: str, path: PathLike) -> dict[str, Any]:
    return _header_and_count(line, path)[0]


def _header_and_count(line: str, path: PathLike) -> tuple[dict[str, Any], int | None]:
    """The validated header and the token count it declares (None when it gives none)."""
    if not line.strip():
        raise TraceError(path, "empty file; line 1 must be the header object", "1")
    header = _parse_line(line, path, 1)
    if not isinstance(header, dict) or header.get("format") != JSONL_FORMAT:
        raise TraceError(path, f'line 1 must be a header with "format": "{JSONL_FORMAT}"', "1")
    header = dict(header, format="ndpc-trace")
    # the token count is optional in hand-written files; when given, the records must match it
    declared = "tokens" in header
    header.setdefault("tokens", 0)
    header.setdefault("version", FORMAT_VERSION)
    header = check_header(header, path)
    return header, header["tokens"] if declared else None


def iter_jsonl_chunks(path: PathLike, tokens: int) -> Iterator[Trace]:
    """Stream a `.jsonl` trace as validated chunks of at most `tokens` tokens."""
    try:
        with open(path, encoding="utf-8") as f:
            header, declared = _header_and_count(f.readline(), path)
            if header["kind"] != "trace":
                raise TraceError(path, "is a popularity file (counts only), not a per-token trace")
            read = 0
            for chunk in _token_chunks(f, meta_from_header(header), path, tokens):
                read += chunk.tokens
                yield chunk
            if declared is not None and read != declared:
                raise TraceError(
                    path,
                    f"the header says {declared} tokens but the file holds {read} "
                    "(truncated or edited?)",
                )
    except UnicodeDecodeError:
        raise TraceError(path, "not UTF-8 text") from None
    except FileNotFoundError:
        raise TraceError(path, "no such file") from None


def _token_chunks(lines: Any, meta: TraceMeta, path: PathLike, tokens: int) -> Iterator[Trace]:
    rows: list[tuple[int, int, Any, Any, int]] = []
    done, prev = 0, None
    for lineno, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        rows.append(
            _token_record(_parse_line(line, path, lineno), meta, path, lineno, done + len(rows))
        )
        if len(rows) == tokens:
            chunk = _chunk(rows, meta, path, done, prev)
            prev, done, rows = (int(chunk.request[-1]), int(chunk.phase[-1])), done + len(rows), []
            yield chunk
    if rows:
        yield _chunk(rows, meta, path, done, prev)


def _token_record(
    rec: Any, meta: TraceMeta, path: PathLike, lineno: int, t: int
) -> tuple[int, int, Any, Any, int]:
    where = f"{lineno}"
    if not isinstance(rec, dict):
        raise TraceError(path, "a token line must be a JSON object", where)
    for key in ("t", "request", "phase", "experts", "weights"):
        if key not in rec:
            raise TraceError(path, f"token record lacks {key!r}", where)
    if not is_int(rec["t"]) or rec["t"] != t:
        raise TraceError(
            path, f"token index t={rec['t']!r}, expected {t} (missing or reordered record)", where
        )
    experts, weights = rec["experts"], rec["weights"]
    for name, value in (("experts", experts), ("weights", weights)):
        ok = isinstance(value, list) and len(value) == meta.layers
        if not ok or any(not isinstance(row, list) or len(row) != meta.k for row in value):
            raise TraceError(
                path, f"{name} must be {meta.layers} lists of k={meta.k} values", where
            )
    for l, row in enumerate(experts):
        for x in row:
            if not (is_int(x) or is_number(x) and float(x).is_integer()):
                raise TraceError(path, f"expert id {x!r} is not an integer", f"{where} (layer {l})")
            if not 0 <= x < meta.experts:
                raise TraceError(
                    path,
                    f"expert id {x!r} out of range [0, {meta.experts})",
                    f"{where} (token {t}, layer {l})",
                )
    w = [[check_weight(x, path, f"{where} (token {t}, layer {l})") for x in row]
         for l, row in enumerate(weights)]  # fmt: skip
    e = np.asarray(experts, dtype=np.int64)
    if not is_int(rec["phase"]) or rec["phase"] not in (0, 1):
        raise TraceError(path, f"phase must be 0 or 1, got {rec['phase']!r}", where)
    if not is_int(rec["request"]) or not 0 <= rec["request"] <= np.iinfo(np.int32).max:
        raise TraceError(
            path, f"request must be an integer in [0, 2**31), got {rec['request']!r}", where
        )
    return (rec["request"], rec["phase"], e, np.asarray(w, dtype=np.float64), lineno)


def _chunk(rows: list[Any], meta: TraceMeta, path: PathLike, first: int, prev: Any) -> Trace:
    experts = np.stack([r[2] for r in rows])  # ids and weights already range-checked per line
    weights = np.stack([r[3] for r in rows]).astype(np.float32)
    chunk = Trace(
        meta,
        experts.astype(experts_dtype(meta.experts)),
        weights,
        np.asarray([r[1] for r in rows], dtype=np.uint8),
        np.asarray([r[0] for r in rows], dtype=np.int32),
    )
    try:
        check_chunk(chunk, path, first, prev)
    except TraceError as err:
        # re-anchor "token N" on the line that holds it
        token = int(err.where.split()[1].rstrip(",")) if err.where.startswith("token") else None
        line = rows[token - first][4] if token is not None else None
        where = f"{line} ({err.where})" if line else err.where
        raise TraceError(path, err.detail, where) from None
    return chunk


def read_jsonl_popularity(path: PathLike) -> Popularity:
    """Read a popularity table written in the interchange form."""
    try:
        return _read_popularity(path)
    except UnicodeDecodeError:
        raise TraceError(path, "not UTF-8 text") from None


def _read_popularity(path: PathLike) -> Popularity:
    with open(path, encoding="utf-8") as f:
        header = _header(f.readline(), path)
        meta = meta_from_header(header)
        counts = np.zeros((meta.layers, meta.experts), dtype=np.int64)
        seen = set()
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            rec = _parse_line(line, path, lineno)
            layer = rec.get("layer") if isinstance(rec, dict) else None
            row = rec.get("counts") if isinstance(rec, dict) else None
            if not is_int(layer) or not 0 <= layer < meta.layers or layer in seen:
                raise TraceError(
                    path, f"'layer' must be a new integer in [0, {meta.layers})", f"{lineno}"
                )
            if (
                not isinstance(row, list)
                or len(row) != meta.experts
                or any(not is_int(c) or not 0 <= c <= MAX_COUNT for c in row)
            ):
                raise TraceError(
                    path, f"'counts' must be {meta.experts} integers in [0, 2**53]", f"{lineno}"
                )
            counts[layer] = row
            seen.add(layer)
    if len(seen) != meta.layers:
        raise TraceError(path, f"popularity has {len(seen)} layer lines, header says {meta.layers}")
    return Popularity(meta, counts)
