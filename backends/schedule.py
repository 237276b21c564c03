"""Schedules: a DAG of ops (kernels, transfers, prefetches, syncs) on a target's resources.

Stored column by column (numpy arrays) with the dependencies as CSR (`dep_ptr`, `dep_idx`) and a
JSON header (resource names, free-form `meta`). The binary file format and the text form are
documented in docs/schedule.md; `ndpc.backends.schedule_text` prints and parses the text form.

Work meaning per kind: GPU_KERNEL/REDUCE on "gpu": `flops` + `mem_bytes` read from VRAM;
NDP_KERNEL/REDUCE on "ndpI": from unit I's memory; CPU_KERNEL on "cpu": host DRAM; TRANSFER/PREFETCH
on a link: `link_bytes` over it, `unit` = the NDP unit whose memory is read or written (-1: none);
SYNC: no work, occupies no resource (it only joins dependencies).

Header `meta` keys the simulator reads: `prefetcher` (str, the active prefetcher's name; absent,
empty or "none" = no prefetcher). Others (`model`, `target`, `policy`, `trace`, ...) are carried.
"""

from __future__ import annotations

import json
import mmap
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from ndpc.ir.core import Location
from ndpc.ir.diagnostics import NdpcError

FORMAT_VERSION = 1
MAGIC = b"NDPCSCH\x00"


class OpKind(IntEnum):
    """What an op does (its work fields are interpreted per kind, see module docstring)."""

    GPU_KERNEL = 0
    NDP_KERNEL = 1
    CPU_KERNEL = 2
    TRANSFER = 3
    REDUCE = 4
    PREFETCH = 5
    SYNC = 6


class Phase(IntEnum):
    """Inference phase of the token step an op belongs to."""

    PREFILL = 0
    DECODE = 1


class Reason(IntEnum):
    """Why the policy placed the op where it is (new values are only appended)."""

    NONE = 0
    DENSE = 1
    ROUTER = 2
    GPU_RESIDENT = 3
    GPU_FETCH = 4
    NDP = 5
    CPU = 6
    PREFETCH = 7
    EVICT = 8
    REPLAN = 9
    BROADCAST = 10
    PARTIAL_SUM = 11
    COMBINE = 12


# (name, dtype, default) of every per-op column, in file order.
COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("kind", "<u1", 0),
    ("resource", "<u2", 0),
    ("flops", "<f8", 0.0),
    ("mem_bytes", "<f8", 0.0),
    ("link_bytes", "<f8", 0.0),
    ("phase", "<u1", int(Phase.DECODE)),
    ("request", "<i4", 0),
    ("token", "<i4", -1),
    ("layer", "<i2", -1),
    ("expert", "<i4", -1),
    ("shard", "<i2", -1),
    ("unit", "<i2", -1),
    ("reason", "<u1", 0),
)
# Work of one op (FLOPs or bytes) beyond a yotta is a corrupt value, not a workload; the cost
# model's arithmetic would overflow on it.
MAX_WORK = 1e24
# The smallest value each signed tag may hold: -1 means "none" (docs/schedule.md); requests
# number from 0 (a negative one would give a negative time to first token).
TAG_MINIMUM = {"request": 0, "token": -1, "layer": -1, "expert": -1, "shard": -1, "unit": -1}
BYTES_PER_OP = sum(np.dtype(dt).itemsize for _, dt, _ in COLUMNS) + 8  # + dep_ptr; + 4 per dep


