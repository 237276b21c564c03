"""The canonical on-disk routing-trace format (`.npz`, version 1) and its streaming reader.

A trace file is an uncompressed ZIP archive that `numpy.load(path, allow_pickle=False)` opens. It
holds five `.npy` members (field by field in docs/traces.md):

    header.npy   uint8 [n]       UTF-8 JSON: format, version, kind, model, layers, experts, k,
                                 tokens, source, generator, seed, params
    experts.npy  int16|int32 [T, L, k]  selected expert ids per token and MoE layer, best first
    weights.npy  float32 [T, L, k]      their routing weights
    phase.npy    uint8 [T]              0 = prefill, 1 = decode
    request.npy  int32 [T]              request id, non-decreasing

A popularity file (kind "popularity", counts only, no token order) holds `header.npy` and
`counts.npy` int64 [L, E] instead; see `Popularity`.

Streaming: `iter_chunks` reads each member through `zipfile` (sequential reads, CRC-checked) and
never maps or loads the whole array, so memory is bounded by the chunk size (see `chunk_bytes`).
Writing is deterministic: fixed ZIP timestamps, so the same trace gives byte-identical files.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ndpc.traces.errors import TraceError
from ndpc.traces.jsonl import (
    iter_jsonl_chunks,
    read_jsonl_header,
    read_jsonl_popularity,
    write_jsonl,
)
from ndpc.traces.npzio import (
    NpyMember,
    array_member,
    file_blocks,
    header_member,
    open_zip,
    read_zip_header,
    write_npz,
)
from ndpc.traces.types import (
    FORMAT_NAME,
    FORMAT_VERSION,
    TRACE_MEMBERS,
    PathLike,
    Popularity,
    Trace,
    TraceMeta,
    chunk_bytes,
    experts_dtype,
    meta_from_header,
)
from ndpc.traces.validate import check_arrivals, check_chunk, check_member_shapes, check_trace

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Popularity",
    "Trace",
    "TraceError",
    "TraceMeta",
    "TraceWriter",
    "chunk_bytes",
    "concat_traces",
    "experts_dtype",
    "iter_chunks",
    "load_any",
    "load_popularity",
    "load_trace",
    "meta_from_header",
    "read_header",
    "save_trace",
]


def _trace_dtypes(meta: TraceMeta) -> dict[str, np.dtype]:
    return {
        "experts": experts_dtype(meta.experts),
        "weights": np.dtype(np.float32),
        "phase": np.dtype(np.uint8),
        "request": np.dtype(np.int32),
    }


def save_trace(trace: Trace | Popularity, path: PathLike, jsonl: bool | None = None) -> None:
    """Validate `trace` and write it: `.jsonl` paths get the interchange form, others `.npz`.

    `jsonl` forces the form regardless of the file name (e.g. when writing to a temporary file).
    """
    if jsonl if jsonl is not None else str(path).endswith(".jsonl"):
        write_jsonl(trace, path)
        return
    if isinstance(trace, Popularity):
        counts = np.asarray(trace.counts, dtype=np.int64)
        header = trace.meta.header("popularity", trace.tokens)
        write_npz(path, [header_member(header), array_member("counts", counts, counts.dtype)])
        return
    check_trace(trace, path)
    dtypes = _trace_dtypes(trace.meta)
    members = [header_member(trace.meta.header("trace", trace.tokens))]
    members += [array_member(n, getattr(trace, n), dtypes[n]) for n in TRACE_MEMBERS]
    write_npz(path, members)


class TraceWriter:
    """Write a trace chunk by chunk with bounded memory (members are spooled to a temp folder).

    Use as a context manager; the file appears at `path` only when the block succeeds.
    """

    def __init__(self, path: PathLike, meta: TraceMeta):
        self.path = Path(path)
        self.meta = meta
        self.tokens = 0
        self._dtypes = _trace_dtypes(meta)
        self._tmp = Path(tempfile.mkdtemp(prefix=".trace-", dir=self.path.parent))
        self._files: dict[str, IO[bytes]] = {n: open(self._tmp / n, "wb") for n in TRACE_MEMBERS}  # noqa: SIM115
        self._prev: tuple[int, int] | None = None

    def write(self, chunk: Trace) -> None:
        """Validate and append the tokens of `chunk`."""
        check_chunk(chunk, self.path, self.tokens, self._prev)
        for name in TRACE_MEMBERS:
            arr = np.ascontiguousarray(getattr(chunk, name), dtype=self._dtypes[name])
            self._files[name].write(arr.tobytes())
        if chunk.tokens:
            self._prev = (int(chunk.request[-1]), int(chunk.phase[-1]))
        self.tokens += chunk.tokens

    def close(self) -> None:
        """Assemble the .npz from the spooled members and remove the temp folder."""
        for f in self._files.values():
            f.close()
        shape = (self.tokens, self.meta.layers, self.meta.k)
        shapes = {
            "experts": shape,
            "weights": shape,
            "phase": (self.tokens,),
            "request": (self.tokens,),
        }
        members = [header_member(self.meta.header("trace", self.tokens))]
        members += [
            (n, shapes[n], self._dtypes[n], file_blocks(self._tmp / n)) for n in TRACE_MEMBERS
        ]
        try:
            write_npz(self.path, members)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far."""
        for f in self._files.values():
            f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_header(path: PathLike) -> dict[str, Any]:
    """The validated JSON header of a trace or popularity file (cheap: reads no arrays)."""
    if str(path).endswith(".jsonl"):
        return read_jsonl_header(path)
    with open_zip(path) as zf:
        return read_zip_header(zf, path)


