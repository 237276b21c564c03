"""A fast lexer for the IR grammar, plugged into lark's LALR parser.

lark's contextual lexer spends most of the parse time matching one token at a time (and the
whitespace between tokens separately). This lexer scans with a single compiled alternation of
the grammar's own terminals, in C via `re.finditer`, and tracks lines only at whitespace. It
yields the same tokens lark's lexer would: keywords (`moe.func`, `true`, `loc`, ...) are
re-typed from NAME / OP_NAME matches, exactly like lark's keyword handling.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lark.exceptions import UnexpectedCharacters
from lark.lexer import Lexer, Token

# Regex terminals in match order: first match wins, so longer or more specific tokens come first.
REGEX_ORDER = (
    "WS",
    "COMMENT",
    "STRING",
    "TENSOR_TYPE",
    "TYPE_NAME",
    "ATTR_NAME",
    "VALUE",
    "SYMBOL",
    "OP_NAME",
    "NAME",
    "FLOAT",
    "INT",
)
_SKIPPED = frozenset({"WS", "COMMENT"})


class IrLexer(Lexer):
    """Single-regex lexer over the terminals of `ir/grammar.lark` (lark interface 0)."""

    def __init__(self, lexer_conf) -> None:
        terminals = {t.name: t for t in lexer_conf.terminals}
        regex = {n: t for n, t in terminals.items() if t.pattern.type == "re"}
        if set(regex) != set(REGEX_ORDER):
            raise RuntimeError(f"grammar terminals changed; update ir/lexer.py: {sorted(regex)}")
        literals = {t.pattern.value: n for n, t in terminals.items() if t.pattern.type == "str"}
        words = re.compile(f"(?:{regex['NAME'].pattern.value}|{regex['OP_NAME'].pattern.value})\\Z")
        self.keywords = {value: name for value, name in literals.items() if words.match(value)}
        punctuation = sorted((v for v in literals if v not in self.keywords), key=len, reverse=True)
        parts = [f"(?P<{n}>{regex[n].pattern.value})" for n in REGEX_ORDER]
        parts += [f"(?P<{literals[v]}>{re.escape(v)})" for v in punctuation]
        self.pattern = re.compile("|".join(parts))

    def lex(self, text: str) -> Iterator[Token]:
        line, line_start, pos = 1, 0, 0
        keywords = self.keywords
        match_at = self.pattern.match
        end = len(text)
        while pos < end:
            match = match_at(text, pos)
            if match is None:
                raise UnexpectedCharacters(text, pos, line, pos - line_start + 1)
            kind, value = match.lastgroup, match.group()
            if kind in _SKIPPED:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = pos + value.rindex("\n") + 1
            else:
                if kind in ("NAME", "OP_NAME"):
                    kind = keywords.get(value, kind)
                yield Token(kind, value, pos, line, pos - line_start + 1)
            pos = match.end()
