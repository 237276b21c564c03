"""`balance{offload-resident=true}`: resident experts may run on NDP when that shortens the layer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ndpc.backends.cost import CostModel
from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import (
    Counters,
    LayerPlan,
    LayerView,
    Placement,
    Where,
)
from ndpc.backends.policies.offload import offload_first, offload_resident
from ndpc.backends.policies.split import build_problem, makespan
from ndpc.backends.schedule import OpKind, Reason
from ndpc.backends.target import load_target
from ndpc.ir.attrs import Activation, DispatchAttr, DispatchRule, FfnAttr, ReduceSite
from ndpc.ir.types import DType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))
from emit_fixtures import compile_and_emit, qwen_like, trace_for  # noqa: E402

R, F, N = int(Where.GPU_RESIDENT), int(Where.GPU_FETCH), int(Where.NDP)
FFN = FfnAttr(d_model=2048, d_ff=768, activation=Activation.SWIGLU, bias=False, dtype=DType.BF16)
UNITS = 4
PLAN = LayerPlan(0, 0, 8, 8, FFN, ((0, 1, 2, 3),) * 8, ReduceSite.GPU,
                 DispatchAttr(DispatchRule.BALANCE, offload_resident=True))  # fmt: skip


def _setup(resident: list[int]):
    target = load_target("rtx5080-ndp").with_units(UNITS)
    times = ExpertTimes(PLAN.ffn, CostModel(target), 2.0)
    mask = np.zeros(8, dtype=bool)
    mask[resident] = True
    view = LayerView(0, 1, 0, 600, 1, 600, PLAN, np.arange(8), np.ones(8, dtype=np.int64),
                     np.ones(8), mask, Counters(1, 8), Placement((PLAN,)))  # fmt: skip
    return view, times


def _time(view, times, where: list[int]) -> float:
    problem, _ = build_problem(view, times, UNITS, np.arange(8))
    problem.gpu_base = 0.0
    for i, w in enumerate(where):
        if w == R:
            problem.fetch_time[i] = 0.0
            if problem.fetch_hold:
                problem.fetch_hold[i] = 0.0
    return makespan(problem, [w != N for w in where])


def test_all_resident_layer_sends_some_to_ndp_and_gets_shorter() -> None:
    view, times = _setup(list(range(8)))
    where = [R] * 8
    out = offload_resident(view, times, UNITS, where)
    moved = out.count(N)
    assert 0 < moved < 8 and out.count(R) == 8 - moved
    assert _time(view, times, out) < _time(view, times, where)
    # no single further move (or move back) shortens the layer: a local optimum
    best = _time(view, times, out)
    for i in range(8):
        flipped = list(out)
        flipped[i] = R if out[i] == N else N
        assert _time(view, times, flipped) >= best - 1e-12


def test_ndp_heavy_layer_keeps_its_resident_expert_on_the_gpu() -> None:
    view, times = _setup([0])
    where = [R] + [N] * 7
    assert offload_resident(view, times, UNITS, where) == where
    assert offload_resident(view, times, UNITS, [N] * 8) == [N] * 8  # nothing resident


def test_offload_first() -> None:
    assert offload_first([F, R, N, R, R], 2) == [F, N, N, N, R]
    assert offload_first([R, R], 0) == [R, R]


def test_emitted_schedule_runs_resident_experts_on_ndp() -> None:
    module = qwen_like(layers=2, experts=16)
    trace = trace_for(2, 16, 8, tokens=48, prompt=16, seed=3)
    base = "tp-split,balance{offload-resident=%s},prefetch{budget-gib=1}"
    on, _ = compile_and_emit(module, base % "true", trace)
    off, _ = compile_and_emit(module, base % "false", trace)

    def ndp_kernels(s) -> int:
        return int(np.sum((s.kind == int(OpKind.NDP_KERNEL)) & (s.reason == int(Reason.NDP))))

    def resident_kernels(s) -> int:
        return int(np.sum(s.reason == int(Reason.GPU_RESIDENT)))

    assert resident_kernels(on) < resident_kernels(off)
    assert ndp_kernels(on) > ndp_kernels(off)


def test_ndpc_pipeline_round_trips_through_the_text_form() -> None:
    from ndpc.compiler.passes.pipeline import make_context, parse_pipeline
    from ndpc.compiler.policies import POLICIES
    from ndpc.ir.parser import parse_module
    from ndpc.ir.printer import print_module

    module = qwen_like(layers=2, experts=16)
    ctx = make_context("rtx5080-ndp", ())
    for p in parse_pipeline(POLICIES["ndpc"].pipeline):
        module = p.run(module, ctx)
    text = print_module(module)
    assert "offload_resident = true" in text and "allocation = global" in text
    assert "host_cpu = true" in text
    assert print_module(parse_module(text)) == text
