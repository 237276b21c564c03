"""Benchmark: trace generation speed and streaming `trace stats` time / peak memory.

Prints measured figures (no assertions):
1. generating a Qwen3-30B-A3B-sized trace (1024 tokens x 48 layers x 128 experts, top-8);
2. generating a DeepSeek-V3-sized trace (default 1M tokens x 61 MoE layers x 256 experts, top-8)
   straight to disk with the streaming writer;
3. streaming that file through the statistics in a fresh process: wall time and peak RSS beside
   the documented bound (ndpc.traces.stats.stats_memory_bound, docs/traces.md).

Generation figures are printed beside the ones measured before the compiled sampling kernel
(numpy sampler, commit 805d4bd, docs/traces.md "Measured"), in CPU seconds (time.process_time),
since the machine may be loaded.

Usage: python bench/bench_traces.py [--tokens N] [--chunk-tokens C] [--keep FILE] [--gen-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ndpc.traces.format import TraceWriter  # noqa: E402
from ndpc.traces.generate import generate_trace, iter_generate  # noqa: E402
from ndpc.traces.stats import stats_memory_bound  # noqa: E402

DEEPSEEK = {"layers": 61, "experts": 256, "k": 8, "shared_experts": 1}

# CPU seconds before the compiled kernel (numpy sampler, commit 805d4bd; docs/traces.md)
BEFORE_SMALL_CPU = 0.99  # 1024 tok x 48 L x 128 E, top-8
BEFORE_BIG_CPU_PER_MTOK = 494.0  # 1M tok x 61 L x 256 E, top-8, to disk

_CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
from ndpc.traces.show import compute_stats

def hwm_kib():  # peak resident set of this process (VmHWM), in KiB
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM")).split()[1])

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak: the forked child starts with the parent's resident pages
before = hwm_kib()
t0, c0 = time.perf_counter(), time.process_time()
report = compute_stats({path!r}, {chunk})
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({{"seconds": seconds, "cpu": cpu, "peak_kib": hwm_kib(), "import_kib": before,
                  "tokens": report["tokens"], "overlap": report["summary"]["overlap"]["mean"]}}))
"""


def bench_small_gen() -> None:
    """Time generating a Qwen3-30B-A3B-sized trace in memory."""
    runs = [_timed(generate_trace, 48, 128, 8, 1024, 512, seed) for seed in range(3)]
    wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
    print(
        f"gen qwen3-30b-a3b size (1024 tok x 48 L x 128 E, top-8): {wall:.3f} s wall, {cpu:.3f} s cpu (best of 3)"
        f"; before: {BEFORE_SMALL_CPU:.2f} s cpu"
    )


def _timed(fn, *args) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_big_gen(path: Path, tokens: int) -> None:
    """Time generating a DeepSeek-V3-sized trace straight to disk."""
    t0, c0 = time.perf_counter(), time.process_time()
    chunks = iter_generate(
        DEEPSEEK["layers"],
        DEEPSEEK["experts"],
        DEEPSEEK["k"],
        tokens,
        min(512, tokens),
        0,
        1,
        "auto",
        "deepseek-v3-shape",
        DEEPSEEK["shared_experts"],
    )
    first = next(chunks)
    with TraceWriter(path, first.meta) as writer:
        writer.write(first)
        for chunk in chunks:
            writer.write(chunk)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    size = path.stat().st_size
    print(
        f"gen deepseek-v3 size ({tokens} tok x 61 L x 256 E, top-8) to disk: {seconds:.1f} s wall, "
        f"{cpu:.1f} s cpu, {tokens / seconds:,.0f} tok/s, file {size / 2**20:,.0f} MiB"
    )
    before = BEFORE_BIG_CPU_PER_MTOK * tokens / 1e6
    print(f"  before (numpy sampler): {before:,.0f} s cpu -> {before / cpu:.1f}x less cpu")


def bench_stats(path: Path, chunk: int, tokens: int) -> None:
    """Time `trace stats` on the file in a fresh process; its peak RSS against the bound."""
    code = _CHILD.format(repo=str(REPO), path=str(path), chunk=chunk)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    res = json.loads(out.stdout)
    bound = stats_memory_bound(DEEPSEEK["layers"], DEEPSEEK["experts"], DEEPSEEK["k"], chunk)
    peak = res["peak_kib"] * 1024
    base = res["import_kib"] * 1024
    print(
        f"stats stream, chunk {chunk} tokens: {res['seconds']:.1f} s ({tokens / res['seconds']:,.0f} tok/s)"
    )
    print(
        f"  peak RSS {peak / 2**20:,.0f} MiB = {base / 2**20:,.0f} MiB after imports + {(peak - base) / 2**20:,.0f} MiB working set"
    )
    print(
        f"  documented bound on the working set: {bound / 2**20:,.0f} MiB -> {'within' if peak - base <= bound else 'EXCEEDED'}"
    )
    print(f"  file size {path.stat().st_size / 2**20:,.0f} MiB (the trace is never loaded whole)")


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--chunk-tokens", type=int, nargs="*", default=[4096, 16384])
    parser.add_argument("--keep", type=Path, help="write the big trace here and keep it")
    parser.add_argument("--gen-only", action="store_true", help="skip the stats measurements")
    args = parser.parse_args()
    bench_small_gen()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "deepseek.npz"
        if not (args.keep and path.exists()):
            bench_big_gen(path, args.tokens)
        for chunk in [] if args.gen_only else args.chunk_tokens:
            bench_stats(path, chunk, args.tokens)
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
