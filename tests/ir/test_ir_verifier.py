"""Verifier: valid modules pass; each broken invariant is reported at the op's exact line:col."""

from __future__ import annotations

import dataclasses

import pytest
from ir_helpers import MODEL, SPLIT, check_error, golden_files, position_of

from ndpc.ir.builder import synthetic_module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.parser import parse_module
from ndpc.ir.verifier import verify


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: p.name)
def test_golden_files_verify(path):
    text = path.read_text()
    if "--verify-diagnostics" in text:
        pytest.skip("negative golden file")
    verify(parse_module(text, str(path)))


@pytest.mark.parametrize("tables", ["uniform", "mixed"])
def test_synthetic_modules_verify(tables):
    verify(
        synthetic_module(4, 16, k=2, d_model=64, d_ff=32, dense_layers=(0,), units=3, tables=tables)
    )


MODEL_CASES = [
    # (old, new, op-locating needle, occurrence of needle, message fragment)
    (
        "{vocab = 1000, d_model = 64,",
        "{vocab = 1000, d_model = 32,",
        "%h = ",
        0,
        "the result must end in 32",
    ),
    (
        "%n0 = moe.norm(%h) {layer = 0",
        "%n0 = moe.norm(%h) {layer = 3",
        "%kv0 = ",
        0,
        "layer 0 comes after layer 3",
    ),
    (
        "%n0 = moe.norm(%h) {layer = 0",
        "%n0 = moe.norm(%h) {layer = -2",
        "%n0 = ",
        0,
        "'layer' must be >= -1, got -2",
    ),
    (
        "*!moe.route<k = 2, experts = 8>",
        "!moe.route<k = 3, experts = 8>",
        "%route1 = ",
        0,
        "result must be !moe.route<k = 2, experts = 8>",
    ),
    (
        "%e1 = moe.experts(%m1, %route1) {layer = 1, experts = 8,",
        "%e1 = moe.experts(%m1, %route1) {layer = 1, experts = 16,",
        "%e1 = ",
        0,
        "route has 8 experts, op has 16",
    ),
    (
        "layer = 0, kind = gqa, d_model = 64, heads = 4,",
        "layer = 0, kind = gqa, d_model = 64, heads = 5,",
        "%a0 = ",
        0,
        "heads (5) must be a multiple of kv_heads (2)",
    ),
    (
        "-> (tensor<?x1000xbf16>) {",
        "-> (tensor<?x999xbf16>) {",
        "moe.return",
        0,
        "whose types differ from @forward's results",
    ),
    (
        "    %n0 = moe.norm",
        "    moe.return(%h) : (tensor<?x64xbf16>) -> ()\n    %n0 = moe.norm",
        "moe.return",
        0,
        "must be the last op of its function",
    ),
    (
        "    %n0 = moe.norm",
        "    moe.device {sym = @gpu, kind = gpu}\n    %n0 = moe.norm",
        "moe.device",
        0,
        "is a module-level declaration",
    ),
    (
        "%a1 = moe.attention(%n1, %kv1)",
        "%a1 = moe.attention(%n1, %kv0)",
        "%a1 = ",
        0,
        "uses the kv cache of layer 0 in layer 1",
    ),
]


def mutate(text: str, old: str, new: str) -> str:
    """Replace the first `old` (every one when `old` starts with '*')."""
    count = -1 if old.startswith("*") else 1
    old = old.lstrip("*")
    assert old in text
    return text.replace(old, new, count)


@pytest.mark.parametrize(("old", "new", "needle", "nth", "fragment"), MODEL_CASES)
def test_model_invariants(old, new, needle, nth, fragment):
    text = mutate(MODEL, old, new)
    line, col = position_of(text, needle, nth)
    check_error(text, line, col, fragment, verify_too=True)


