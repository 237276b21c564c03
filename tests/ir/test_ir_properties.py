"""Property tests: random valid modules round-trip; random corruptions raise only NdpcError."""

from __future__ import annotations

import contextlib
import re
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ir_helpers import MODEL, SPLIT

from ndpc.ir import ops as o
from ndpc.ir.attrs import (
    Activation,
    CounterSource,
    DeviceKind,
    DispatchAttr,
    DispatchRule,
    FfnAttr,
    NormKind,
    PrefetchAttr,
    ReduceSite,
    RouterAttr,
    RoutingRule,
    ShardAxis,
    ShardSpec,
    ShardTable,
)
from ndpc.ir.builder import FuncBuilder
from ndpc.ir.core import Location, Module, SymbolRef
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.parser import parse_module
from ndpc.ir.printer import print_module
from ndpc.ir.types import DistributedType, DType, RouteType, TensorType
from ndpc.ir.verifier import verify

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names = st.one_of(st.none(), st.sampled_from(["x", "x", "x_1", "0", "h.1", "a b", "é", ""]))
finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
locs = st.one_of(st.none(), st.text(max_size=12)).map(lambda n: Location(name=n))


@st.composite
def shard_tables(draw, experts: int, units: int) -> ShardTable:
    specs = []
    for _ in range(experts):
        chosen = tuple(
            draw(st.lists(st.integers(0, units - 1), min_size=1, max_size=units, unique=True))
        )
        axis = ShardAxis.FFN if len(chosen) > 1 else draw(st.sampled_from(list(ShardAxis)))
        specs.append(ShardSpec(len(chosen), chosen, axis, draw(st.sampled_from(list(ReduceSite)))))
    return ShardTable(tuple(specs))


@st.composite
def modules(draw) -> Module:
    """A random valid module: 1-3 layers, each dense, MoE, or MoE split across NDP units."""
    d_model = draw(st.sampled_from([8, 64]))
    dtype = draw(st.sampled_from(list(DType)))
    units = draw(st.integers(1, 4))
    hidden = TensorType((None, d_model), dtype)
    b = FuncBuilder("forward", [hidden], [draw(names) or "in"])
    x = b.args[0]
    resident = []
    for layer in range(draw(st.integers(1, 3))):
        ffn = FfnAttr(
            d_model,
            draw(st.integers(1, 64)),
            draw(st.sampled_from(list(Activation))),
            draw(st.booleans()),
            dtype,
            draw(st.integers(0, 64)),
            draw(finite),
        )
        n = b.add(
            o.NormOp,
            [x],
            [hidden],
            [draw(names)],
            loc=draw(locs),
            layer=layer,
            kind=draw(st.sampled_from(list(NormKind))),
            d_model=d_model,
        )[0]
        kind = draw(st.sampled_from(["dense", "moe", "split"]))
        if kind == "dense":
            y = b.add(o.MlpOp, [n], [hidden], [draw(names)], layer=layer, ffn=ffn)[0]
        else:
            experts = draw(st.integers(1, 12))
            k = draw(st.integers(1, experts))
            router = RouterAttr(
                draw(st.sampled_from(list(RoutingRule))),
                k,
                draw(st.booleans()),
                capacity_factor=draw(finite),
            )
            route = b.add(
                o.RouterOp,
                [n],
                [RouteType(k, experts)],
                [draw(names)],
                loc=draw(locs),
                layer=layer,
                experts=experts,
                router=router,
            )[0]
            if draw(st.booleans()):
                dispatch = DispatchAttr(
                    draw(st.sampled_from(list(DispatchRule))),
                    draw(st.integers(0, 9)),
                    drift_threshold=draw(finite),
                )
                route = b.add(
                    o.DispatchOp,
                    [route],
                    [route.type],
                    [draw(names)],
                    layer=layer,
                    dispatch=dispatch,
                )[0]
            resident.append(o.ResidentOp(layer=layer, experts=tuple(range(0, experts, 2))))
            if kind == "moe":
                y = b.add(
                    o.ExpertsOp,
                    [n, route],
                    [hidden],
                    [draw(names)],
                    layer=layer,
                    experts=experts,
                    ffn=ffn,
                )[0]
            else:
                dist = DistributedType(hidden, units)
                xb = b.add(
                    o.BroadcastOp,
                    [n],
                    [dist],
                    [draw(names)],
                    layer=layer,
                    src=SymbolRef("gpu"),
                    units=tuple(range(units)),
                )[0]
                table = draw(shard_tables(experts, units))
                p = b.add(
                    o.ExpertShardsOp,
                    [xb, route],
                    [replace(dist, partial=True)],
                    [draw(names)],
                    layer=layer,
                    experts=experts,
                    ffn=ffn,
                    shards=table,
                )[0]
                y = b.add(
                    o.ReduceOp,
                    [p],
                    [hidden],
                    [draw(names)],
                    layer=layer,
                    site=draw(st.sampled_from(list(ReduceSite))),
                )[0]
        x = b.add(o.AddOp, [x, y], [hidden], [draw(names)])[0]
    decls = [o.DeviceOp(sym=SymbolRef("gpu"), kind=DeviceKind.GPU)]
    decls += [
        o.DeviceOp(sym=SymbolRef(f"ndp{i}"), kind=DeviceKind.NDP, index=i) for i in range(units)
    ]
    if draw(st.booleans()):
        policy = PrefetchAttr(
            draw(st.integers(0, 2**40)),
            draw(st.sampled_from(list(CounterSource))),
            draw(finite),
            draw(st.integers(0, 5)),
        )
        decls.append(o.PrefetchPolicyOp(policy=policy))
    return Module(
        draw(st.sampled_from(["m", "qwen3.moe"])),
        tuple(decls + resident),
        (b.ret([x]),),
        draw(locs),
    )


