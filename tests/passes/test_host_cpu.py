"""`balance{host-cpu=true}`: NDP experts may run on the host CPU when that shortens the layer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ndpc.backends.cost import CostModel
from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.policies.base import Counters, LayerPlan, LayerView, Placement, Where
from ndpc.backends.policies.host_cpu import cpu_moves, layer_time
from ndpc.backends.policies.split import build_problem, greedy_split
from ndpc.backends.schedule import OpKind, Reason
from ndpc.backends.target import load_target
from ndpc.ir.attrs import Activation, DispatchAttr, DispatchRule, FfnAttr, ReduceSite
from ndpc.ir.types import DType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))
from emit_fixtures import compile_and_emit, qwen_like, trace_for  # noqa: E402

F, N, C = int(Where.GPU_FETCH), int(Where.NDP), int(Where.CPU)
FFN = FfnAttr(d_model=2048, d_ff=768, activation=Activation.SWIGLU, bias=False, dtype=DType.BF16)
UNITS, E = 2, 64
PLAN = LayerPlan(0, 0, E, 8, FFN, ((0, 1),) * E, ReduceSite.GPU,
                 DispatchAttr(DispatchRule.BALANCE, host_cpu=True))  # fmt: skip


def _prefill_layer():
    """A prefill layer whose experts have 8..40 tokens: balance fetches the big ones and runs
    the small ones on the units (under either copy model: serial or parallel shard copies)."""
    target = load_target("rtx5080-ndp").with_units(UNITS)
    times = ExpertTimes(PLAN.ffn, CostModel(target), 2.0)
    counts = np.linspace(8, 40, E).astype(np.int64)
    tokens = int(counts.sum()) // 8
    view = LayerView(0, 0, 0, 0, tokens, 0, PLAN, np.arange(E), counts, counts.astype(float),
                     np.zeros(E, dtype=bool), Counters(1, E), Placement((PLAN,)))  # fmt: skip
    problem, _ = build_problem(view, times, UNITS, np.arange(E))
    where = [F if g else N for g in greedy_split(problem)]
    return target, view, times, where


def test_prefill_layer_that_fetches_gives_the_cpu_work_and_gets_shorter() -> None:
    target, view, times, where = _prefill_layer()
    assert F in where and N in where  # balance alone fetches and uses the units
    out = cpu_moves(view, times, UNITS, target, where)
    assert C in out
    assert layer_time(view, times, UNITS, out) < layer_time(view, times, UNITS, where)


def test_without_a_host_cpu_nothing_moves() -> None:
    _, view, times, where = _prefill_layer()
    assert cpu_moves(view, times, UNITS, None, where) == where


def test_cpu_results_queue_behind_the_layers_weight_copies() -> None:
    """The emitter issues a layer's CPU work last: on pcie.h2d (FIFO) no CPU result comes
    before a weight copy of the same layer-step."""
    module = qwen_like(layers=2, experts=16)
    trace = trace_for(2, 16, 8, tokens=40, prompt=32, seed=1)
    s, _ = compile_and_emit(module, "tp-split,balance{host-cpu=true}", trace, ("ndp.units=2",))
    cpu = s.reason == int(Reason.CPU)
    assert np.any(s.kind[cpu] == int(OpKind.CPU_KERNEL))
    transfers = s.kind == int(OpKind.TRANSFER)
    fetch = transfers & (s.reason == int(Reason.GPU_FETCH))
    ids, step = np.arange(len(s.kind)), s.step_of_op()
    h2d = s.resource == s.resource[fetch][0]
    checked = 0
    for layer in np.unique(s.layer[fetch]):
        for key in np.unique(step[fetch & (s.layer == layer)]):
            here = (s.layer == layer) & (step == key)
            ups, copies = ids[here & cpu & transfers & h2d], ids[here & fetch]
            if len(ups) and len(copies):
                assert ups.min() > copies.max()
                checked += 1
    assert checked  # some layer-step both fetched and used the CPU
