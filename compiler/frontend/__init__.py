"""The ONNX front end: ONNX graphs, IR text files and zoo names -> ndpc IR modules.

`load_model(spec)` is the one entry point the CLI and the other packages use.
"""

from __future__ import annotations

from pathlib import Path

from ndpc.compiler.frontend.builder import build_module
from ndpc.compiler.frontend.zoo_spec import zoo_module
from ndpc.ir.core import Module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.parser import parse_file
from ndpc.ir.verifier import verify


def import_onnx(path: str | Path) -> Module:
    """Import the ONNX model at `path` (weights never read) into an IR module."""
    from ndpc.compiler.frontend.importer import import_spec  # lazy: onnx is slow to load

    return verify_import(build_module(import_spec(str(path))), path)


def verify_import(module: Module, path: str | Path) -> Module:
    """`module` imported from `path`, verified; the error names the file and the graph node (a
    graph whose dims make heads = 2^58 describes no model)."""
    try:
        verify(module)
    except NdpcError as err:
        raise NdpcError(f"{path}: imports to invalid IR: {err.message}", err.loc) from None
    return module


def load_model(spec: str) -> Module:
    """A verified IR module from a `.onnx` file, a `.ndpir` file or a zoo model name."""
    path = Path(spec)
    if spec.endswith(".onnx") or (path.is_file() and not spec.endswith(".ndpir")):
        if not path.exists():
            raise NdpcError(f"{spec}: no such file")
        return import_onnx(path)
    if spec.endswith(".ndpir"):
        module = parse_file(spec)  # every read or decode failure is an NdpcError naming the file
        verify(module)  # text can say anything: check it before a pass or the simulator trusts it
        return module
    if "/" in spec or "\\" in spec:  # a path, not a zoo name
        raise NdpcError(f"{spec}: no such file (or not a .onnx / .ndpir model)")

    return zoo_module(spec)