SPLIT_CASES = [
    (
        "moe.device {sym = @ndp1,",
        "moe.device {sym = @ndp0,",
        "moe.device",
        3,
        "device @ndp0 is declared twice",
    ),
    (
        "kind = ndp, index = 1}",
        "kind = ndp}",
        "moe.device",
        3,
        "ndp device index 0 is declared twice",
    ),
    (
        "[0:8:2] = #tp<degree = 2, units = [0, 1]",
        "[0:8:2] = #tp<degree = 2, units = [0, 2]",
        "%p = ",
        0,
        "name NDP unit 2, not declared (declared: [0, 1])",
    ),
    (
        "[1:8:2] = #tp<degree = 1",
        "[1:6:2] = #tp<degree = 1",
        "%p = ",
        0,
        "shard table has 7 specs for 8 experts",
    ),
    ("experts = [1, 5]", "experts = [1, 9]", "moe.resident", 0, "expert ids must be in 0..7"),
    ("experts = [1, 5]", "experts = [5, 1]", "moe.resident", 0, "increasing order"),
    (
        "moe.resident {layer = 0",
        "moe.resident {layer = 3",
        "moe.resident",
        0,
        "layer 3 is not an MoE layer",
    ),
    ("src = @gpu", "src = @tpu", "%xb = ", 0, "source @tpu is not a declared device"),
    ("*units = 2>", "units = 3>", "%xb = ", 0, "result must be !moe.dist<tensor = ..., units = 2>"),
    (
        "moe.reduce(%p) {layer = 0, site = gpu} : (!moe.dist<tensor = tensor<?x64xbf16>, units = 2, partial = true>)",
        "moe.reduce(%xb) {layer = 0, site = gpu} : (!moe.dist<tensor = tensor<?x64xbf16>, units = 2>)",
        "%y = ",
        0,
        "operand must hold partial sums",
    ),
    (
        "  moe.resident",
        "  moe.prefetch_policy {policy = #prefetch<budget_bytes = 1, source = prefill>}\n  moe.resident",
        "moe.prefetch_policy",
        1,
        "at most one prefetch policy",
    ),
    (
        "  moe.resident",
        "  %k = moe.kv_cache() {layer = 0} : () -> !moe.kv_cache<kv_heads = 1, head_dim = 1, dtype = bf16>\n  moe.resident",
        "%k = ",
        0,
        "cannot appear at module level",
    ),
]


@pytest.mark.parametrize(("old", "new", "needle", "nth", "fragment"), SPLIT_CASES)
def test_split_invariants(old, new, needle, nth, fragment):
    text = mutate(SPLIT, old, new)
    line, col = position_of(text, needle, nth)
    check_error(text, line, col, fragment, verify_too=True)


def test_use_before_definition_in_built_ir_names_the_op():
    module = synthetic_module(1, 4, k=2, d_model=64, d_ff=32)
    func = module.funcs[0]
    ops = list(func.ops)
    ops[1], ops[2] = ops[2], ops[1]  # norm after kv_cache is fine; swap norm and attention instead
    ops[1], ops[3] = ops[3], ops[1]
    bad = dataclasses.replace(module, funcs=(dataclasses.replace(func, ops=tuple(ops)),))
    with pytest.raises(NdpcError, match="used before it is defined") as info:
        verify(bad)
    assert "in: %a0 = moe.attention(%n0, %kv0)" in info.value.render()


def test_wrong_python_types_and_non_finite_floats_are_rejected():
    module = parse_module(SPLIT)
    policy = module.decls[4]
    bad_policy = dataclasses.replace(policy.policy, hysteresis=float("inf"))
    bad = dataclasses.replace(
        module,
        decls=(
            *module.decls[:4],
            dataclasses.replace(policy, policy=bad_policy),
            *module.decls[5:],
        ),
    )
    with pytest.raises(NdpcError, match="must be finite"):
        verify(bad)
    device = dataclasses.replace(module.decls[0], index="0")
    with pytest.raises(NdpcError, match="'index' must be an integer"):
        verify(dataclasses.replace(module, decls=(device, *module.decls[1:])))
