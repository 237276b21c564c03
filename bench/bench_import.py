"""Benchmark: `ndpc import` of full-size zoo graphs (Qwen3-30B-A3B, DeepSeek-V3).

For each model: writes its ONNX graph with `ndpc model make` (weights external, never written),
then imports it in a fresh process and reports the import time (parse + pattern matching + IR
build), the whole command's wall time (Python start-up included) and the process's peak RSS.
Also times the direct zoo build (`load_model(name)`) the other commands use. Issue floors: < 2 s
and < 500 MiB per import on 2 cores.

    .venv/bin/python bench/bench_import.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("qwen3-30b-a3b", "deepseek-v3")

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from ndpc.compiler.frontend.builder import build_module
from ndpc.compiler.frontend.importer import import_spec
from ndpc.ir.printer import print_module
t1 = time.perf_counter()
spec = import_spec(sys.argv[1])
t2 = time.perf_counter()
module = build_module(spec)
text = print_module(module)
t3 = time.perf_counter()
from ndpc.compiler.frontend import load_model
load_model(sys.argv[2])
t4 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "match_s": t2 - t1, "build_print_s": t3 - t2,
                  "zoo_build_s": t4 - t3, "layers": len(spec.layers), "ir_lines": text.count("\n"),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _bench(name: str, folder: Path, repeat: int) -> dict:
    path = folder / f"{name}.onnx"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ndpc.compiler.cli", "model", "make", name, "-o", str(path)],
        check=True,
        capture_output=True,
    )
    make_s = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        wall = time.perf_counter() - t0
        runs.append({**json.loads(out), "process_wall_s": wall})
    best = min(runs, key=lambda r: r["process_wall_s"])
    best["import_s"] = best["match_s"] + best["build_print_s"]
    best["make_s"] = make_s
    best["onnx_kib"] = path.stat().st_size / 1024
    best["max_peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    return best


def main() -> None:
    """Print one line of figures per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{'model':15} {'layers':>6} {'onnx KiB':>9} {'make s':>7} {'import s':>9} "
        f"{'process s':>10} {'peak MiB':>9} {'zoo build s':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            r = _bench(name, Path(tmp), args.repeat)
            print(
                f"{name:15} {r['layers']:6d} {r['onnx_kib']:9.0f} {r['make_s']:7.2f} "
                f"{r['import_s']:9.3f} {r['process_wall_s']:10.2f} "
                f"{r['max_peak_rss_mib']:9.1f} {r['zoo_build_s']:12.4f}"
            )
    print(
        "import s = parse + match + IR build + print; process s = whole fresh process "
        "(interpreter and library start-up included); floors: < 2 s, < 500 MiB"
    )


if __name__ == "__main__":
    main()
