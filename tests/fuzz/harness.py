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
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    with time_limit(timeout):
        result = CliRunner().invoke(main, args, catch_exceptions=True)
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    return Outcome(result.exit_code, result.stdout, result.stderr, exc)


def check_outcome(out: Outcome, names: list[str], outdir: Path | None, case: str) -> None:
    """The bad-input promise for one run. `names`: the input file's name (or field) that a
    failure message must mention; `outdir`: a folder that must be empty after a failure."""
    assert out.exception is None, (
        f"{case}: uncaught {type(out.exception).__name__}: {out.exception}"
    )
    assert "Traceback" not in out.stderr, f"{case}: traceback on stderr:\n{out.stderr[-2000:]}"
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
