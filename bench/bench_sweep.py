"""Benchmark: the paper's grid on the sweep machinery, one process against the local pool.

Usage: python bench/bench_sweep.py [--workers N] [--models a,b] [--tokens PROMPT+OUTPUT] [--cached]

Runs the ablation grid of `ndpc reproduce paper` (models x 2-6 NDP units x 7 policies, 512+512
tokens by default) twice from an empty cache, with 1 worker and with N (default: every core),
and prints both wall times and their ratio (measured in this one run), and the CPU seconds each
used (self + worker processes): on a shared machine the wall ratio shows the load, the CPU ratio
shows the pool's own overhead. `--cached` adds a third
run over the filled cache (it should compute nothing). Traces are generated once, before timing.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ndpc.compiler.experiments import paper
from ndpc.compiler.experiments.runner import default_jobs
from ndpc.compiler.experiments.sweep import make_job, run_jobs


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the pool's workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=default_jobs())
    ap.add_argument("--models", default=",".join(paper.Setup().models))
    ap.add_argument("--tokens", default="512+512")
    ap.add_argument("--cached", action="store_true")
    args = ap.parse_args()
    prompt, output = (int(x) for x in args.tokens.split("+"))
    setup = replace(paper.Setup(), models=tuple(args.models.split(",")), prompt=prompt,
                    output=output, sweep_models=(), baselines=(), real_trace=False)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ndpc-bench-sweep-") as tmp:
        root = Path(tmp)
        traces = paper.prepare_traces(setup, root / "traces")
        cases = [
            c for c in paper.build_cases(setup, traces, None) if c.tags["experiment"] == "grid"
        ]
        jobs = [make_job(c) for c in cases]
        print(f"paper grid: {len(setup.models)} models x {len(setup.units)} unit counts x "
              f"{len(paper.ABLATION)} policies = {len(jobs)} points, {prompt}+{output} tokens")  # fmt: skip
        times, cpu = {}, {}
        for workers in (1, args.workers):
            t0, c0 = time.perf_counter(), _cpu()
            out = run_jobs(jobs, root / f"cache-{workers}", workers=workers)
            times[workers], cpu[workers] = time.perf_counter() - t0, _cpu() - c0
            print(f"  {workers} worker(s): {times[workers]:7.1f} s wall, {cpu[workers]:7.1f} CPU s "
                  f"({out.computed} computed, {out.failed} failed)")  # fmt: skip
        if args.workers > 1:
            w = args.workers
            print(f"  speed-up with {w} workers: {times[1] / times[w]:.2f}x wall; CPU work "
                  f"{cpu[w] / cpu[1]:.2f}x of one process, so {w * cpu[1] / cpu[w]:.2f}x is the "
                  f"most {w} idle cores could give")  # fmt: skip
            load = os.getloadavg()[0]
            if load > w:
                print(f"  note: load average {load:.1f} on {w} cores: other processes share them")
        if args.cached:
            t0 = time.perf_counter()
            out = run_jobs(jobs, root / f"cache-{args.workers}", workers=args.workers)
            print(f"  re-run over the cache: {time.perf_counter() - t0:.2f} s "
                  f"({out.computed} computed, {out.cached} cached)")  # fmt: skip


if __name__ == "__main__":
    main()
