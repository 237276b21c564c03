"""Diagnostics: the error type every ndpc layer raises for bad input, rendered MLIR-style.

`NdpcError` carries a location and renders as `FILE:LINE:COL: error: message`, followed by the
source line and a caret when the source text is known. The CLI prints it and exits 1, without a
traceback.
"""

from __future__ import annotations

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
