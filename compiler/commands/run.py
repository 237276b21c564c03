"""`ndpc run`: compile and simulate in one step, print the report."""

from __future__ import annotations

import time

import click

from ndpc.backends.check import check_timeline
from ndpc.backends.report import report_doc, report_text
from ndpc.backends.schedule import save_schedule
from ndpc.backends.simulator import simulate
from ndpc.backends.simulator.serving_metrics import summary
from ndpc.compiler.cliutil import (
    echo_json,
    output_files,
    timeline_ops_option,
    timeline_option,
    user_errors,
    write_timeline_file,
)
from ndpc.compiler.commands.compile import (
    common_options,
    compile_schedule,
    serving_config,
    serving_options,
    show_progress,
)
from ndpc.compiler.experiments.optimum import optimum_for, serving_optimum
from ndpc.compiler.passes.pipeline import IrDumpOptions, ir_dump_options
from ndpc.ir.diagnostics import NdpcError


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
    emit = meta.get("emit") or {}
    if emit.get("static_resident_bytes"):
        lines.append(f"static residency {emit['static_resident_bytes'] / 1e9:.3f} GB in GPU memory "
                     f"before the first step, not timed (loaded with the model; "
                     f"{emit['static_load_s'] * 1e3:.1f} ms over the host link)")  # fmt: skip
    return [*lines, report_text(result)]


def serving_report(result, slo_ttft: float | None, slo_tpot: float | None) -> dict | None:
    """Per-request figures and aggregates (with goodput under the SLO) of a serving run."""
    if result.serving is None:
        return None
    figures = {"requests": result.serving["requests"], "itl": []}
    agg = {k: v for k, v in result.serving.items() if k != "requests"}
    agg.update(summary(figures, slo_ttft, slo_tpot))
    agg.update({k: v for k, v in result.serving.items() if k.startswith("itl_")})
    return {**agg, "requests": result.serving["requests"]}


def serving_lines(report: dict) -> list[str]:
    """The serving figures as text."""
    ms = lambda key: f"{report[key] * 1e3:.1f}"  # noqa: E731
    lines = [
        f"serving: {report['requests_served']} requests, {report['output_tokens']} output tokens "
        f"in {report['makespan_s']:.3f} s: {report['throughput_tok_s']:.2f} tokens/s",
        f"  TTFT ms  p50 {ms('ttft_p50_s')}  p90 {ms('ttft_p90_s')}  p99 {ms('ttft_p99_s')}",
        f"  TPOT ms  p50 {ms('tpot_p50_s')}  p90 {ms('tpot_p90_s')}  p99 {ms('tpot_p99_s')}",
        f"  e2e ms   p50 {ms('e2e_p50_s')}  p90 {ms('e2e_p90_s')}  p99 {ms('e2e_p99_s')}",
        f"  queue ms p50 {ms('queue_p50_s')}  p90 {ms('queue_p90_s')}  p99 {ms('queue_p99_s')}",
    ]
    if "goodput_req_s" in report:
        lines.append(
            f"  goodput {report['goodput_req_s']:.3f} requests/s ({report['goodput_tok_s']:.2f} "
            f"tokens/s), SLO met by {report['slo_attained']:.1%}"
        )
    return lines


@click.command(name="run")
@common_options
@timeline_option
@timeline_ops_option
@click.option("--check", "run_check", is_flag=True,
              help="Re-verify the timeline with the independent checker (verdict in --json).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON (the shape of `simulate --json`).")  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also save the schedule (.ndpsched).")  # fmt: skip
