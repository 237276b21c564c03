"""Benchmark: the emitter before and after a change, on the same machine, in one run.

Emits the paper policy's schedule for Qwen3-30B-A3B (rtx5080-ndp, one request, half prompt,
half decode) with the current tree and with an older commit (`--before`, default: the last
commit before the serving restructure), each in a fresh process, and prints per tree: ops,
emitter CPU seconds and ops per CPU second (best of `--repeat` rounds that alternate the two
trees, each emission in a fresh process), peak traced bytes per op during emission
(tracemalloc, a separate emission) and the process's peak RSS growth per op during its first
emission (Linux: the peak is reset before it; this counts memory tracemalloc does not see, such
as the builder's memory-mapped columns since they left the heap). It also times the op buffer
alone (append N ops with the emitter's argument shapes, then build the schedule) in both trees.

    python bench/bench_emit.py [--tokens 1024] [--before REV] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the tree before the restructure: the commit that recorded the batch-1 regression fixtures
BEFORE_GREP = "Batch-1 regression fixtures: schedule-file"

CHILD = r"""
import gc, json, sys, time, tracemalloc
import numpy as np
from ndpc.backends.emit import emit_schedule
from ndpc.compiler.frontend import load_model
from ndpc.compiler.passes.pipeline import PassManager, make_context, parse_pipeline
from ndpc.compiler.policies import POLICIES
from ndpc.ir.ops import RouterOp
from ndpc.traces.generate import generate_trace

tokens, mode, repeat = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
out = {}
if mode == "emit":
    ctx = make_context("rtx5080-ndp", ())
    module = load_model("qwen3-30b-a3b")
    rs = [op for op in module.walk() if isinstance(op, RouterOp)]
    trace = generate_trace(len(rs), rs[0].experts, rs[0].router.k, tokens, tokens // 2, 0,
                           model="qwen3-30b-a3b")
    compiled = PassManager(parse_pipeline(POLICIES["paper"].pipeline)).run(module, ctx)
    def vm(key):  # KiB, Linux
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
    best = rss = None
    for i in range(repeat):
        if i == 0:  # the first emission of the process: its peak RSS growth
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets the peak (VmHWM) to the current RSS
                rss0 = vm("VmRSS")
            except (OSError, StopIteration):
                rss0 = None
        c0 = time.process_time()
        s = emit_schedule(compiled, trace, ctx.target, ctx.cost)
        cpu = time.process_time() - c0
        best = cpu if best is None else min(best, cpu)
        n = len(s)
        if i == 0 and rss0 is not None:
            rss = (vm("VmHWM") - rss0) * 1024
        del s
        gc.collect()
    tracemalloc.start()
    s = emit_schedule(compiled, trace, ctx.target, ctx.cost)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    final = sum(getattr(s, c).nbytes for c in ("kind", "resource", "flops", "mem_bytes",
            "link_bytes", "phase", "request", "token", "layer", "expert", "shard", "unit",
            "reason", "dep_ptr", "dep_idx"))
    out = {"ops": n, "cpu_s": best, "peak_bytes_per_op": peak / n, "final_bytes_per_op": final / n,
           "rss_bytes_per_op": None if rss is None else rss / n}
else:  # the op buffer alone
    n = tokens * 500
    try:
        from ndpc.backends.schedule import ScheduleBuilder
        b = ScheduleBuilder(["gpu", "pcie.h2d", "ndp0"])
        tag = b.tag(1, 0, 5)
        from functools import partial
        add = partial(b.append, tag)
        fast = hasattr(b, "append")
    except Exception:
        fast = False
    if not fast:
        from ndpc.backends.emit_moe import OpBuffer
        b = OpBuffer(["gpu", "pcie.h2d", "ndp0"])
        b.step = (1, 0, 5)
        add = b.add
    c0 = time.process_time()
    for i in range(n):
        add(1, 2, 1.5e6, 2.5e6, 0.0, [i - 1] if i else [], 3, 7, 1, 2, 5)
        if i % 1000 == 0:
            b.compact()
    s = b.build({})
    out = {"ops": n, "cpu_s": time.process_time() - c0}
