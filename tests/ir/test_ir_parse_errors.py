"""Parse errors: exact FILE:LINE:COL, a clear message, the source line and a caret."""

from __future__ import annotations

import pytest
from ir_helpers import MODEL, check_error, position_of

from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.parser import parse_module

ADD = "%r0 = moe.add(%h, %a0)"


def test_syntax_error_ten_lines_down_reports_line_and_column():
    lines = MODEL.splitlines()
    at = next(i for i, line in enumerate(lines) if ADD in line)
    lines[at] = lines[at].replace("%h, %a0", "%h %a0")  # a missing comma
    text = "\n".join(lines)
    line, col = position_of(text, "%h %a0")
    assert line >= 10, line
    err = check_error(text, line, col + 3, "unexpected '%a0'")
    assert "expected" in err.message and "','" in err.message
    rendered = err.render().splitlines()
    assert rendered[1] == lines[at]
    assert rendered[2] == " " * (col + 2) + "^"


@pytest.mark.parametrize(
    ("old", "new", "needle", "fragment"),
    [
        (
            "moe.add(%h, %a0)",
            "moe.ad(%h, %a0)",
            "moe.ad(",
            "unknown op 'moe.ad'; did you mean 'moe.add'?",
        ),
        ("moe.add(%h, %a0)", "moe.add(%h, %zz)", "%zz", "use of undefined value %zz"),
        ("%r0 = moe.add", "%h = moe.add", "%h = moe.add", "value %h is already defined (at line"),
        (
            "kind = rms, d_model = 64} : (tensor<?x64xbf16>) -> tensor<?x64xbf16>\n    %kv0",
            "kind = rmss, d_model = 64} : (tensor<?x64xbf16>) -> tensor<?x64xbf16>\n    %kv0",
            "rmss",
            "attribute 'kind' must be one of (rms, layer)",
        ),
        (
            "{layer = 0, kind = rms, d_model = 64}",
            "{layer = 0, kind = rms, d_modle = 64}",
            "d_modle",
            "has no attribute 'd_modle'; did you mean 'd_model'?",
        ),
        (
            "{layer = 0, kind = rms, d_model = 64}",
            "{layer = 0, kind = rms}",
            "moe.norm(%h) {layer = 0, kind = rms}",
            "is missing attribute 'd_model'",
        ),
        (
            "{layer = 0, kind = rms, d_model = 64}",
            "{layer = 0, layer = 0, kind = rms, d_model = 64}",
            "layer = 0, kind",
            "attribute 'layer' given twice",
        ),
        (
            "{layer = 0, kind = rms, d_model = 64}",
            "{layer = 1.5, kind = rms, d_model = 64}",
            "1.5",
            "attribute 'layer' must be an integer",
        ),
        (
            "k = 2, renormalize = true>",
            "k = 0, renormalize = true>",
            "#router<",
            "invalid #router<...>: k must be positive",
        ),
        ("(%ids: tensor<?xi32>)", "(%ids: tensor<?xq32>)", "tensor<?xq32>", "bad tensor type"),
        (
            "-> !moe.route<k = 2, experts = 8>\n",
            "-> !moe.rout<k = 2, experts = 8>\n",
            "!moe.rout<",
            "unknown type !moe.rout; did you mean '!moe.route'?",
        ),
        (
            "moe.add(%h, %a0) : (tensor<?x64xbf16>, tensor<?x64xbf16>)",
            "moe.add(%h, %a0) : (tensor<?x64xbf16>, tensor<?x32xbf16>)",
            "%a0) :",
            "operand #1 %a0 has type tensor<?x64xbf16>, but the signature says tensor<?x32xbf16>",
        ),
        (
            "moe.add(%h, %a0) : (tensor<?x64xbf16>, tensor<?x64xbf16>)",
            "moe.add(%h, %a0) : (tensor<?x64xbf16>)",
            "%h, %a0) :",
            "has 2 operands but its signature lists 1 types",
        ),
        ('loc("onnx:/layers.0/attn")', 'loc("bad \\q escape")', '"bad', "bad string literal"),
    ],
)
def test_semantic_errors_point_at_the_culprit(old, new, needle, fragment):
    assert old in MODEL
    text = MODEL.replace(old, new, 1)
    line, col = position_of(text, needle)
    check_error(text, line, col, fragment)


def test_huge_integers_are_errors():
    for old, new in [
        ("{layer = 0, kind = rms", "{layer = " + "9" * 5000 + ", kind = rms"),
        ("tensor<?xi32>", "tensor<" + "9" * 5000 + "xi32>"),
    ]:
        text = MODEL.replace(old, new, 1)
        line, col = position_of(text, "9" * 50)
        with pytest.raises(NdpcError) as info:
            parse_module(text)
        assert (info.value.loc.line, info.value.loc.col) == (
            line,
            col if "layer" in new else col - 7,
        )


def test_unexpected_character():
    text = MODEL.replace("%r0 = moe.add", "%r0 = moe.add$", 1)
    line, col = position_of(text, "$")
    check_error(text, line, col, "unexpected character '$'")


def test_end_of_input_points_after_the_last_line():
    text = MODEL[: MODEL.rindex("}")]  # drop the module's closing brace
    lines = text.splitlines()
    err = check_error(text, len(lines), len(lines[-1]) + 1, "unexpected end of input")
    assert "'}'" in err.message


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\x00\x01",
        "moe.module",
        "}}}}",
        "[" * 5000,
        "moe.module @m {" + "moe.add" * 3 + "}",
    ],
)
def test_garbage_raises_only_ndpc_error(text):
    with pytest.raises(NdpcError):
        parse_module(text)


def test_deep_nesting_is_an_error_not_a_crash():
    text = MODEL.replace(
        "{layer = 0, kind = rms, d_model = 64}", "{layer = " + "[" * 3000 + "]" * 3000 + "}", 1
    )
    with pytest.raises(NdpcError):
        parse_module(text)


def test_shard_table_rows_must_cover_each_expert_once():
    from ir_helpers import SPLIT

    twice = SPLIT.replace("[1:8:2] = #tp<degree = 1", "[1:8:2, 2] = #tp<degree = 1", 1)
    line, col = position_of(twice, "2] = #tp<degree = 1")
    check_error(twice, line, col, "expert 2 appears twice")
    missing = SPLIT.replace("[1:8:2] = #tp<degree = 1", "[1, 5:8:2] = #tp<degree = 1", 1)
    line, col = position_of(missing, "#shards<")
    check_error(missing, line, col, "has no row for expert 3")
    backwards = SPLIT.replace("[1:8:2]", "[8:1]", 1)
    line, col = position_of(backwards, "8:1]")
    check_error(backwards, line, col, "bad expert range 8:1:1")