@serving_options
@ir_dump_options
@user_errors
def command(model, target, trace_path, policy, pipeline, overrides, seed, progress, timeline,
            timeline_ops, run_check, as_json, output, max_batch, token_budget, chunked_prefill,
            kv_memory, batching, slo_ttft, slo_tpot, ir_dump: IrDumpOptions) -> None:  # fmt: skip
    """Compile MODEL for TARGET over TRACE with a policy, simulate it, print the report.

    The schedule (-o) and the timeline (--timeline) are written together or not at all.

    \b
    Examples:
      ndpc trace gen --model qwen3-30b-a3b --tokens 1024 --prompt 512 --seed 0 -o t.npz
      ndpc run qwen3-30b-a3b --target rtx5080-ndp --trace t.npz --policy paper
      ndpc run qwen3-30b-a3b --target rtx5080-ndp --trace t.npz -p tp-split,balance --json
      ndpc run qwen3-30b-a3b --target rtx5080-ndp --trace t.npz --policy paper --timeline t.json
      ndpc run mixtral-8x7b --target rtx5080-ndp --trace serve.npz --policy paper \\
          --max-batch 8 --slo-tpot 0.1 --json
    """
    with output_files() as outputs:
        schedule_tmp = outputs.path(output) if output else None
        timeline_tmp = outputs.path(timeline) if timeline else None
        serving = serving_config(max_batch, token_budget, chunked_prefill, kv_memory, batching)
        compiled = compile_schedule(model, target, trace_path, policy, pipeline, overrides, seed,
                                    ir_dump, show_progress(progress), serving)  # fmt: skip
        t0 = time.perf_counter()
        result = simulate(compiled.schedule, compiled.target, compiled.cost)
        compiled.seconds["simulate"] = time.perf_counter() - t0
        ir_dump.record("simulate", compiled.seconds["simulate"])
        if schedule_tmp:
            save_schedule(compiled.schedule, schedule_tmp)
        if timeline_tmp:
            write_timeline_file(timeline_tmp, timeline, compiled.schedule, result,
                                compiled.target.name, timeline_ops, compiled.target)  # fmt: skip
        check = None
        if run_check:
            check = check_timeline(compiled.schedule, compiled.target, result.start, result.end,
                                   compiled.cost)  # fmt: skip
    meta = compiled.schedule.meta
    served = serving_report(result, slo_ttft, slo_tpot)
    if served:  # the bound of the iterations this run formed (docs/optimum.md §7)
        optimum = serving_optimum(model, target, trace_path, tuple(overrides), meta["serving"],
                                  served["makespan_s"])  # fmt: skip
    else:
        optimum = dict(optimum_for(model, target, trace_path, tuple(overrides)))
        optimum["gap_to_optimum"] = result.e2e_s / optimum["optimum_bound_s"]
    if as_json:
        doc = report_doc(result, meta, check, optimum=optimum)
        if served:  # serving figures at the top level; the iteration table stays in the schedule
            doc["result"].pop("serving", None)
            doc["schedule"]["serving"] = {k: v for k, v in meta["serving"].items()
                                          if k not in ("batches", "requests", "release")}  # fmt: skip
            doc.update(served)
        echo_json(doc)
    else:
        click.echo(
            "\n".join(summary_lines(meta, result) + (serving_lines(served) if served else []))
        )
        if served:
            click.echo(f"  optimum (any schedule of these iterations): makespan "
                       f"{optimum['optimum_bound_s']:.3f} s, mean e2e "
                       f"{optimum['optimum_e2e_mean_s'] * 1e3:.1f} ms, mean TTFT "
                       f"{optimum['optimum_ttft_mean_s'] * 1e3:.1f} ms; gap to it "
                       f"{optimum['gap_to_optimum']:.2f}x  (docs/optimum.md §7)")  # fmt: skip
        else:
            click.echo(f"  optimum (any schedule) {optimum['optimum_bound_s'] * 1e3:.3f} ms  "
                       f"(TTFT {optimum['optimum_ttft_s'] * 1e3:.3f} ms, decode "
                       f"{optimum['optimum_decode_s'] * 1e3:.3f} ms); gap to it "
                       f"{optimum['gap_to_optimum']:.2f}x  (docs/optimum.md)")  # fmt: skip
    if check is not None:
        click.echo(check.summary(), err=True)
    ir_dump.finish()
    if check is not None and not check.ok:
        raise NdpcError("the independent checker found violations (see above)")