@SETTINGS
@given(modules())
def test_random_modules_print_parse_print_identically(module):
    verify(module)
    text = print_module(module)
    again = parse_module(text)
    verify(again)
    assert print_module(again) == text
    assert print_module(parse_module(print_module(module, expand=True))) == text


TOKEN = re.compile(
    r'%[\w.]+|@[\w.]+|#\w+|!moe\.\w+|tensor<[^>]*>|"[^"\n]*"|-?\d+(?:\.\d+)?|\w+(?:\.\w+)?|->|\S'
)
GARBAGE = ["", "%", "@", "#", "<", ">", "{", "}", "(", ")", "[", "]", ",", "=", ":", "->", "-1", "1e999", "0.5",
           "99999999999999999999", "moe.add", "moe.nope", "9" * 5000, "tensor<?xq8>", "!moe.route", "#tp", '"', "\\", "\x00", "é", "none", "true"]  # fmt: skip


@st.composite
def corrupted(draw) -> str:
    text = draw(st.sampled_from([MODEL, SPLIT]))
    tokens = [m for m in TOKEN.finditer(text)]
    for _ in range(draw(st.integers(1, 3))):
        tok = draw(st.sampled_from(tokens))
        action = draw(st.sampled_from(["delete", "duplicate", "garble", "swap"]))
        start, end = tok.span()
        if action == "delete":
            text = text[:start] + text[end:]
        elif action == "duplicate":
            text = text[:start] + tok.group() + " " + text[start:]
        elif action == "garble":
            text = text[:start] + draw(st.sampled_from(GARBAGE)) + text[end:]
        else:
            other = draw(st.sampled_from(tokens)).group()
            text = text[:start] + other + text[end:]
        tokens = [m for m in TOKEN.finditer(text)] or tokens
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_corrupted_text_raises_only_ndpc_error(text):
    try:
        module = parse_module(text, "fuzz.ndpir")
        verify(module)
    except NdpcError as err:
        rendered = err.render()
        assert rendered.startswith(("fuzz.ndpir:", "error:")) or ": error: " in rendered
        return
    # still valid: it must round-trip like any valid module
    once = print_module(module)
    assert print_module(parse_module(once)) == once


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_ndpc_error(text):
    with contextlib.suppress(NdpcError):
        parse_module(text)
