"""Valid seeds for the text readers' fuzz tests (IR text, pipelines, targets, --set), and the
strict-JSON check the run reports must pass."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

from ndpc.backends.target import SCHEMA, TARGET_DIR
from ndpc.compiler.frontend import load_model
from ndpc.compiler.passes.pipeline import PassManager, make_context, parse_pipeline
from ndpc.compiler.policies import POLICIES
from ndpc.ir.printer import print_module

TARGET = "rtx5080-ndp"
MODEL = "tiny-mixtral"  # 2 MoE layers, 8 experts, top-2: every command runs in milliseconds


@cache
def ir_seeds() -> tuple[bytes, ...]:
    """The tiny model as imported, and after the paper's passes (devices, shards, dispatch,
    prefetch policy) and Fiddler's (resident sets): every op and attribute kind appears."""
    module = load_model(MODEL)
    ctx = make_context(TARGET)
    texts = [print_module(module)]
    for pipeline in ("tp-split,balance,prefetch", "tp-split{degree=1},dispatch{rule=eplb}"):
        texts.append(print_module(PassManager(parse_pipeline(pipeline)).run(module, ctx)))
    return tuple(t.encode() for t in texts)


# Every named policy but the two that need a calibration file: what a target or override is
# simulated with, rotated over the cases.
RUN_POLICIES = tuple(
    name for name, spec in POLICIES.items() if "fiddler-profile" not in spec.pipeline
)


def pipeline_seeds() -> list[bytes]:
    """Every named policy's pipeline, and options spelled out with typical values."""
    seeds = {spec.pipeline for spec in POLICIES.values() if "fiddler" not in spec.pipeline}
    seeds |= {
        "tp-split{units=4 degree=2 reduce=ndp},balance{replan-interval=8 drift-threshold=0.25}",
        "prefetch{budget-gib=1.5 source=prefill hysteresis=2.0 min-count=1 context=4096 "
        "allocation=global}",
        "stripe{units=2},dispatch{rule=monde gpu-slots=2 token-threshold=4 replan-interval=0 "
        "drift-threshold=0.0}",
        "canonicalize,strip-locations,tp-split{units=auto degree=auto reduce=auto}",
    }
    return sorted(s.encode() for s in seeds)


def target_seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(TARGET_DIR.glob("*.toml"))]


def override_keys() -> list[str]:
    return sorted(SCHEMA) + ["link.pcie.gbps"]


def write_trace(path: Path) -> Path:
    """A 16-token routing trace for the tiny model."""
    from harness import run_cli

    out = run_cli(["trace", "gen", "--model", MODEL, "--tokens", "16", "--prompt", "8",
                   "-o", str(path)])  # fmt: skip
    assert out.exit_code == 0, out.stderr
    return path


def assert_strict_json(text: str, case: str) -> dict:
    """Parse a --json report, refusing NaN/Infinity (not JSON) and non-finite numbers."""

    def refuse(name: str):
        raise AssertionError(f"{case}: report holds {name}, not strict JSON")

    report = json.loads(text, parse_constant=refuse)

    def walk(value) -> None:
        if isinstance(value, float):
            assert math.isfinite(value), f"{case}: non-finite number in report"
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(report)
    return report
