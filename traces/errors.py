"""The one error type of the traces package.

`traces/` may not import `ir`, so it cannot raise `ndpc.ir.diagnostics.NdpcError`. `TraceError` is a
`ValueError` whose message already names the file and the record (token, layer, line); the CLI's
`user_errors` prints it as one line and exits 1.
"""

from __future__ import annotations

import os


class TraceError(ValueError):
    """Bad trace input: the message says which file, which record/line and what was expected."""

    def __init__(self, path: str | os.PathLike[str] | None, message: str, where: str = ""):
        self.path = str(path) if path is not None else "<trace>"
        self.where = where
        self.detail = message
        if not where:
            location = self.path
        elif where.split(" ")[0].isdigit():  # a line number: FILE:LINE, the usual compiler form
            location = f"{self.path}:{where}"
        else:
            location = f"{self.path}: {where}"
        super().__init__(f"{location}: {message}")
