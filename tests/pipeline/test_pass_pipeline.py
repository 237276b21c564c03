"""Pipeline strings (parse/print, typed options, errors with columns) and the pass manager."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from ndpc.compiler.passes import PASSES
from ndpc.compiler.passes.base import ModulePass, PassContext
from ndpc.compiler.passes.pipeline import (
    IrDumpOptions,
    PassManager,
    PrintIR,
    TimePasses,
    parse_pipeline,
    print_pipeline,
)
from ndpc.ir.attrs import ShardAxis
from ndpc.ir.builder import synthetic_module
from ndpc.ir.core import Module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.parser import parse_module
from ndpc.ir.printer import print_module


@dataclass(frozen=True)
class FakeSplit(ModulePass):
    """Pretend to split experts (options of every kind, for the parser)."""

    name: ClassVar[str] = "tp-split"
    units: int | None = field(default=None, metadata={"doc": "NDP units; auto = the target's"})
    budget_gib: float = 6.0
    axis: ShardAxis = ShardAxis.FFN
    group: tuple[int, ...] = (0, 1)
    strict: bool = False

    def __post_init__(self) -> None:
        if self.units is not None and self.units <= 0:
            raise ValueError("units must be positive")

    def run(self, module: Module, ctx: PassContext) -> Module:
        ctx.warn(f"split over {self.units} units")
        return module


@dataclass(frozen=True)
class Identity(ModulePass):
    """Return the module unchanged."""

    name: ClassVar[str] = "balance"

    def run(self, module: Module, ctx: PassContext) -> Module:
        return module


@dataclass(frozen=True)
class DropReturn(ModulePass):
    """A buggy pass: drops every function's return."""

    name: ClassVar[str] = "prefetch"

    def run(self, module: Module, ctx: PassContext) -> Module:
        funcs = tuple(dataclasses.replace(f, ops=f.ops[:-1]) for f in module.funcs)
        return dataclasses.replace(module, funcs=funcs)


REGISTRY = {"tp-split": FakeSplit, "balance": Identity, "prefetch": DropReturn}


def test_parse_and_print_every_option_explicitly():
    passes = parse_pipeline(
        "tp-split{units=4},balance,tp-split{budget-gib=6 axis=none group=2,3 strict=true}", REGISTRY
    )
    assert passes == [
        FakeSplit(units=4),
        Identity(),
        FakeSplit(budget_gib=6.0, axis=ShardAxis.NONE, group=(2, 3), strict=True),
    ]
    text = print_pipeline(passes)
    assert text == (
        "tp-split{units=4 budget-gib=6.0 axis=ffn group=0,1 strict=false},balance,"
        "tp-split{units=auto budget-gib=6.0 axis=none group=2,3 strict=true}"
    )
    assert parse_pipeline(text, REGISTRY) == passes


def test_empty_pipeline_and_spaces():
    assert parse_pipeline("", REGISTRY) == []
    assert parse_pipeline(" balance , balance ", REGISTRY) == [Identity(), Identity()]


def test_snake_case_keys_are_accepted_too():
    assert parse_pipeline("tp-split{budget_gib=2.5}", REGISTRY) == [FakeSplit(budget_gib=2.5)]


@pytest.mark.parametrize(
    ("text", "col", "fragment"),
    [
        ("tp-split,balanse", 10, "unknown pass 'balanse'; did you mean 'balance'?"),
        ("tp-split{unit=4}", 10, "pass 'tp-split' has no option 'unit'; did you mean 'units'?"),
        (
            "tp-split{units=four}",
            16,
            "option 'units' of 'tp-split': expected an integer or auto, got 'four'",
        ),
        ("tp-split{axis=diagonal}", 15, "expected one of (none, ffn), got 'diagonal'"),
        ("tp-split{strict=maybe}", 17, "expected true or false"),
        ("tp-split{units=4", 9, "'{' of pass 'tp-split' is never closed"),
        ("tp-split{units}", 10, "expected key=value, got 'units'"),
        ("tp-split{units=1 units=2}", 18, "option 'units' given twice"),
        ("tp-split{units=0}", 1, "bad options for pass 'tp-split': units must be positive"),
        ("balance balance", 9, "expected ',' between passes"),
        ("balance,,balance", 9, "expected a pass name"),
        ("balance,", 9, "expected a pass name"),
    ],
)
def test_pipeline_errors_carry_the_column(text, col, fragment):
    with pytest.raises(NdpcError) as info:
        parse_pipeline(text, REGISTRY)
    err = info.value
    assert fragment in err.message
    assert (err.loc.file, err.loc.line, err.loc.col) == ("<pipeline>", 1, col), err.render()
    assert err.render().splitlines()[1:] == [text, " " * (col - 1) + "^"]


