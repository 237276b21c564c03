"""Shared fuzzing tools: a seeded mutator over valid seed files and a CLI runner that checks the
bad-input promise (docs/architecture.md): one clear message naming the file, a non-zero exit, no
traceback, no hang and no partial output file.

Each reader's fuzz test (tests/fuzz/test_fuzz_*.py) takes valid seeds, mutates them with
`mutations(...)`, runs the command that reads them with `run_cli(...)` and calls `check_outcome`.
The quick run (`make test`) draws a few hundred inputs per reader; `make test-slow` draws
`FUZZ_SLOW_CASES` (>= 10,000) per reader with the same code (the `count` helper picks the number).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from ndpc.compiler.cli import main

FUZZ_QUICK_CASES = int(os.environ.get("NDPC_FUZZ_QUICK", "300"))
FUZZ_SLOW_CASES = int(os.environ.get("NDPC_FUZZ_SLOW", "10000"))

# Values that break naive numeric code: zero, negatives, non-finite, huge, overflowing int sizes.
EDGE_NUMBERS = [
    "0", "-1", "-0", "0.0", "-0.5", "1e-320", "1e308", "-1e308", "1e309", "NaN", "nan", "inf",
    "-inf", "Infinity", "-Infinity", "2147483648", "-2147483649", "9223372036854775808",
    "18446744073709551616", "1" * 400, "0x10", "1_000", "1.5", "true", "null", '""', "[]", "{}",
]  # fmt: skip
EDGE_TEXT = ["", " ", "\t", "\x00", "é", "日本", "\ud83d\ude00", "\u202e", "%", "{", "}", "[", "]",
             "\\", '"', "'", "\r\n", "x" * 200_000]  # fmt: skip


def count(slow: bool) -> int:
    """Inputs per reader: the slow campaign or the quick one."""
    return FUZZ_SLOW_CASES if slow else FUZZ_QUICK_CASES


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits of `data`: byte flips, truncation, line deletion/duplication/swap,
    numeric edge values in place of numbers, odd text, long lines."""
    for _ in range(rng.randint(1, 3)):
        data = _MUTATORS[rng.randrange(len(_MUTATORS))](data, rng)
    return data


def mutations(seeds: list[bytes], n: int, seed: int = 0) -> Iterator[tuple[int, bytes]]:
    """`n` mutated inputs drawn from `seeds`, reproducibly: (case number, bytes)."""
    rng = random.Random(seed)
    for case in range(n):
        yield case, mutate(seeds[rng.randrange(len(seeds))], rng)


def _flip(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _lines(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    op = rng.randrange(3)
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[j])
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _number(data: bytes, rng: random.Random) -> bytes:
    """Replace one number (a run of digits, with sign/point/exponent) by an edge value."""
    text = data.decode("utf-8", "surrogateescape")
    spans, i = [], 0
    while i < len(text):
        if text[i].isdigit():
            j = i
            while j < len(text) and (text[j].isdigit() or text[j] in ".eE+-_"):
                j += 1
            spans.append((i - (i > 0 and text[i - 1] == "-"), j))
            i = j
        else:
            i += 1
    if not spans:
        return _text(data, rng)
    a, b = spans[rng.randrange(len(spans))]
    text = text[:a] + rng.choice(EDGE_NUMBERS) + text[b:]
    return text.encode("utf-8", "surrogateescape")


def _text(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data) + 1)
    insert = rng.choice(EDGE_TEXT).encode("utf-8", "surrogatepass")
    return data[:i] + insert + data[i:]


def _dup_block(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 2:
        return data * 2
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.randint(1, 64))
    return data[:b] + data[a:b] + data[b:]


_MUTATORS = [_flip, _truncate, _lines, _number, _number, _text, _dup_block]


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None
    warnings: list[str] = field(default_factory=list)  # those Python would print on stderr


