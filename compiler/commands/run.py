"""`ndpc run`: compile and simulate in one step, print the report."""

from __future__ import annotations

import json
import time

import click

from ndpc.backends.report import report_text
from ndpc.backends.schedule import save_schedule
from ndpc.backends.simulator import simulate
from ndpc.backends.timeline import write_timeline
from ndpc.compiler.cliutil import output_file, user_errors
from ndpc.compiler.commands.compile import common_options, compile_schedule, show_progress
from ndpc.compiler.passes.pipeline import IrDumpOptions, ir_dump_options


def summary_lines(meta: dict, result) -> list[str]:
    """The policy and what it compiled to, then the simulator's report table."""

    lines = [
        f"policy {meta.get('policy', '?')}: {meta.get('pipeline', '')}",
        f"model {meta.get('model', '?')}, dispatch {', '.join(meta.get('dispatch', []))}, "
        f"prefetcher {meta.get('prefetcher', 'none')}",
    ]
    if meta.get("oracle"):
        lines.append("note: oracle policy, it looks ahead in the trace (a bound, not online)")
    r = result
    if meta.get("prefetcher", "none") != "none" and r.prefetch_hits + r.prefetch_misses:
        rate = r.prefetch_hits / (r.prefetch_hits + r.prefetch_misses)
        lines.append(f"prefetch hit rate {rate:.1%}")
    return [*lines, report_text(result)]


@click.command(name="run")
@common_options
@click.option("--timeline", type=click.Path(dir_okay=False), help="Write a Chrome-trace timeline.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also save the schedule.")
@ir_dump_options
@user_errors
def command(model, target, trace_path, policy, pipeline, overrides, seed, progress, timeline,
            as_json, output, ir_dump: IrDumpOptions) -> None:  # fmt: skip
    """Compile MODEL for TARGET over TRACE with a policy, simulate it, print the report.

    \b
    Examples:
      ndpc trace gen --model qwen3-30b-a3b --tokens 1024 --prompt 512 --seed 0 -o t.npz
      ndpc run qwen3-30b-a3b --target rtx5080-ndp --trace t.npz --policy paper
      ndpc run qwen3-30b-a3b --target rtx5080-ndp --trace t.npz -p tp-split,balance --json
      ndpc run qwen3-30b-a3b --target rtx5080-ndp --trace t.npz --policy paper --timeline t.json
    """

    compiled = compile_schedule(model, target, trace_path, policy, pipeline, overrides, seed,
                                ir_dump, show_progress(progress))  # fmt: skip
    t0 = time.perf_counter()
    result = simulate(compiled.schedule, compiled.target, compiled.cost)
    compiled.seconds["simulate"] = time.perf_counter() - t0
    ir_dump.record("simulate", compiled.seconds["simulate"])
    if output:
        with output_file(output) as tmp:
            save_schedule(compiled.schedule, tmp)
    if timeline:
        _write_timeline(compiled.schedule, result, compiled.target, timeline)
    meta = compiled.schedule.meta
    if as_json:
        report = {"schedule": {k: meta[k] for k in sorted(meta)}, "result": result.to_json()}
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo("\n".join(summary_lines(meta, result)))
    ir_dump.finish()


def _write_timeline(schedule, result, target, path: str) -> None:

    with output_file(path) as tmp:
        write_timeline(tmp, schedule, result.start, result.end, target_name=target.name)
