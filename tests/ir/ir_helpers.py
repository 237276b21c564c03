"""Shared helpers for the IR tests: golden files and error-position assertions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.parser import parse_module
from ndpc.ir.verifier import verify

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "filecheck"


def _body(name: str) -> str:
    """A golden file without its comment (RUN/CHECK) lines."""
    text = (GOLDEN_DIR / "ir" / name).read_text()
    return "".join(line for line in text.splitlines(True) if not line.lstrip().startswith("//"))


MODEL = _body("model.ndpir")
SPLIT = _body("after_passes.ndpir")


def golden_files() -> list[Path]:
    """Every golden `.ndpir` file (all areas), for round-trip tests."""
    return sorted(GOLDEN_DIR.rglob("*.ndpir"))


def position_of(text: str, needle: str, occurrence: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the `occurrence`-th `needle` in `text`."""
    index = -1
    for _ in range(occurrence + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, col


def check_error(
    text: str, line: int, col: int, fragment: str, *, verify_too: bool = False
) -> NdpcError:
    """Parse (and verify) `text`; assert an NdpcError at line:col whose message has `fragment`."""
    with pytest.raises(NdpcError) as info:
        module = parse_module(text, "t.ndpir")
        if verify_too:
            verify(module)
    err = info.value
    assert fragment in err.message, err.render()
    assert (err.loc.line, err.loc.col) == (line, col), err.render()
    assert err.render().startswith(f"t.ndpir:{line}:{col}: error: "), err.render()
    return err