def test_registry_passes_have_names_docs_and_round_trip():
    for name, cls in PASSES.items():
        assert cls.name == name and cls.summary(), name
    pipeline = ",".join(PASSES)
    assert print_pipeline(
        parse_pipeline(print_pipeline(parse_pipeline(pipeline)))
    ) == print_pipeline(parse_pipeline(pipeline))


def small_module() -> Module:
    return synthetic_module(2, 8, k=2, d_model=64, d_ff=32, dense_layers=(0,), units=2)


def test_pass_manager_verifies_after_each_pass():
    manager = PassManager(parse_pipeline("balance,prefetch", REGISTRY))
    with pytest.raises(
        NdpcError, match="pass 'prefetch' produced invalid IR: .*must end with moe.return"
    ):
        manager.run(small_module())
    unchecked = PassManager(parse_pipeline("prefetch", REGISTRY), verify_each=False)
    assert unchecked.run(small_module()).funcs[0].ops[-1].OP_NAME != "moe.return"


def test_context_collects_warnings():
    ctx = PassContext()
    PassManager(parse_pipeline("tp-split{units=3}", REGISTRY)).run(small_module(), ctx)
    assert [d.render() for d in ctx.diagnostics] == ["warning: split over 3 units"]


def test_ir_dumps_are_reparseable_chunks():
    stream = io.StringIO()
    dump = PrintIR(before=frozenset({"balance"}), after_all=True, stream=stream)
    PassManager(parse_pipeline("tp-split,balance", REGISTRY), instruments=[dump]).run(
        small_module()
    )
    chunks = stream.getvalue().split("// -----\n")[1:]
    headers = [c.splitlines()[0] for c in chunks]
    assert headers == [
        "// IR after tp-split{units=auto budget-gib=6.0 axis=ffn group=0,1 strict=false}",
        "// IR before balance",
        "// IR after balance",
    ]
    expected = print_module(small_module())
    for chunk in chunks:
        assert print_module(parse_module(chunk)) == expected


def test_time_passes_reports_every_pass():
    stream = io.StringIO()
    timer = TimePasses(stream)
    PassManager(parse_pipeline("balance,balance", REGISTRY), instruments=[timer]).run(
        small_module()
    )
    timer.record("print", 0.5)
    timer.write()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("// time-passes: total ")
    assert [line.split("%  ")[1] for line in lines[1:]] == ["balance", "balance", "print"]


def test_dump_options_reject_unknown_pass_names():
    with pytest.raises(NdpcError, match="unknown pass 'canonicalise'; did you mean 'canonicalize'"):
        IrDumpOptions(print_ir_after=("canonicalise",)).pass_manager([])


def test_canonicalize_merges_resident_lists_and_removes_dead_ops():
    from ndpc.compiler.passes.canonicalize import CanonicalizePass
    from ndpc.ir.ops import ResidentOp

    module = small_module()
    decls = (
        ResidentOp(layer=1, experts=(5, 1)),
        *module.decls,
        ResidentOp(layer=1, experts=(3, 1)),
        ResidentOp(layer=1, experts=()),
    )
    out = CanonicalizePass().run(dataclasses.replace(module, decls=decls), PassContext())
    assert [d.OP_NAME for d in out.decls] == ["moe.device"] * 3 + ["moe.resident"]
    assert out.decls[-1].experts == (1, 3, 5)
    assert out.funcs == module.funcs  # nothing dead in a synthetic model
