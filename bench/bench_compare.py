"""Benchmark: compile + simulate time of every policy `ndpc compare` runs (one process, serial).

Usage: python bench/bench_compare.py [MODEL] [PROMPT] [OUTPUT]
(default: qwen3-30b-a3b 512 512, the paper's set-up). Prints seconds per policy and ops/s.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from ndpc.compiler.commands.compare import DEFAULT_POLICIES
from ndpc.compiler.experiments.runner import Case, pipeline_for
from ndpc.compiler.experiments.workload import generate_pair


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "qwen3-30b-a3b"
    prompt = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    output = int(sys.argv[3]) if len(sys.argv) > 3 else 512
    from ndpc.backends.simulator import simulate
    from ndpc.compiler.commands.compile import compile_schedule

    with tempfile.TemporaryDirectory() as tmp:
        trace, calib = generate_pair(model, prompt, output, 0, Path(tmp))
        print(f"{model}, rtx5080-ndp, {prompt}+{output} tokens")
        print(f"{'policy':16s} {'compile s':>10s} {'simulate s':>11s} {'ops':>9s} {'ops/s':>10s}")
        for policy in DEFAULT_POLICIES:
            case = Case(model, "rtx5080-ndp", str(trace), policy, calib=str(calib))
            text, _ = pipeline_for(case)
            t0 = time.perf_counter()
            compiled = compile_schedule(model, "rtx5080-ndp", str(trace), None, text)
            t1 = time.perf_counter()
            result = simulate(compiled.schedule, compiled.target, compiled.cost)
            t2 = time.perf_counter()
            ops = len(compiled.schedule)
            print(f"{policy:16s} {t1 - t0:10.2f} {t2 - t1:11.2f} {ops:9d} {ops / (t2 - t0):10.0f}"
                  f"   e2e {result.e2e_s:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
