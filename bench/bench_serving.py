"""Benchmark: a serving workload end to end (trace generation excluded), in a fresh process.

64 requests x 256 output tokens (128-token prompts, Poisson arrivals at 8 requests/s) on
Qwen3-30B-A3B, rtx5080-ndp, paper policy, --max-batch 16 by default. Prints ops, CPU seconds of
the emitter and the simulator, ops per CPU second, and the process's peak RSS.

    python bench/bench_serving.py [--requests 64] [--output 256] [--prompt 128] [--rate 8]
                                  [--max-batch 16] [--policy paper] [--model qwen3-30b-a3b]
"""

from __future__ import annotations

import argparse
import resource
import time

from ndpc.backends.emit import emit_schedule
from ndpc.backends.serving import ServingConfig
from ndpc.backends.simulator import simulate
from ndpc.compiler.frontend import load_model
from ndpc.compiler.passes.pipeline import PassManager, make_context, parse_pipeline
from ndpc.compiler.policies import POLICIES
from ndpc.ir.ops import RouterOp
from ndpc.traces.generate import arrival_times, generate_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--output", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--rate", type=float, default=8.0)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--policy", default="paper")
    ap.add_argument("--model", default="qwen3-30b-a3b")
    a = ap.parse_args()
    ctx = make_context("rtx5080-ndp", ())
    module = load_model(a.model)
    rs = [op for op in module.walk() if isinstance(op, RouterOp)]
    trace = generate_trace(len(rs), rs[0].experts, rs[0].router.k, a.prompt + a.output - 1,
                           a.prompt, 0, requests=a.requests, model=a.model)  # fmt: skip
    arrivals = arrival_times(a.requests, a.rate, 0)
    trace = type(trace)(type(trace.meta)(**{**trace.meta.__dict__, "arrivals": arrivals}),
                        trace.experts, trace.weights, trace.phase, trace.request)  # fmt: skip
    compiled = PassManager(parse_pipeline(POLICIES[a.policy].pipeline)).run(module, ctx)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c0 = time.process_time()
    s = emit_schedule(compiled, trace, ctx.target, ctx.cost,
                      serving=ServingConfig(max_batch=a.max_batch))  # fmt: skip
    c1 = time.process_time()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = simulate(s, ctx.target, ctx.cost)
    c2 = time.process_time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    n = len(s)
    sv = r.serving
    print(f"{a.model} {a.policy}: {a.requests} requests x {a.output} output tokens "
          f"(prompt {a.prompt}, {a.rate}/s), max-batch {a.max_batch}: "
          f"{len(s.meta['serving']['batches'])} iterations, {n:,d} ops")  # fmt: skip
    print(f"  emit {c1 - c0:6.2f} CPU s ({n / (c1 - c0) / 1e3:6.0f} kops/s, "
          f"{(c1 - c0) / n * 1e6:.2f} us/op)  simulate {c2 - c1:6.2f} CPU s  "
          f"total {c2 - c0:6.2f} CPU s ({n / (c2 - c0) / 1e3:.0f} kops/s)")  # fmt: skip
    print(
        f"  peak RSS {peak / 2**20:.2f} GiB (before emission {rss0 / 2**20:.2f} GiB, after "
        f"emission {rss1 / 2**20:.2f} GiB)"
    )
    print(f"  simulated: {sv['throughput_tok_s']:.1f} tok/s, TTFT p99 {sv['ttft_p99_s']:.3f} s, "
          f"TPOT p99 {sv['tpot_p99_s']:.3f} s, engine {r.engine}")  # fmt: skip


if __name__ == "__main__":
    main()
