"""The baselines' passes: fiddler-profile (offline profile -> moe.resident) and stripe."""

from __future__ import annotations

import numpy as np
import pytest

from ndpc.compiler.frontend import load_model
from ndpc.compiler.passes.fiddler_profile import FiddlerProfilePass
from ndpc.compiler.passes.pipeline import make_context, parse_pipeline
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import ExpertShardsOp, ResidentOp
from ndpc.ir.verifier import verify
from ndpc.traces.format import Trace, TraceMeta, save_trace


def _calib(path, layers=2, experts=8, favourite=(3, 5)):
    """A calibration trace where layer l always picks `favourite[l]` first, then expert 0."""
    tokens = 10
    ids = np.zeros((tokens, layers, 2), dtype=np.int16)
    for layer in range(layers):
        ids[:, layer, 0] = favourite[layer]
        ids[:, layer, 1] = np.arange(tokens) % experts
        ids[ids[:, layer, 1] == favourite[layer], layer, 1] = (favourite[layer] + 1) % experts
    meta = TraceMeta(model="tiny-mixtral", layers=layers, experts=experts, k=2, source="test")
    trace = Trace(meta, ids, np.full(ids.shape, 0.5, np.float32), np.ones(tokens, np.uint8),
                  np.zeros(tokens, np.int32))  # fmt: skip
    save_trace(trace, path)
    return path


def _run(pipeline: str, model: str = "tiny-mixtral"):
    ctx = make_context("rtx5080-ndp", (), 0)
    module = load_model(model)
    for p in parse_pipeline(pipeline):
        module = p.run(module, ctx)
        verify(module)
    return module


def test_fiddler_profile_pins_the_most_popular_experts(tmp_path):
    calib = _calib(tmp_path / "c.npz")
    # a budget of exactly 3 tiny experts (3 * 3 * 64 * 32 * 2 bytes)
    budget = 3 * 3 * 64 * 32 * 2 / 2**30
    module = _run(f"fiddler-profile{{calib={calib} budget-gib={budget!r}}}")
    resident = {op.layer: op.experts for op in module.decls if isinstance(op, ResidentOp)}
    # each layer's favourite (10 uses) first; then the most used second choices, lower layer first
    assert sum(len(v) for v in resident.values()) == 3
    assert 3 in resident[0] and 5 in resident[1]


def test_fiddler_profile_fills_the_target_budget(tmp_path):
    calib = _calib(tmp_path / "c.npz")
    module = _run(f"fiddler-profile{{calib={calib}}}")  # 16 GB: every seen expert fits
    resident = {op.layer: op.experts for op in module.decls if isinstance(op, ResidentOp)}
    assert resident[0] == tuple(range(8)) and resident[1] == tuple(range(8))


@pytest.mark.parametrize(
    ("options", "message"),
    [("", "give calib=PATH"), ("calib=@trace", "filled in by ndpc compare"),
     ("calib=MISSING", "MISSING")],
)  # fmt: skip
def test_fiddler_profile_errors(tmp_path, options, message):
    path = options.replace("MISSING", str(tmp_path / "none.npz"))
    with pytest.raises((NdpcError, OSError, ValueError), match=message.replace("MISSING", "none")):
        _run(f"fiddler-profile{{{path}}}" if path else "fiddler-profile")


def test_fiddler_profile_rejects_a_trace_of_another_shape(tmp_path):
    calib = _calib(tmp_path / "c.npz", layers=3, favourite=(1, 2, 3))
    with pytest.raises(NdpcError, match="3 MoE layers, the model 2"):
        FiddlerProfilePass(calib=str(calib)).run(load_model("tiny-mixtral"), make_context("rtx5080-ndp", (), 0))  # fmt: skip


def test_stripe_spreads_every_expert_over_all_units():
    module = _run("stripe{units=3}")
    for op in module.ops_of(ExpertShardsOp):
        assert all(spec.units == (0, 1, 2) for spec in op.shards.specs)
