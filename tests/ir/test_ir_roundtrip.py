"""Printer <-> parser round trips: golden files, synthetic models, compact vs expanded tables."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ir_helpers import SPLIT, golden_files

from ndpc.ir.builder import synthetic_module
from ndpc.ir.core import Value
from ndpc.ir.ops import ExpertShardsOp
from ndpc.ir.parser import parse_module
from ndpc.ir.printer import expert_set, print_module


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: str(p.parent.name + "/" + p.name))
def test_golden_file_round_trips(path):
    text = path.read_text()
    if "--verify-diagnostics" in text:
        pytest.skip("negative golden file")
    once = print_module(parse_module(text, str(path)))
    assert print_module(parse_module(once)) == once
    expanded = print_module(parse_module(text), expand=True)
    assert print_module(parse_module(expanded)) == once


@pytest.mark.parametrize("tables", ["uniform", "mixed"])
def test_split_model_round_trips_and_tables_agree(tables):
    module = synthetic_module(
        3, 32, k=4, d_model=64, d_ff=32, dense_layers=(0,), units=6, tables=tables, seed=3
    )
    text = print_module(module)
    assert print_module(parse_module(text)) == text
    compact = [op.shards for op in parse_module(text).ops_of(ExpertShardsOp)]
    expanded = [
        op.shards for op in parse_module(print_module(module, expand=True)).ops_of(ExpertShardsOp)
    ]
    original = [op.shards for op in module.ops_of(ExpertShardsOp)]
    assert compact == expanded == original


def test_large_model_prints_a_few_hundred_lines():
    """48 layers x 128 experts (Qwen3-30B-A3B's shape), split across 4 units: compact by default."""
    module = synthetic_module(48, 128, k=8, units=4)
    compact = print_module(module).count("\n")
    expanded = print_module(module, expand=True).count("\n")
    assert compact < 800, compact
    assert expanded > 48 * 128, expanded


def test_uniform_table_prints_one_row():
    module = synthetic_module(2, 128, k=8, units=4)
    text = print_module(module)
    assert (
        "#shards<[0:128] = #tp<degree = 4, units = [0, 1, 2, 3], axis = ffn, reduce = gpu>>" in text
    )


@pytest.mark.parametrize(
    ("ids", "spelled"),
    [
        ([0, 1, 2, 3], "0:4"),
        ([5], "5"),
        ([0, 2], "0, 2"),
        ([0, 6, 12, 18], "0:19:6"),
        ([0, 1, 2, 3, 10, 20], "0:4, 10, 20"),
        ([1, 3, 5, 6, 7], "1:6:2, 6:8"),
    ],
)
def test_expert_set_spelling(ids, spelled):
    assert expert_set(ids) == spelled
    ranges = [p.split(":") for p in spelled.split(", ")]
    got = []
    for r in ranges:
        start, stop, step = (
            int(r[0]),
            int(r[1]) if len(r) > 1 else int(r[0]) + 1,
            int(r[2]) if len(r) > 2 else 1,
        )
        got += list(range(start, stop, step))
    assert got == ids


def test_value_names_are_deduplicated_stably():
    """Two values hinted `d`: the second prints as `%d_1`, and the text is a fixpoint."""
    module = parse_module(SPLIT)
    func = module.funcs[0]
    renamed = Value(func.ops[2].results[0].type, "d")
    broadcast = replace(func.ops[2], results=(renamed,))
    shards = replace(func.ops[3], operands=(renamed, func.ops[3].operands[1]))
    ops = (*func.ops[:2], broadcast, shards, *func.ops[4:])
    once = print_module(replace(module, funcs=(replace(func, ops=ops),)))
    assert "%d_1 = moe.broadcast" in once and "moe.expert_shards(%d_1, %d)" in once
    assert print_module(parse_module(once)) == once
