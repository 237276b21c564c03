"""The small text form of schedules, for golden tests and hand-written test cases.

    # ndpc schedule v1
    resources gpu cpu ndp0 pcie.h2d pcie.d2h
    meta {"prefetcher": "none"}
    %0 = gpu_kernel @gpu flops=1000000.0 mem=2048.0 token=0 layer=0 reason=dense
    %1 = transfer @pcie.h2d link=4096.0 unit=0 deps=%0 token=0 layer=0 reason=partial_sum

One op per line, ids in order from %0. Work and tags are `key=value`; a field at its default
(0 work, -1 tag, phase=decode, request=0, reason=none) is omitted. Floats print in Python's
shortest round-trip form, so print -> parse -> print is the identity. Grammar in docs/schedule.md.
"""

from __future__ import annotations

import json

import numpy as np

from ndpc.backends.schedule import (
    COLUMNS,
    FORMAT_VERSION,
    MAX_WORK,
    TAG_MINIMUM,
    OpKind,
    Phase,
    Reason,
    Schedule,
    from_arrays,
    is_unicode,
    load_schedule,
)
from ndpc.ir.core import Location
from ndpc.ir.diagnostics import NdpcError

_FIELDS = {  # text key -> (column, parser, printer)
    "flops": "flops",
    "mem": "mem_bytes",
    "link": "link_bytes",
    "phase": "phase",
    "request": "request",
    "token": "token",
    "layer": "layer",
    "expert": "expert",
    "shard": "shard",
    "unit": "unit",
    "reason": "reason",
}
_DEFAULTS = {name: default for name, _, default in COLUMNS}
_FLOAT = {"flops", "mem_bytes", "link_bytes"}
# What each column may hold: work is finite and >= 0; tags fit their column type, -1 = none.
_RANGE = {
    name: (0.0, MAX_WORK) if name in _FLOAT
    else (TAG_MINIMUM.get(name, 0), int(np.iinfo(np.dtype(dt)).max))
    for name, dt, _ in COLUMNS
}  # fmt: skip


def _value_text(col: str, value) -> str:
    if col == "phase":
        return Phase(int(value)).name.lower()
    if col == "reason":
        return Reason(int(value)).name.lower()
    if col in _FLOAT:
        return repr(float(value))
    return str(int(value))


def print_schedule(s: Schedule, ops: np.ndarray | None = None) -> str:
    """The text form of `s` (or of the listed op ids only, for `ndpc schedule show`)."""
    lines = [
        f"# ndpc schedule v{FORMAT_VERSION}",
        "resources " + " ".join(s.resources),
        "meta " + json.dumps(s.meta, sort_keys=True),
    ]
    cols = {text: s.column(col) for text, col in _FIELDS.items()}
    ids = range(len(s)) if ops is None else ops.tolist()
    for i in ids:
        parts = [f"%{i} = {OpKind(int(s.kind[i])).name.lower()} @{s.resources[s.resource[i]]}"]
        deps = s.deps(i)
        for text, col in _FIELDS.items():
            value = cols[text][i]
            if value != _DEFAULTS[col]:
                parts.append(f"{text}={_value_text(col, value)}")
            if text == "link" and len(deps):
                parts.append("deps=" + ",".join(f"%{d}" for d in deps.tolist()))
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def parse_schedule(text: str, path: str = "<schedule>") -> Schedule:
    """Parse the text form; errors name `path:line:col`."""
    resources: list[str] | None = None
    meta: dict = {}
    columns = {col: [] for col, _, _ in COLUMNS}
    ptr, idx = [0], []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        def fail(msg: str, token: str = "", lineno: int = lineno, raw: str = raw) -> NdpcError:
            col = raw.find(token) + 1 if token and token in raw else 1
            return NdpcError(msg, Location(path, lineno, col), text)

        if line.startswith("resources "):
            resources = line.split()[1:]
            if len(set(resources)) != len(resources):
                raise fail("resource names must be unique", "resources")
            continue
        if line.startswith("meta "):
            try:
                meta = json.loads(line[5:])
            except json.JSONDecodeError as err:
                raise fail(f"bad meta JSON: {err.msg}", line[5:]) from None
            except (ValueError, RecursionError) as err:  # over-long integers, deep nesting
                raise fail(f"bad meta JSON: {err!r:.100}", line[5:]) from None
            if not isinstance(meta, dict):
                raise fail("meta must be a JSON object", line[5:])
            if not is_unicode(meta):
                raise fail("meta holds a lone UTF-16 surrogate", line[5:])
            continue
        if resources is None:
            raise fail("expected 'resources ...' before the first op")
        words = line.split()
        n = len(ptr) - 1
        if len(words) < 4 or words[0] != f"%{n}" or words[1] != "=" or not words[3].startswith("@"):
            raise fail(f"expected '%{n} = KIND @RESOURCE key=value ...'", words[0] if words else "")
        try:
            kind = OpKind[words[2].upper()]
        except KeyError:
            raise fail(f"unknown op kind '{words[2]}'", words[2]) from None
        if words[3][1:] not in resources:
            raise fail(f"unknown resource '{words[3][1:]}'", words[3])
        row = dict(_DEFAULTS)
        row["kind"] = int(kind)
        row["resource"] = resources.index(words[3][1:])
        deps: list[int] = []
        for word in words[4:]:
            key, sep, value = word.partition("=")
            if not sep:
                raise fail(f"expected key=value, got '{word}'", word)
            if key == "deps":
                try:
                    deps = [int(d.removeprefix("%")) for d in value.split(",")]
                except ValueError:
                    raise fail(f"bad dependency list '{value}'", word) from None
                if any(not 0 <= d < n for d in deps):
                    raise fail(f"dependencies must be earlier ops (< %{n})", word)
                continue
            col = _FIELDS.get(key)
            if col is None:
                raise fail(f"unknown field '{key}'", word)
            try:
                if col == "phase":
                    row[col] = int(Phase[value.upper()])
                elif col == "reason":
                    row[col] = int(Reason[value.upper()])
                elif col in _FLOAT:
                    row[col] = float(value)
                else:
                    row[col] = int(value)
            except (KeyError, ValueError):
                raise fail(f"bad value '{value}' for '{key}'", word) from None
            low, high = _RANGE[col]
            if not low <= row[col] <= high:  # (NaN fails too)
                raise fail(f"'{key}' = {value} out of range [{low}, {high}]", word)
        for col in columns:
            columns[col].append(row[col])
        idx.extend(deps)
        ptr.append(len(idx))
    if resources is None:
        raise NdpcError("no 'resources' line", Location(path, name=path))
    arrays = {
        col: np.asarray(vals, dtype=dt)
        for (col, dt, _), vals in zip(COLUMNS, columns.values(), strict=True)
    }
    return from_arrays(resources, meta, np.asarray(ptr), np.asarray(idx, dtype=np.int32),
                       source=path, **arrays)  # fmt: skip


def read_any_schedule(path: str) -> Schedule:
    """A schedule from `path`: the text form when it ends in .txt, else the binary form."""
    if not str(path).endswith(".txt"):
        return load_schedule(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise NdpcError(
            f"cannot read schedule: {err}", Location(str(path), name=str(path))
        ) from None
    return parse_schedule(text, str(path))
