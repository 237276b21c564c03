"""The fast IR lexer yields exactly what lark's own contextual lexer would.

On text that does not parse, both must fail on the same line and point at the same place: the
fast lexer is not contextual, so it may read a longer token where lark's lexer stops at the first
character no terminal of the context matches (`d.type` is an op name to it); the error is then at
the start of that token, which must contain the reference's column."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from ir_helpers import MODEL, SPLIT, golden_files
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

import ndpc.ir.parser
from ndpc.ir.builder import synthetic_module
from ndpc.ir.printer import print_module

REFERENCE = Lark(
    (Path(ndpc.ir.parser.__file__).parent / "grammar.lark").read_text(),
    parser="lalr",
    maybe_placeholders=True,
)


def tokens(tree: Tree) -> list[tuple[str, str, int, int]]:
    out = []
    for node in tree.iter_subtrees_topdown():
        out += [(c.type, str(c), c.line, c.column) for c in node.children if isinstance(c, Token)]
    return out


def same_parse(text: str) -> None:
    try:
        expected = REFERENCE.parse(text)
    except UnexpectedInput as err:
        with pytest.raises(UnexpectedInput) as info:
            ndpc.ir.parser._LARK.parse(text)
        got = info.value
        assert got.line == err.line
        token = getattr(got, "token", None)
        if isinstance(token, Token) and got.column != err.column:
            assert got.column <= err.column < got.column + len(token), (got, err)
        else:
            assert got.column == err.column
        return
    got = ndpc.ir.parser._LARK.parse(text)
    assert got == expected
    assert tokens(got) == tokens(expected)


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: p.name)
def test_golden_files_lex_identically(path):
    same_parse(path.read_text())


def test_large_module_lexes_identically():
    same_parse(print_module(synthetic_module(3, 16, k=2, units=3, tables="mixed"), expand=True))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([MODEL, SPLIT]), st.integers(0, 4000), st.text(max_size=4))
@example(MODEL, 171, ".")  # `d.type`: one OP_NAME token to the fast lexer, an error at '.' to lark
def test_edited_text_lexes_identically(base, at, insert):
    at = at % (len(base) + 1)
    same_parse(base[:at] + insert + base[at:])