def iter_chunks(path: PathLike, tokens: int = 65536) -> Iterator[Trace]:
    """Stream a trace file as validated chunks of at most `tokens` tokens (bounded memory)."""
    if tokens < 1:
        raise ValueError("chunk size must be >= 1 token")
    if str(path).endswith(".jsonl"):
        yield from iter_jsonl_chunks(path, tokens)
        return
    with open_zip(path) as zf:
        header = read_zip_header(zf, path)
        if header["kind"] != "trace":
            raise TraceError(path, "is a popularity file (counts only), not a per-token trace")
        yield from _iter_members(zf, header, path, tokens)


def _iter_members(
    zf: zipfile.ZipFile, header: dict[str, Any], path: PathLike, tokens: int
) -> Iterator[Trace]:
    meta = meta_from_header(header)
    total = header["tokens"]
    names = set(zf.namelist())
    missing = [n for n in TRACE_MEMBERS if f"{n}.npy" not in names]
    if missing:
        raise TraceError(path, f"archive lacks member(s) {', '.join(m + '.npy' for m in missing)}")
    members = {n: NpyMember(zf, n, path) for n in TRACE_MEMBERS}
    try:
        check_member_shapes(members, meta, total, path)
        done, prev = 0, None
        while done < total:
            n = min(tokens, total - done)
            chunk = Trace(meta, **{name: m.read_rows(n) for name, m in members.items()})
            check_chunk(chunk, path, done, prev)
            prev = (int(chunk.request[-1]), int(chunk.phase[-1]))
            done += n
            yield chunk
            del chunk  # hold no chunk while reading the next: one chunk in memory at a time
        for m in members.values():
            m.fp.read(1)  # reaching the end makes zipfile verify the member's CRC-32
    finally:
        for m in members.values():
            m.close()


def load_trace(path: PathLike) -> Trace:
    """Read and validate a whole trace (`.npz` or `.jsonl` interchange form)."""
    chunks = list(iter_chunks(path, tokens=1 << 20))
    if not chunks:
        meta = meta_from_header(read_header(path))
        shape = (0, meta.layers, meta.k)
        empty = np.zeros(0)
        return Trace(
            meta,
            np.zeros(shape, experts_dtype(meta.experts)),
            np.zeros(shape, np.float32),
            empty.astype(np.uint8),
            empty.astype(np.int32),
        )
    if len(chunks) == 1:
        c = chunks[0]
        trace = Trace(c.meta, c.experts.copy(), c.weights.copy(), c.phase.copy(), c.request.copy())
    else:
        trace = concat_traces(chunks)
    check_arrivals(trace, path)
    return trace


def concat_traces(chunks: list[Trace]) -> Trace:
    """Join chunks of one trace (same metadata) along the token axis."""
    return Trace(
        chunks[0].meta,
        np.concatenate([c.experts for c in chunks]),
        np.concatenate([c.weights for c in chunks]),
        np.concatenate([c.phase for c in chunks]),
        np.concatenate([c.request for c in chunks]),
    )


def load_popularity(path: PathLike) -> Popularity:
    """Read a popularity file (kind "popularity"): per-layer counts without token order."""
    with open_zip(path) as zf:
        header = read_zip_header(zf, path)
        if header["kind"] != "popularity":
            raise TraceError(path, "is a per-token trace, not a popularity file")
        if "counts.npy" not in zf.namelist():
            raise TraceError(path, "archive lacks member counts.npy")
        member = NpyMember(zf, "counts", path)
        meta = meta_from_header(header)
        if tuple(member.shape) != (meta.layers, meta.experts) or member.dtype.kind not in "iu":
            raise TraceError(
                path,
                f"counts.npy must be integer [{meta.layers}, {meta.experts}], got {member.dtype} {tuple(member.shape)}",
            )
        counts = member.read_rows(meta.layers).astype(np.int64)
    if (counts < 0).any():
        raise TraceError(path, "counts must be >= 0", f"layer {int(np.argwhere(counts < 0)[0][0])}")
    return Popularity(meta, counts)


def load_any(path: PathLike) -> Trace | Popularity:
    """A trace or a popularity table, whichever the file holds."""
    kind = read_header(path)["kind"]
    if kind == "trace":
        return load_trace(path)
    if str(path).endswith(".jsonl"):
        return read_jsonl_popularity(path)
    return load_popularity(path)