print(json.dumps(out))
"""


def tree_of(rev: str, tmp: Path) -> Path:
    """A PYTHONPATH folder whose `ndpc` package is the tree at `rev`."""
    src = tmp / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                             capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = tmp / "path" / "ndpc"
    pkg.mkdir(parents=True)
    for name in ("ir", "compiler", "backends", "traces"):
        (pkg / name).symlink_to(src / name)
    return tmp / "path"


def child(path: Path | None, tokens: int, mode: str, repeat: int) -> dict:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = str(path)
    run = subprocess.run([sys.executable, "-c", CHILD, str(tokens), mode, str(repeat)], env=env,
                         check=True, capture_output=True, text=True)  # fmt: skip
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument(
        "--before",
        default=None,
        help="Commit to compare with (default: the one "
        "that recorded the batch-1 regression fixtures).",
    )
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if args.before is None:
        found = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h",
                                f"--grep={BEFORE_GREP}"], capture_output=True, text=True)  # fmt: skip
        args.before = found.stdout.strip() or "HEAD"
    print(f"emitter, qwen3-30b-a3b, paper, rtx5080-ndp, {args.tokens} tokens (half prompt)")
    with tempfile.TemporaryDirectory() as tmp:
        old = tree_of(args.before, Path(tmp))
        trees = ((f"before ({args.before})", old), ("after (this tree)", None))
        # Rounds alternate the two trees (one emission each per round, best CPU time kept), so
        # a load change on a shared machine hits both alike.
        best: dict[str, tuple[dict, dict]] = {}
        for _ in range(args.repeat):
            for label, path in trees:
                emit = child(path, args.tokens, "emit", 1)
                buf = child(path, args.tokens, "buffer", 1)
                if label in best:
                    e0, b0 = best[label]
                    emit = emit if emit["cpu_s"] < e0["cpu_s"] else e0
                    buf = buf if buf["cpu_s"] < b0["cpu_s"] else b0
                best[label] = (emit, buf)
        rows = {}
        for label, _ in trees:
            emit, buf = rows[label] = best[label]
            rss = emit.get("rss_bytes_per_op")
            print(f"{label:22s} ops {emit['ops']:>9,d}  emit CPU {emit['cpu_s']:6.2f} s "
                  f"({emit['ops'] / emit['cpu_s'] / 1e3:6.0f} kops/s, "
                  f"{emit['cpu_s'] / emit['ops'] * 1e6:5.2f} us/op)  peak "
                  f"{emit['peak_bytes_per_op']:5.0f} B/op traced, RSS growth "
                  f"{'-' if rss is None else f'{rss:5.0f}'} B/op (final schedule "
                  f"{emit['final_bytes_per_op']:4.0f} B/op)  op buffer alone "
                  f"{buf['cpu_s'] / buf['ops'] * 1e9:5.0f} ns/op", flush=True)  # fmt: skip
        (b_emit, b_buf), (a_emit, a_buf) = rows.values()
        per_b, per_a = b_emit["cpu_s"] / b_emit["ops"], a_emit["cpu_s"] / a_emit["ops"]
        rss = [e.get("rss_bytes_per_op") for e in (b_emit, a_emit)]
        print(
            f"CPU per op: {per_b / per_a:.2f}x less (op buffer alone: "
            f"{b_buf['cpu_s'] / a_buf['cpu_s']:.2f}x); peak bytes per op "
            f"{b_emit['peak_bytes_per_op']:.0f} -> {a_emit['peak_bytes_per_op']:.0f} traced"
            + (f", RSS growth {rss[0]:.0f} -> {rss[1]:.0f}" if None not in rss else "")
        )


if __name__ == "__main__":
    main()