# Categories Python's default filters hide outside __main__; any other warning reaches the user.
_QUIET = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `Hang` if the block runs longer than `seconds` (SIGALRM; main thread only)."""

    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cli(args: list[str], timeout: float = 20.0) -> Outcome:
    """Run `ndpc ARGS` in this process (fast enough for thousands of cases)."""
    with time_limit(timeout), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, args, catch_exceptions=True)
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    shown = [
        f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, _QUIET)
    ]
    return Outcome(result.exit_code, result.stdout, result.stderr, exc, shown)


def check_outcome(out: Outcome, names: list[str], outdir: Path | None, case: str) -> None:
    """The bad-input promise for one run. `names`: the input file's name (or field) that a
    failure message must mention; `outdir`: a folder that must be empty after a failure."""
    assert out.exception is None, (
        f"{case}: uncaught {type(out.exception).__name__}: {out.exception}"
    )
    assert "Traceback" not in out.stderr, f"{case}: traceback on stderr:\n{out.stderr[-2000:]}"
    assert not out.warnings, f"{case}: warnings on stderr: {out.warnings[:3]}"
    if out.exit_code == 0:
        return
    message = out.stderr.strip()
    assert message, f"{case}: non-zero exit {out.exit_code} with no message"
    assert any(name in message for name in names), (
        f"{case}: message names none of {names}:\n{message[:2000]}"
    )
    if outdir is not None:
        left = sorted(p.name for p in outdir.iterdir())
        assert not left, f"{case}: partial output left behind: {left}"


# ------------------------------------------------------------------------------ NPZ structure


def npz_members(data: bytes) -> dict[str, bytes]:
    """The members of a ZIP archive (name -> raw .npy bytes)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def npz_pack(members: dict[str, bytes]) -> bytes:
    """An uncompressed ZIP archive of `members` (the form numpy.savez writes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


class _Boom:
    """An object whose unpickling would run code: a reader that unpickles fails the test."""

    def __reduce__(self):
        return (_unpickled, ())


def _unpickled():  # pragma: no cover - only reached if a reader unpickles
    raise AssertionError("a reader unpickled an object array")


def _npy_array(raw: bytes) -> np.ndarray | None:
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception:
        return None


def npz_mutate(data: bytes, rng: random.Random) -> bytes:
    """One structural edit of a valid .npz: a member with another dtype or shape, a missing,
    extra or renamed member, an object array (pickled), a damaged .npy header, edge values in
    the data, or a byte-level `mutate` of one member (the archive itself stays a valid ZIP)."""
    members = npz_members(data)
    name = rng.choice(sorted(members))
    arr = _npy_array(members[name])
    op = rng.randrange(9)
    if op == 0:  # missing member
        del members[name]
    elif op == 1 and arr is not None:  # another dtype
        dtype = rng.choice(["<f8", "<f2", "<i8", "<u2", "<i1", "<c8", "?", "<U3", "<M8[s]", "V4"])
        try:
            members[name] = _npy(arr.astype(dtype))
        except (TypeError, ValueError):
            members[name] = _npy(np.zeros(arr.shape, dtype=dtype))
    elif op == 2 and arr is not None:  # another shape
        shapes = [(arr.size,), (1, *arr.shape), arr.shape[:-1] or (0,), (0, *arr.shape[1:]),
                  (*arr.shape[:-1], arr.shape[-1] + 1) if arr.ndim else (2,), ()]  # fmt: skip
        shape = rng.choice(shapes)
        flat = np.resize(arr.reshape(-1), int(np.prod(shape, dtype=np.int64)))
        members[name] = _npy(flat.reshape(shape))
    elif op == 3:  # an object array: must be refused, never unpickled
        payload = np.empty(2, dtype=object)
        payload[0], payload[1] = _Boom(), {"x": 1}
        members[name] = _npy(payload)
    elif op == 4:  # damaged .npy header (the Python-literal dict after the magic)
        raw = members[name]
        end = raw.find(b"\n") + 1 or min(len(raw), 128)
        members[name] = mutate(raw[:end], rng) + raw[end:]
    elif op == 5 and arr is not None and arr.size and arr.dtype.kind in "iuf":
        edge = rng.choice([0, -1, -(2**15), 2**15 - 1, 2**31 - 1, -(2**31), 255, 1e308,
                           float("nan"), float("inf"), -float("inf"), -0.5])  # fmt: skip
        flat = arr.reshape(-1).copy()
        with np.errstate(all="ignore"), contextlib.suppress(OverflowError, ValueError):
            flat[rng.randrange(flat.size)] = edge
        members[name] = _npy(flat.reshape(arr.shape))
    elif op == 6:  # renamed / extra member
        new = rng.choice(["extra.npy", "HEADER.npy", name.removesuffix(".npy"), name + ".npy"])
        members[new] = members.pop(name) if rng.random() < 0.5 else members[name]
    else:  # byte edits inside one member
        members[name] = mutate(members[name], rng)
    return npz_pack(members)
