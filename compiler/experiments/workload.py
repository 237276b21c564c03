"""Traces for experiments: generated evaluation traces and Fiddler's calibration traces.

Fiddler profiles popularity on a calibration set that is *not* the evaluated input. For a
generated trace we draw the calibration requests from the same generator world (same model,
preset and seed, so the same underlying expert popularity) but as different requests: the trace
is regenerated with extra requests and only those extra requests are kept. A real trace needs a
calibration file from elsewhere (`--calib-trace`), e.g. a popularity table of another data set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ndpc.compiler.zoo import get_model
from ndpc.ir.diagnostics import NdpcError
from ndpc.traces.format import Trace, load_trace, save_trace
from ndpc.traces.generate import PRESETS, choose_preset, generate_trace, with_overrides

CALIB_REQUESTS = 2  # calibration requests drawn for a generated trace


def select_requests(trace, keep: np.ndarray, renumber: bool = True):
    """The tokens of `trace` whose request id is in `keep` (ids renumbered from 0)."""

    mask = np.isin(trace.request, keep)
    request = trace.request[mask]
    if renumber and len(request):
        _, request = np.unique(request, return_inverse=True)
    return Trace(
        trace.meta, trace.experts[mask], trace.weights[mask], trace.phase[mask],
        np.asarray(request, dtype=np.int32),
    )  # fmt: skip


def generate_pair(
    model: str, prompt: int, output: int, seed: int, out_dir: Path, answer_drift: float = 0.0
) -> tuple[Path, Path]:
    """An evaluation trace (1 request, `prompt` + `output` tokens) and a calibration trace (other
    requests of the same generator world) for zoo `model`, written under `out_dir`;
    `answer_drift`: the generator's prompt-to-answer drift (docs/traces.md)."""

    cfg = get_model(model)
    preset = PRESETS[choose_preset(cfg.experts, cfg.shared_experts)]
    if answer_drift:
        preset = with_overrides(preset, answer_drift=answer_drift)
    full = generate_trace(
        cfg.moe_layers, cfg.experts, cfg.top_k, prompt + output, prompt, seed,
        requests=1 + CALIB_REQUESTS, preset=preset, model=cfg.name,
        shared_experts=cfg.shared_experts,
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"-d{answer_drift:g}" if answer_drift else ""
    evaluation = out_dir / f"{cfg.name}-{prompt}+{output}-s{seed}{tag}.npz"
    calibration = out_dir / f"{cfg.name}-{prompt}+{output}-s{seed}{tag}.calib.npz"
    save_trace(select_requests(full, np.array([0])), evaluation)
    save_trace(select_requests(full, np.arange(1, 1 + CALIB_REQUESTS)), calibration)
    return evaluation, calibration


def calibration_for(trace_path: str, out_dir: Path) -> Path:
    """A calibration trace for a *generated* trace file (see the module docstring)."""

    trace = load_trace(trace_path)
    meta, params = trace.meta, trace.meta.params or {}
    if meta.source != "synthetic" or "tokens_per_request" not in params or meta.seed is None:
        raise NdpcError(
            f"{trace_path}: not a generated trace, so fiddler needs a calibration trace from "
            "another data set (--calib-trace FILE)"
        )
    requests = int(params.get("requests", 1))
    name = str(params.get("name", "auto"))
    preset = PRESETS.get(name, name)
    if params.get("answer_drift") and name in PRESETS:  # the same world, drift included
        preset = with_overrides(PRESETS[name], answer_drift=float(params["answer_drift"]))
    full = generate_trace(
        meta.layers, meta.experts, meta.k, int(params["tokens_per_request"]),
        int(params.get("prompt", 0)), int(meta.seed), requests=requests + CALIB_REQUESTS,
        preset=preset, model=meta.model,
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (Path(trace_path).stem + ".calib.npz")
    save_trace(select_requests(full, np.arange(requests, requests + CALIB_REQUESTS)), path)
    return path
