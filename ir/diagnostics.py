"""Diagnostics: the error type every ndpc layer raises for bad input, rendered MLIR-style.

`NdpcError` carries a location and renders as `FILE:LINE:COL: error: message`, followed by the
source line and a caret when the source text is known. The CLI prints it and exits 1, without a
traceback.
"""

from __future__ import annotations

from pathlib import Path

from ndpc.ir.core import Location


class NdpcError(Exception):
    """Bad input or an unsatisfiable request, with where it was found."""

    def __init__(self, message: str, loc: Location | None = None, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.source = source

    def render(self) -> str:
        where = f"{self.loc}: " if self.loc is not None else ""
        text = f"{where}error: {self.message}"
        if self.loc is None or self.source is None or self.loc.line <= 0:
            return text
        lines = self.source.splitlines()
        if self.loc.line > len(lines):
            return text
        line = lines[self.loc.line - 1]
        caret = " " * max(self.loc.col - 1, 0) + "^"
        return f"{text}\n{line}\n{caret}"

    def __str__(self) -> str:
        return self.render()


def read_source(path: str | Path, limit: int, what: str) -> str:
    """The UTF-8 text of a user's file, reading at most `limit` bytes: a longer file (or a
    device such as /dev/zero) is refused, never read whole. NdpcError names the file."""
    where = Location(str(path), name=str(path))
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except (OSError, ValueError) as err:
        raise NdpcError(
            f"cannot read {what}: {getattr(err, 'strerror', None) or err}", where
        ) from None
    if len(data) > limit:
        raise NdpcError(f"{what} is larger than the {limit >> 20} MiB limit", where)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        at = Location(str(path), line, col)
        raise NdpcError(f"{what} is not UTF-8 text (byte 0x{data[err.start]:02x})", at) from None
