"""Benchmark: print and parse back the IR of a large split MoE model.

A generated 61-layer x 256-expert module (DeepSeek-V3's shape: 3 dense layers, k = 8) split
across 6 NDP units, with shard tables built directly. Measures print, parse and verify time for
three table shapes (uniform TP split; expert-parallel round robin; random per-expert splits, the
compact printer's worst case), compact and `--expand`ed, and checks linearity by timing the same
module at half the layer count. The issue's floor: print + parse < 2 s.

    .venv/bin/python bench/bench_ir_text.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndpc.ir.attrs import ReduceSite, ShardAxis, ShardSpec, ShardTable  # noqa: E402
from ndpc.ir.builder import synthetic_module  # noqa: E402
from ndpc.ir.core import Module  # noqa: E402
from ndpc.ir.ops import ExpertShardsOp  # noqa: E402
from ndpc.ir.parser import parse_module  # noqa: E402
from ndpc.ir.printer import print_module  # noqa: E402
from ndpc.ir.verifier import verify  # noqa: E402

UNITS = 6


def round_robin(module: Module) -> Module:
    """Expert-parallel placement: expert e whole on unit e mod 6 (six rows per table)."""
    import dataclasses

    def table(n: int) -> ShardTable:
        return ShardTable(
            tuple(ShardSpec(1, (e % UNITS,), ShardAxis.NONE, ReduceSite.GPU) for e in range(n))
        )

    func = module.funcs[0]
    ops = tuple(
        dataclasses.replace(op, shards=table(op.experts)) if isinstance(op, ExpertShardsOp) else op
        for op in func.ops
    )
    return dataclasses.replace(module, funcs=(dataclasses.replace(func, ops=ops),))


def build(layers: int, tables: str) -> Module:
    kind = "uniform" if tables == "round-robin" else tables
    module = synthetic_module(
        layers,
        256,
        k=8,
        d_model=7168,
        d_ff=2048,
        dense_layers=(0, 1, 2),
        units=UNITS,
        tables=kind,
        seed=0,
    )
    return round_robin(module) if tables == "round-robin" else module


def best_of(repeat: int, fn):
    """(best wall seconds, best CPU seconds, result) over `repeat` runs."""
    wall = cpu = float("inf")
    result = None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def measure(layers: int, tables: str, expand: bool, repeat: int) -> dict:
    """Print, parse and verify one module; check the round trip."""
    module = build(layers, tables)
    t_print, c_print, text = best_of(repeat, lambda: print_module(module, expand=expand))
    t_parse, c_parse, parsed = best_of(repeat, lambda: parse_module(text))
    t_verify, _, _ = best_of(repeat, lambda: verify(parsed))
    assert print_module(parsed) == print_module(module), "round trip changed the module"
    kib = len(text) / 1024
    return {
        "lines": text.count("\n"),
        "kib": kib,
        "print": t_print,
        "parse": t_parse,
        "verify": t_verify,
        "total": t_print + t_parse,
        "cpu": c_print + c_parse,
        "us_per_kib": 1e6 * (c_print + c_parse) / kib,
    }


HEADER = (
    "tables",
    "form",
    "layers",
    "lines",
    "KiB",
    "print s",
    "parse s",
    "verify s",
    "p+p s",
    "cpu s",
    "us/KiB",
)
ROW = "{:12} {:8} {:>6} {:>7} {:>7.0f} {:>8.3f} {:>8.3f} {:>8.3f} {:>7.3f} {:>7.3f} {:>7.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings")
    args = parser.parse_args()
    print(f"IR text: 61 layers x 256 experts, {UNITS} NDP units (best of {args.repeat})")
    print("p+p = print + parse wall time (the issue's floor: < 2 s); cpu = their CPU time;")
    print("us/KiB = CPU microseconds per KiB of text (equal at both sizes = linear)")
    print("{:12} {:8} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}".format(*HEADER))
    for tables in ("uniform", "round-robin", "mixed"):
        for expand in (False, True):
            rates = []
            for layers in (31, 61):
                r = measure(layers, tables, expand, args.repeat)
                rates.append(r["us_per_kib"])
                form = "expand" if expand else "compact"
                print(
                    ROW.format(
                        tables,
                        form,
                        layers,
                        r["lines"],
                        r["kib"],
                        r["print"],
                        r["parse"],
                        r["verify"],
                        r["total"],
                        r["cpu"],
                        r["us_per_kib"],
                    )
                )
            print(f"{'':21} linearity: CPU per KiB at 61 vs 31 layers = {rates[1] / rates[0]:.2f}x")


if __name__ == "__main__":
    main()
