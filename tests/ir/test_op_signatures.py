"""Op signatures (`SIGNATURE` on each op class) and the verifier's checks from them."""

from __future__ import annotations

import pytest

from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import OPS
from ndpc.ir.parser import parse_module
from ndpc.ir.signature import Is, SameAs, Signature
from ndpc.ir.types import RouteType, TensorType
from ndpc.ir.verifier import verify
from ndpc.ir.verifier_rules import OP_CHECKS

T = "tensor<?x64xbf16>"
R = "!moe.route<k = 2, experts = 8>"


def _func(args: str, results: str, body: str) -> str:
    return f"moe.module @m {{\n  moe.func @f({args}) -> ({results}) {{\n{body}  }}\n}}\n"


def _error(text: str) -> str:
    with pytest.raises(NdpcError) as info:
        verify(parse_module(text, "t.ndpir"))
    return info.value.message


def test_every_op_declares_its_own_signature():
    for name, cls in OPS.items():
        assert isinstance(cls.__dict__.get("SIGNATURE"), Signature), name


def test_a_wrong_operand_type_is_reported_from_the_signature():
    body = (
        f"    %n = moe.norm(%x) {{layer = 0, kind = rms, d_model = 64}} : ({R}) -> {R}\n"
        f"    moe.return(%n) : ({R}) -> ()\n"
    )
    message = _error(_func(f"%x: {R}", R, body))
    assert message == f"'moe.norm' op the operand must be a TensorType, got {R}"


def test_a_result_that_must_match_an_operand_is_reported_from_the_signature():
    ffn = "#ffn<d_model = 64, d_ff = 32, activation = swiglu, bias = false, dtype = bf16>"
    body = (
        f"    %e = moe.experts(%x, %r) {{layer = 0, experts = 8, ffn = {ffn}}} : ({T}, {R}) -> "
        f"tensor<?x8x64xbf16>\n    moe.return(%e) : (tensor<?x8x64xbf16>) -> ()\n"
    )
    message = _error(_func(f"%x: {T}, %r: {R}", "tensor<?x8x64xbf16>", body))
    assert message == "'moe.experts' op result must have the type of operand #0"


def test_operand_counts_come_from_the_signature():
    body = f"    %s = moe.add(%x) : ({T}) -> {T}\n    moe.return(%s) : ({T}) -> ()\n"
    message = _error(_func(f"%x: {T}", T, body))
    assert message == "'moe.add' op takes 2 operand(s) and defines 1 result(s), got 1 and 1"


def test_signatures_match_the_rules_they_replaced():
    ops = {cls.__name__: cls for cls in OPS.values()}
    assert Signature((Is(TensorType),), (Is(RouteType),)) == ops["RouterOp"].SIGNATURE
    assert ops["AttentionOp"].SIGNATURE.results == (SameAs(0),)
    assert ops["ReturnOp"].SIGNATURE.operands is None  # any operands: the function's results
    assert ops["AddOp"].SIGNATURE.describe() == (
        "(TensorType, TensorType) -> (type of operand #0), all one type"
    )
    # the rules keep only what a signature cannot state; none is left for these ops
    for name in ("AddOp", "KvCacheOp", "ReturnOp"):
        assert ops[name] not in OP_CHECKS
