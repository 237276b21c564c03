"""Low-level `.npz` input/output: deterministic uncompressed writing, streaming member reads."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ndpc.traces.errors import TraceError
from ndpc.traces.types import PathLike
from ndpc.traces.validate import check_header, parse_json

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_COPY_BLOCK = 16 << 20
_READ_PIECE = 8 << 20
Member = tuple[str, tuple[int, ...], np.dtype, Iterable[bytes]]


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def write_npz(
    path: PathLike, members: list[tuple[str, tuple[int, ...], np.dtype, Iterable[bytes]]]
) -> None:
    """Write an uncompressed, deterministic .npz from (name, shape, dtype, byte blocks) members."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, shape, dtype, blocks in members:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as out:
                out.write(_npy_header(shape, dtype))
                for block in blocks:
                    out.write(block)


def header_member(header: dict[str, Any]) -> tuple[str, tuple[int, ...], np.dtype, list[bytes]]:
    """The header member: the JSON object as a uint8 vector (sorted keys, so deterministic)."""
    data = json.dumps(header, sort_keys=True).encode()
    return ("header", (len(data),), np.dtype(np.uint8), [data])


def array_member(
    name: str, arr: np.ndarray, dtype: np.dtype
) -> tuple[str, tuple[int, ...], np.dtype, list[bytes]]:
    """A member holding `arr` converted to `dtype`, C order."""
    arr = np.ascontiguousarray(arr, dtype=dtype)
    return (name, arr.shape, dtype, [arr.tobytes()])


def file_blocks(path: Path) -> Iterator[bytes]:
    """The bytes of a file in 16 MiB blocks."""
    with open(path, "rb") as f:
        while block := f.read(_COPY_BLOCK):
            yield block


def _archive_size(zf: zipfile.ZipFile) -> int:
    return os.path.getsize(zf.filename) if zf.filename else 0


class NpyMember:
    """A streaming reader over one .npy member of the archive."""

    def __init__(self, zf: zipfile.ZipFile, name: str, path: PathLike):
        self.name, self.path = name, path
        info = zf.getinfo(f"{name}.npy")
        # what the archive can justify: a stored member is no larger than the archive, a deflated
        # one at most ~1032x (deflate's limit); anything claiming more is damaged
        limit = 1032 * max(1, info.compress_size)
        if info.file_size > limit or info.compress_size > _archive_size(zf):
            raise TraceError(path, f"member {name}.npy: sizes in the ZIP directory are damaged")
        self.fp = zf.open(info)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (numpy warns about Python-2 style headers)
                version = np.lib.format.read_magic(self.fp)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                self.shape, fortran, self.dtype = read(self.fp)
        except (ValueError, SyntaxError, TypeError, tokenize.TokenError, RecursionError) as err:
            # numpy parses the header as a Python literal: damage can raise any of these
            raise TraceError(path, f"member {name}.npy: not a valid .npy array ({err})") from None
        if self.dtype.hasobject:
            raise TraceError(
                path, f"member {name}.npy holds Python objects (a pickled payload); refused"
            )
        if fortran:
            raise TraceError(path, f"member {name}.npy is Fortran-ordered; the format is C-ordered")
        if not self.shape:
            raise TraceError(path, f"member {name}.npy is a scalar, not an array")
        self.row = math.prod(self.shape[1:])
        data = info.file_size - self.fp.tell()
        if math.prod(self.shape) * self.dtype.itemsize != data:
            raise TraceError(
                path,
                f"member {name}.npy declares shape {tuple(self.shape)} of {self.dtype} "
                f"but holds {data} bytes of data",
            )

    def read_rows(self, rows: int) -> np.ndarray:
        """The next `rows` rows (along axis 0), raising TraceError if the member is short.

        Reads in pieces of at most 8 MiB straight into the result, so the only memory used is
        the result itself (zipfile's own `read(n)` would hold a second copy).
        """
        nbytes = rows * self.row * self.dtype.itemsize
        out = np.empty(nbytes, dtype=np.uint8)
        pos = 0
        while pos < nbytes:
            piece = self.fp.read(min(_READ_PIECE, nbytes - pos))
            if not piece:
                raise TraceError(self.path, f"member {self.name}.npy is truncated")
            out[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            pos += len(piece)
        return out.view(self.dtype).reshape((rows, *self.shape[1:]))

    def close(self) -> None:
        """Close the member's stream."""
        self.fp.close()


@contextlib.contextmanager
def open_zip(path: PathLike) -> Iterator[zipfile.ZipFile]:
    """Open a trace archive; any ZIP-level damage met inside the block becomes a TraceError."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise TraceError(path, "no such file") from None
    except IsADirectoryError:
        raise TraceError(path, "is a directory, not a trace file") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise TraceError(
            path, f"not an ndpc trace (.npz archive) or truncated/corrupt: {err}"
        ) from None
    try:
        with zf:
            yield zf
    except (
        zipfile.BadZipFile,
        EOFError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
        OSError,
    ) as err:
        # damaged headers: an unknown compression method (NotImplementedError), the
        # "encrypted" flag (RuntimeError)
        raise TraceError(path, f"corrupt or truncated archive: {err}") from None


def read_zip_header(zf: zipfile.ZipFile, path: PathLike) -> dict[str, Any]:
    """The archive's header.npy, parsed and validated."""
    names = set(zf.namelist())
    if "header.npy" not in names:
        raise TraceError(path, "archive has no header.npy; not an ndpc trace")
    member = NpyMember(zf, "header", path)
    try:
        if member.dtype != np.uint8 or len(member.shape) != 1:
            raise TraceError(path, "header.npy must be a uint8 vector of UTF-8 JSON")
        raw = member.read_rows(member.shape[0]).tobytes()
    finally:
        member.close()
    try:
        text = raw.decode()
    except UnicodeDecodeError as err:
        raise TraceError(path, f"header.npy is not UTF-8 text: {err}") from None
    return check_header(parse_json(text, path, "header.npy"), path)