@dataclass(frozen=True, eq=False)
class Schedule:
    """An immutable schedule: per-op columns, dependency CSR, resource names and meta."""

    resources: tuple[str, ...]
    meta: dict[str, Any]
    kind: np.ndarray
    resource: np.ndarray
    flops: np.ndarray
    mem_bytes: np.ndarray
    link_bytes: np.ndarray
    phase: np.ndarray
    request: np.ndarray
    token: np.ndarray
    layer: np.ndarray
    expert: np.ndarray
    shard: np.ndarray
    unit: np.ndarray
    reason: np.ndarray
    dep_ptr: np.ndarray  # int64 [n + 1]
    dep_idx: np.ndarray  # int32 [deps]
    _cache: dict = field(default_factory=dict, repr=False)
    source: str = field(default="<schedule>", repr=False)  # the file it was read from (messages)

    def __len__(self) -> int:
        return len(self.kind)

    def deps(self, op: int) -> np.ndarray:
        """Ids of the ops `op` depends on."""
        return self.dep_idx[self.dep_ptr[op] : self.dep_ptr[op + 1]]

    def column(self, name: str) -> np.ndarray:
        """The per-op column called `name` (see COLUMNS)."""
        return getattr(self, name)

    def resource_index(self, name: str) -> int:
        """Index of resource `name` in this schedule."""
        try:
            return self.resources.index(name)
        except ValueError:
            raise KeyError(f"schedule has no resource '{name}'") from None

    def dep_lists(self) -> tuple[list[int], list[int]]:
        """`dep_ptr` and `dep_idx` as Python lists (cached: the replay loops index them per op)."""
        lists = self._cache.get("dep_lists")
        if lists is None:
            lists = self._cache["dep_lists"] = (self.dep_ptr.tolist(), self.dep_idx.tolist())
        return lists

    def step_runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token steps (ops grouped by (request, token); ops with token -1 belong to none) as runs
        of consecutive ops with one (request, token), cached. Returns (bounds, step, first): run
        j is ops [bounds[j], bounds[j + 1]), `step[j]` its step number (steps numbered in
        (request, token) order; -1 when untagged), `first[k]` the smallest op id of step k.
        Emitted schedules tag whole iterations, so there are far fewer runs than ops and
        nothing per op is kept."""
        cached = self._cache.get("step_runs")
        if cached is None:
            n = len(self)
            new = np.ones(n, dtype=bool)
            np.not_equal(self.token[1:], self.token[:-1], out=new[1:])
            new[1:] |= self.request[1:] != self.request[:-1]
            bounds = np.append(np.flatnonzero(new), n)
            del new
            heads = bounds[:-1]
            token = self.token[heads]
            tagged = token >= 0
            key = (self.request[heads].astype(np.int64) << 33) | (token.astype(np.int64) + 1)
            keys, inverse = np.unique(key[tagged], return_inverse=True)
            step = np.full(len(heads), -1, dtype=np.int64)
            step[tagged] = inverse
            first = np.full(len(keys), n, dtype=np.int64)
            np.minimum.at(first, inverse, heads[tagged])
            cached = self._cache["step_runs"] = (bounds, step, first)
        return cached

    def step_of_op(self) -> np.ndarray:
        """(phase, request, token) packed into one int64 per op, for grouping ops by token step."""
        key = self._cache.get("step")
        if key is None:
            key = (self.request.astype(np.int64) << 33) | (self.token.astype(np.int64) + 1)
            self._cache["step"] = key
        return key


class ScheduleBuilder:
    """The one schedule builder: ops appended one at a time into typed columns, frozen by `build`.

    Ops carry an explicit tag (`tag(phase, request, token)` returns its id; the emitter makes one
    per batch and one for the batch's background copies) instead of three columns, so an op costs
    one packed record and its final columns are written once. Rows are packed by a precompiled
    `struct` into one `bytearray` (60 bytes per op, no Python objects per op; one `pack` is about
    half the CPU of extending typed arrays item by item) and moved every `CHUNK` ops into the
    final columns, which grow by doubling in their own memory mappings (`_mapped`): `build`
    hands out views of them, so the schedule is never held twice and growing leaves no heap
    holes behind. `append` is the emitter's fast path (validated as a whole by `build`); `add`
    is the keyword form that checks each op at once.
    """

    CHUNK = 1 << 14
    _INTS = ("kind", "resource", "tag", "layer", "expert", "shard", "unit", "reason", "ndeps")
    _FLOATS = ("flops", "mem_bytes", "link_bytes")
    _ROW = struct.Struct("<9i3d")  # _INTS then _FLOATS, the order `append` packs them in
    _ROW_DTYPE = np.dtype([(n, "<i4") for n in _INTS] + [(n, "<f8") for n in _FLOATS])

    def __init__(self, resources: Sequence[str], meta: dict[str, Any] | None = None):
        if len(set(resources)) != len(resources) or not resources:
            raise ValueError(f"resource names must be unique and non-empty: {list(resources)}")
        self.resources = tuple(resources)
        self.meta = dict(meta or {})
        self.index = {name: i for i, name in enumerate(self.resources)}
        self._tags: dict[tuple[int, int, int], int] = {}
        self._rows = bytearray()  # packed _ROW records of the ops not yet moved into columns
        self._deps = array("i")
        self._cols = {name: _mapped(0, _COLUMN_DTYPES[name]) for name in _COLUMN_DTYPES}
        self._dep_col = _mapped(0, "<i4")
        self._done = 0  # ops already moved into the columns
        self._deps_done = 0  # dependencies already moved into the columns
        self._pack = self._ROW.pack
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def resource(self, name: str) -> int:
        """The index of resource `name` (for `add`)."""
        try:
            return self.index[name]
        except KeyError:
            raise ValueError(
                f"unknown resource '{name}' (have {', '.join(self.resources)})"
            ) from None

    def tag(self, phase: int, request: int, token: int) -> int:
        """The id of the op tag (phase, request, token), made on first use."""
        key = (int(phase), int(request), int(token))
        found = self._tags.get(key)
        if found is None:
            found = self._tags[key] = len(self._tags)
        return found

    def append(self, tag: int, kind: int, res: int, flops: float, mem: float, link: float,
               deps: Sequence[int], layer: int, expert: int, shard: int, unit: int,
               reason: int) -> int:  # fmt: skip
        """Append one op (fast path, no checks until `build`); returns its id."""
        n = self.n
        self._rows += self._pack(kind, res, tag, layer, expert, shard, unit, reason, len(deps),
                                 flops, mem, link)  # fmt: skip
        if type(deps) is list:  # array.fromlist is ~2.5x faster than extend on a list
            self._deps.fromlist(deps)
        else:
            self._deps.extend(deps)
        self.n = n + 1
        return n

    def writer(self) -> tuple[bytearray, Any, array]:
        """The in-place fast path for emitters that write many rows in a loop: (rows, pack,
        deps). An op is `rows += pack(kind, resource, tag, layer, expert, shard, unit, reason,
        ndeps, flops, mem, link)` (the `_ROW` order) plus its `ndeps` ids put into `deps`; the
        caller numbers them from `n` and sets `n` past the last one before any other call on
        the builder. About half the CPU of an `append` call per op. Valid until `compact`."""
        return self._rows, self._pack, self._deps

    def _pending(self) -> np.ndarray:
        """The rows not yet moved into the columns, as a structured view of `_rows` (delete it before
        the next append: a bytearray with an exported buffer cannot grow)."""
        return np.frombuffer(self._rows, dtype=self._ROW_DTYPE)

    def rows_since(self, lo: int) -> tuple[np.ndarray, ...]:
        """(kind, resource, unit, flops, mem_bytes, link_bytes, dep_ptr, dep_idx) of ops lo..,
        copied out of the rows not yet compacted (the serving clock reads each iteration's ops
        before `compact`); dep_ptr holds len+1 offsets into the returned dep_idx plus its first."""
        rows = self._pending()
        first = self.n - len(rows)
        if lo < first:
            del rows
            raise ValueError(f"ops before {first} were compacted; cannot read op {lo}")
        j = lo - first
        counts = rows["ndeps"]
        start = int(counts[:j].sum())
        ptr = np.zeros(len(counts) - j + 1, dtype=np.int64)
        np.cumsum(counts[j:], out=ptr[1:])
        deps = np.frombuffer(self._deps, dtype=np.int32)[start : start + int(ptr[-1])].copy()
        ptr += self._deps_done + start
        mine = rows[j:]
        out = tuple(mine[name].astype(dt) for name, dt in (
            ("kind", "<i4"), ("resource", "<i4"), ("unit", "<i4"), ("flops", "<f8"),
            ("mem_bytes", "<f8"), ("link_bytes", "<f8"))) + (ptr, deps)  # fmt: skip
        del rows, mine, counts  # release the buffer (an exporting bytearray cannot grow)
        return out

    def compact(self) -> None:
        """Move buffered rows into the typed columns once there are `CHUNK` of them (bounds the
        memory of rows in flight); the emitter calls it between iterations."""
        if len(self._rows) >= self.CHUNK * self._ROW.size:
            self._compact()

    def add(self, kind: int, resource: int, *, flops: float = 0.0, mem_bytes: float = 0.0,
            link_bytes: float = 0.0, deps: Sequence[int] = (), phase: int = Phase.DECODE,
            request: int = 0, token: int = -1, layer: int = -1, expert: int = -1, shard: int = -1,
            unit: int = -1, reason: int = Reason.NONE) -> int:  # fmt: skip
        """Append one op and return its id; every dep must be an earlier op id."""
        n = self.n
        if not 0 <= resource < len(self.resources):
            raise ValueError(f"op {n}: resource index {resource} out of range")
        if deps and (min(deps) < 0 or max(deps) >= n):
            raise ValueError(f"op {n}: dependencies {list(deps)} must be earlier op ids (< {n})")
        tag = self.tag(phase, request, token)
        op = self.append(tag, int(kind), resource, float(flops), float(mem_bytes),
                         float(link_bytes), deps, layer, expert, shard, unit, int(reason))  # fmt: skip
        self.compact()
        return op

    def _compact(self) -> None:
        """Move the buffered rows into the typed columns."""
        rows = self._pending()
        lo, hi = self._done, self._done + len(rows)
        d0, d1 = self._deps_done, self._deps_done + len(self._deps)
        for name in self._cols:  # one column at a time: an outgrown one is freed at once
            self._cols[name] = _room(self._cols[name], lo, hi + 1)
        self._dep_col = _room(self._dep_col, d0, d1)
        for name in self._INTS[:-1] + self._FLOATS:
            self._cols[name][lo:hi] = rows[name]
        ptr = self._cols["dep_ptr"]  # each op's first dependency (dep_ptr[hi] is set by build)
        ptr[lo] = d0
        np.cumsum(rows["ndeps"][:-1], out=ptr[lo + 1 : hi])
        ptr[lo + 1 : hi] += d0
        del rows
        self._dep_col[d0:d1] = np.frombuffer(self._deps, dtype=np.int32)
        self._done, self._deps_done = hi, d1
        self._rows, self._deps = bytearray(), array("i")

    def build(self, meta: dict[str, Any] | None = None) -> Schedule:
        """Freeze into a validated `Schedule` (`meta` replaces the constructor's when given).
        Its columns are views of the builder's, which it must not append to afterwards."""
        if len(self._rows):
            self._compact()
        n = self._done
        table = np.array(list(self._tags) or [(0, 0, 0)], dtype=np.int64).reshape(-1, 3)
        cols = self._cols
        cols["dep_ptr"] = _room(cols["dep_ptr"], n, n + 1)
        cols["dep_ptr"][n] = self._deps_done
        out = {name: cols[name][: n + (name == "dep_ptr")] for name in cols if name != "tag"}
        tag = cols["tag"][:n]
        for i, name in enumerate(("phase", "request", "token")):
            out[name] = table[:, i].astype(DTYPES[name])[tag]
        del tag
        deps = self._dep_col[: self._deps_done]
        ptr = out.pop("dep_ptr")
        s = Schedule(self.resources,
                     json.loads(json.dumps(self.meta if meta is None else meta, sort_keys=True)),
                     **out, dep_ptr=ptr, dep_idx=deps)  # fmt: skip
        validate(s, "<builder>")
        return s


DTYPES = {name: np.dtype(dt) for name, dt, _ in COLUMNS}
_TAG_DTYPE = np.dtype("<i4")
# the builder's columns: the schedule's, less the three a tag stands for, plus the tag
_COLUMN_DTYPES = {
    **{name: dt for name, dt in DTYPES.items() if name not in ("phase", "request", "token")},
    "tag": _TAG_DTYPE,
    "dep_ptr": np.dtype("<i8"),
}


def _mapped(n: int, dtype) -> np.ndarray:
    """A zeroed array of n items in its own private anonymous memory mapping: its pages are
    resident only once written, and all of it goes back to the system when the array dies (a
    heap block may stay behind as a hole that the process keeps). Private: a forked process
    gets copy-on-write pages, as with heap memory."""
    dt = np.dtype(dtype)
    if not hasattr(mmap, "MAP_PRIVATE"):  # (Windows) plain zeroed memory
        return np.zeros(n, dtype=dt)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    return np.frombuffer(mmap.mmap(-1, max(1, n * dt.itemsize), flags=flags), dtype=dt, count=n)


_MIN_ROOM = 1 << 16  # items a column first gets room for


def _room(col: np.ndarray, used: int, n: int) -> np.ndarray:
    """`col`, or a mapped copy of its first `used` items with room for at least n (doubling)."""
    if n <= len(col):
        return col
    grown = _mapped(max(n, 2 * len(col), _MIN_ROOM), col.dtype)
    grown[:used] = col[:used]
    return grown


def from_arrays(resources: Sequence[str], meta: dict[str, Any], dep_ptr: np.ndarray, dep_idx: np.ndarray,
                source: str = "<arrays>", **columns: np.ndarray) -> Schedule:  # fmt: skip
    """Build a schedule from whole columns at once (missing tag columns take their defaults).
    `source` names the file the columns came from in error messages."""
    n = len(dep_ptr) - 1
    cols = {}
    for name, dt, default in COLUMNS:
        given = columns.pop(name, None)
        cols[name] = np.full(n, default, dtype=dt) if given is None else np.asarray(given, dtype=dt)
    if columns:
        raise ValueError(f"unknown columns {sorted(columns)}")
    s = Schedule(tuple(resources), json.loads(json.dumps(meta, sort_keys=True)), **cols,
                 dep_ptr=np.asarray(dep_ptr, np.int64), dep_idx=np.asarray(dep_idx, np.int32),
                 source=source)  # fmt: skip
    validate(s, source)
    return s


def is_unicode(value: Any) -> bool:
    """True when every string in a parsed JSON value is valid Unicode: JSON's `\\ud83d` escapes
    can produce lone surrogates, which no output (terminal, file, JSON report) can encode."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate(s: Schedule, path: str) -> None:
    """Check column lengths, enum ranges, resource indices and that deps point backwards."""
    n = len(s.kind)

    def bad(what: str, op: int | None = None) -> NdpcError:
        where = f"op {op}: " if op is not None else ""
        return NdpcError(f"invalid schedule: {where}{what}", Location(path, name=path))

    for name, dt, _ in COLUMNS:
        col = s.column(name)
        if col.shape != (n,) or col.dtype != np.dtype(dt):
            raise bad(
                f"column '{name}' has shape {col.shape} dtype {col.dtype}, expected ({n},) {dt}"
            )
    if s.dep_ptr.shape != (n + 1,) or s.dep_ptr[0] != 0 or s.dep_ptr[-1] != len(s.dep_idx):
        raise bad("dependency pointers do not match the dependency list")
    if n and np.any(np.diff(s.dep_ptr) < 0):
        raise bad("dependency pointers decrease", int(np.argmax(np.diff(s.dep_ptr) < 0)))
    for name, limit in (
        ("kind", len(OpKind)),
        ("resource", len(s.resources)),
        ("reason", len(Reason)),
        ("phase", 2),
    ):
        col = s.column(name)
        hit = np.flatnonzero(col >= limit)
        if len(hit):
            raise bad(f"field '{name}' = {int(col[hit[0]])} out of range (< {limit})", int(hit[0]))
    step = 1 << 20  # ops per slice: the temporaries stay small next to the schedule
    for lo in range(0, n if len(s.dep_idx) else 0, step):
        hi = min(n, lo + step)
        ptr = s.dep_ptr[lo : hi + 1]
        deps = s.dep_idx[ptr[0] : ptr[-1]]
        owner = np.repeat(np.arange(lo, hi, dtype=np.int32), np.diff(ptr))
        hit = np.flatnonzero((deps < 0) | (deps >= owner))
        if len(hit):
            raise bad(f"dependency {int(deps[hit[0]])} is not an earlier op", int(owner[hit[0]]))
    for name in ("flops", "mem_bytes", "link_bytes"):
        col = s.column(name)
        hit = np.flatnonzero(~(col >= 0) | (col > MAX_WORK))  # (NaN fails the first test)
        if len(hit):
            raise bad(f"field '{name}' = {col[hit[0]]} must be in [0, {MAX_WORK:g}]", int(hit[0]))
    for name, low in TAG_MINIMUM.items():
        col = s.column(name)
        hit = np.flatnonzero(col < low)
        if len(hit):
            what = "a request id >= 0" if low == 0 else ">= 0, or -1 for none"
            raise bad(f"field '{name}' = {int(col[hit[0]])} must be {what}", int(hit[0]))


def save_schedule(s: Schedule, path: str | Path) -> None:
    """Write `s` in the binary format of docs/schedule.md (deterministic bytes)."""
    arrays = [(name, s.column(name)) for name, _, _ in COLUMNS]
    arrays += [("dep_ptr", s.dep_ptr), ("dep_idx", s.dep_idx)]
    columns, offset = [], 0
    for name, arr in arrays:
        nbytes = arr.nbytes
        columns.append(
            {"name": name, "dtype": arr.dtype.str, "length": int(len(arr)), "offset": offset}
        )
        offset += nbytes + (-nbytes % 8)
    header = {
        "format": "ndpc-schedule",
        "version": FORMAT_VERSION,
        "ops": len(s),
        "resources": list(s.resources),
        "meta": s.meta,
        "columns": columns,
    }
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    blob += b" " * (-(len(blob) + 16) % 8)
    with open(path, "wb") as f:
        f.write(MAGIC + np.uint32(FORMAT_VERSION).tobytes() + np.uint32(len(blob)).tobytes() + blob)
        for _, arr in arrays:
            data = np.ascontiguousarray(arr).tobytes()
            f.write(data + b"\0" * (-len(data) % 8))


def load_schedule(path: str | Path) -> Schedule:
    """Read a schedule file; malformed files raise NdpcError naming the file and the field."""
    path = str(path)
    loc = Location(path, name=path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise NdpcError(f"cannot read schedule: {err.strerror or err}", loc) from None
    if len(data) < 16 or data[:8] != MAGIC:
        raise NdpcError("not an ndpc schedule file (bad magic bytes)", loc)
    version = int(np.frombuffer(data, "<u4", 1, 8)[0])
    if version != FORMAT_VERSION:
        raise NdpcError(
            f"schedule format version {version} is not supported (this ndpc reads {FORMAT_VERSION})",
            loc,
        )
    hlen = int(np.frombuffer(data, "<u4", 1, 12)[0])
    try:
        header = json.loads(data[16 : 16 + hlen])
        base = 16 + hlen
        cols = {c["name"]: c for c in header["columns"]}
        resources, meta = header["resources"], header["meta"]
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise NdpcError(f"corrupt schedule header: {err!r}", loc) from None
    if not isinstance(meta, dict):
        raise NdpcError(f"schedule header: 'meta' must be an object, got {meta!r:.60}", loc)
    if not is_unicode(header):
        raise NdpcError(
            "schedule header: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)", loc
        )
    if (
        not isinstance(resources, list)
        or not resources
        or not all(isinstance(r, str) and r for r in resources)
        or len(set(resources)) != len(resources)
    ):
        raise NdpcError("schedule header: 'resources' must be a list of unique names", loc)
    arrays: dict[str, np.ndarray] = {}
    for name, dt in [(n, d) for n, d, _ in COLUMNS] + [("dep_ptr", "<i8"), ("dep_idx", "<i4")]:
        c = cols.get(name)
        if c is None:
            raise NdpcError(f"schedule lacks column '{name}'", loc)
        try:
            length, offset, cdt = int(c["length"]), int(c["offset"]), np.dtype(c["dtype"])
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise NdpcError(f"column '{name}': bad descriptor ({err!r:.200})", loc) from None
        if (
            cdt != np.dtype(dt)
            or length < 0
            or offset < 0
            or base + offset + length * cdt.itemsize > len(data)
        ):
            raise NdpcError(f"column '{name}': descriptor {c!s:.200} does not fit the file", loc)
        arrays[name] = np.frombuffer(data, cdt, length, base + offset)
    n = len(arrays["kind"])
    if header.get("ops") != n:
        raise NdpcError(f"header says {header.get('ops')} ops but column 'kind' has {n}", loc)
    s = Schedule(tuple(resources), meta, **arrays, source=path)
    validate(s, path)
    return s
