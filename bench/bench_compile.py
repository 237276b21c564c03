"""Compile + simulate time of the paper's pipeline on real model shapes, 512 prompt + 512 decode.

Prints, per (model, policy): schedule ops, CPU seconds (process time, robust on a busy machine)
and wall seconds for the passes, the emitter and the simulator, emitter ops per CPU second, and
the simulated end-to-end latency. DeepSeek-V3's experts (1.2 TB in BF16) do not fit four 32 GiB
DIMMs, so its run uses `--set ndp.capacity_gib=320` (a what-if, as stated in the output).

Usage: python bench/bench_compile.py [quick]   (quick: Qwen3 only, `paper` only)
"""

from __future__ import annotations

import sys
import time

from ndpc.backends.emit import emit_schedule
from ndpc.backends.simulator import simulate
from ndpc.compiler.frontend import load_model
from ndpc.compiler.passes.pipeline import PassManager, make_context, parse_pipeline
from ndpc.compiler.policies import POLICIES
from ndpc.traces.generate import generate_trace

CASES = [
    ("qwen3-30b-a3b", (), ("tp", "paper")),
    ("deepseek-v3", ("ndp.capacity_gib=320",), ("paper",)),
]


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def bench(model: str, overrides: tuple[str, ...], policy: str) -> None:
    ctx = make_context("rtx5080-ndp", overrides)
    module = load_model(model)
    plans = [op for op in module.walk() if type(op).__name__ == "RouterOp"]
    router = plans[0]
    trace = generate_trace(len(plans), router.experts, router.router.k, 1024, 512, 0, model=model)
    passes = parse_pipeline(POLICIES[policy].pipeline)
    compiled, p_cpu, p_wall = _timed(lambda: PassManager(passes).run(module, ctx))
    sched, e_cpu, e_wall = _timed(lambda: emit_schedule(compiled, trace, ctx.target, ctx.cost))
    result, s_cpu, s_wall = _timed(lambda: simulate(sched, ctx.target, ctx.cost))
    what_if = f"  [what-if: {', '.join(overrides)}]" if overrides else ""
    print(
        f"{model:14s} {policy:6s} ops {len(sched):>9,d}  "
        f"passes {p_cpu:5.2f} s  emit {e_cpu:5.2f} s ({len(sched) / max(e_cpu, 1e-9) / 1e3:5.0f} kops/s)"
        f"  simulate {s_cpu:5.2f} s  total CPU {p_cpu + e_cpu + s_cpu:5.2f} s"
        f" (wall {p_wall + e_wall + s_wall:5.2f} s)  simulated e2e {result.e2e_s:7.3f} s{what_if}",
        flush=True,
    )


def main() -> None:
    quick = len(sys.argv) > 1 and sys.argv[1] == "quick"
    print("compile + simulate, rtx5080-ndp, 512 prompt + 512 decode tokens, 1 request")
    for model, overrides, policies in CASES[:1] if quick else CASES:
        for policy in ("paper",) if quick else policies:
            bench(model, overrides, policy)


if __name__ == "__main__":
    main()
