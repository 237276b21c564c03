"""`ndpc run`: compile and simulate in one step, print the report."""

from __future__ import annotations

import json
import time

import click

from compiler.cliutil import output_file, user_errors
from compiler.commands.compile import common_options, compile_schedule, show_progress
from compiler.passes.pipeline import IrDumpOptions, ir_dump_options


def summary_lines(meta: dict, result) -> list[str]:
    """A short human-readable report (the JSON form has every field)."""
    r = result
    tpot = r.tpot_mean_s * 1e3
    lines = [
        f"policy      {meta.get('policy', '?')}  ({meta.get('pipeline', '')})",
        f"model       {meta.get('model', '?')} on {r.target}, {r.requests} request(s), "
        f"{r.decode_tokens} decode tokens, {r.ops} ops",
        f"latency     e2e {r.e2e_s * 1e3:.1f} ms   TTFT {r.ttft_s * 1e3:.1f} ms   "
        f"TPOT mean {tpot:.2f} ms  p50 {r.tpot_p50_s * 1e3:.2f}  p99 {r.tpot_p99_s * 1e3:.2f}",
        f"bound       {r.bound_s * 1e3:.1f} ms  efficiency {r.efficiency:.1%}",
        "busy        " + "  ".join(f"{k} {v:.0%}" for k, v in r.busy.items()),
        f"ndp balance std of unit busy fractions {r.ndp_busy_std:.3f}",
        "link bytes  " + "  ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in r.link_bytes.items()),
    ]
    if meta.get("prefetcher", "none") != "none":
        total = r.prefetch_hits + r.prefetch_misses
        rate = r.prefetch_hits / total if total else 0.0
        lines.append(
            f"prefetch    {meta['prefetcher']}: hits {r.prefetch_hits}  misses "
            f"{r.prefetch_misses}  hit rate {rate:.1%}  wasted {r.prefetch_wasted_bytes / 2**30:.2f} GiB"
        )
    if meta.get("oracle"):
        lines.append("note        oracle policy: it looks ahead in the trace (a bound, not online)")
    return lines


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
    from backends.simulator import simulate

    compiled = compile_schedule(model, target, trace_path, policy, pipeline, overrides, seed,
                                ir_dump, show_progress(progress))  # fmt: skip
    t0 = time.perf_counter()
    result = simulate(compiled.schedule, compiled.target, compiled.cost)
    compiled.seconds["simulate"] = time.perf_counter() - t0
    ir_dump.record("simulate", compiled.seconds["simulate"])
    if output:
        from backends.schedule import save_schedule

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
    try:
        from backends.timeline import write_timeline
    except ImportError as err:  # the timeline writer belongs to the simulator issue
        raise click.UsageError("--timeline: the timeline writer is not available yet") from err
    with output_file(path) as tmp:
        write_timeline(schedule, result, tmp)
