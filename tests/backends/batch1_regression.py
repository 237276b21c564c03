"""Batch-1 regression cases: schedules and reports recorded before the serving restructure.

Each case compiles a zoo model with a named policy over a small generated trace (requests run
one after another, batch 1), emits the schedule and simulates it. `record()` writes the SHA-256
of the schedule file bytes and of the report JSON, plus the headline figures, to
batch1_regression.json; `tests/backends/test_batch1_regression.py` checks the code still
produces exactly these. Re-record only for an intended change of the batch-1 model (e.g. a
cost-model change), never to paper over an emitter change:

    .venv/bin/python tests/backends/batch1_regression.py --record
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

from ndpc.backends.emit import emit_schedule
from ndpc.backends.schedule import save_schedule
from ndpc.backends.simulator import simulate
from ndpc.compiler.frontend import load_model
from ndpc.compiler.passes.pipeline import PassManager, make_context, parse_pipeline
from ndpc.compiler.policies import POLICIES
from ndpc.ir.ops import RouterOp
from ndpc.traces.format import save_trace
from ndpc.traces.generate import generate_trace

FIXTURE = Path(__file__).with_name("batch1_regression.json")
TARGET = "rtx5080-ndp"
# (model, policies, tokens per request, prompt tokens, requests, target overrides)
CASES = (
    ("mixtral-8x7b", ("paper", "ndpc", "monde", "tp", "lru", "duplex", "eplb", "oracle-cache"),
     24, 16, 2, ()),
    ("qwen3-30b-a3b", ("paper", "ndpc", "monde", "ondemand", "ctxaware", "fiddler",
                       "oracle-profile"), 20, 12, 2, ()),
    ("qwen3-30b-a3b", ("paper", "lru"), 16, 8, 1, ("gpu.memory_gib=1.0",)),
)  # fmt: skip
HEADLINE = ("ttft_s", "tpot_mean_s", "tpot_p50_s", "tpot_p99_s", "e2e_s", "bound_s", "ops",
            "prefetch_hits", "prefetch_misses", "prefetch_wasted_bytes", "requests",
            "decode_tokens")  # fmt: skip


def case_keys():
    for model, policies, tokens, prompt, requests, overrides in CASES:
        for policy in policies:
            yield model, policy, tokens, prompt, requests, overrides


def key_of(model, policy, tokens, prompt, requests, overrides) -> str:
    extra = ("," + ",".join(overrides)) if overrides else ""
    return f"{model}/{policy}/{tokens}x{requests}p{prompt}{extra}"


def run_case(model, policy, tokens, prompt, requests, overrides, tmp: Path) -> dict:
    """Emit and simulate one case; the figures recorded for it."""
    module = load_model(model)
    router = next(op for op in module.walk() if isinstance(op, RouterOp))
    layers = sum(1 for op in module.walk() if isinstance(op, RouterOp))
    trace = generate_trace(layers, router.experts, router.router.k, tokens, prompt, 7,
                           requests=requests, model=model)  # fmt: skip
    text = POLICIES[policy].pipeline
    if "calib=@trace" in text or "fiddler-profile," in text:
        path = tmp / f"{model}-{tokens}-{requests}.npz"
        save_trace(trace, path)
        text = text.replace("calib=@trace", f"calib={path}")
        text = text.replace("fiddler-profile,", f"fiddler-profile{{calib={path}}},")
    ctx = make_context(TARGET, overrides)
    compiled = PassManager(parse_pipeline(text)).run(module, ctx)
    sched = emit_schedule(compiled, trace, ctx.target, ctx.cost, meta={"policy": policy})
    sched_path = tmp / "s.sched"
    save_schedule(sched, sched_path)
    result = simulate(sched, ctx.target, ctx.cost)
    report = json.dumps(result.to_json(), sort_keys=True)
    out = {
        "schedule_sha256": hashlib.sha256(sched_path.read_bytes()).hexdigest(),
        "report_sha256": hashlib.sha256(report.encode()).hexdigest(),
    }
    data = result.to_json()
    out.update({k: data[k] for k in HEADLINE})
    return out


def record() -> None:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in case_keys():
            out[key_of(*case)] = run_case(*case, Path(tmp))
            print(key_of(*case), out[key_of(*case)]["ops"], "ops", flush=True)
    FIXTURE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    record()
