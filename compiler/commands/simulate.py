"""`ndpc simulate`: replay a schedule on the GPU-NDP timing simulator (docs/simulator.md)."""

from __future__ import annotations

import time

import click

from ndpc.backends.check import check_timeline
from ndpc.backends.cost import CostModel
from ndpc.backends.report import json_text, report_doc, report_steps, report_text
from ndpc.backends.schedule_text import read_any_schedule
from ndpc.backends.simulator import simulate
from ndpc.backends.target import load_target
from ndpc.compiler.cliutil import (
    complete_target,
    output_files,
    timeline_ops_option,
    timeline_option,
    user_errors,
    write_timeline_file,
)
from ndpc.ir.diagnostics import NdpcError


@click.command(name="simulate")
@click.argument("schedule_path", metavar="SCHEDULE", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", required=True, metavar="NAME|FILE",
              help="Target description.", shell_complete=complete_target)  # fmt: skip
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a target field (repeatable).",
)
@timeline_option
@timeline_ops_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON (the shape of `run --json`).")  # fmt: skip
@click.option("--steps", type=int, default=0, metavar="N",
              help="Also list the first N token steps and the N slowest decode steps with their floors.")  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the JSON report here (the --json shape).")  # fmt: skip
@click.option(
    "--check",
    "run_check",
    is_flag=True,
    help="Re-verify the timeline with the independent checker (verdict in the JSON).",
)
@click.option("--engine", type=click.Choice(["auto", "fast", "exact"]), default="auto", show_default=True,
              help="Replay engine (auto: fast single pass, event loop when flows share a link).")  # fmt: skip
@user_errors
def command(schedule_path: str, target_name: str, overrides: tuple[str, ...], timeline: str | None,
            timeline_ops: int, as_json: bool, steps: int, output: str | None, run_check: bool,
            engine: str) -> None:  # fmt: skip
    """Replay SCHEDULE (.ndpsched, or the .txt text form) on a target and report latency,
    utilisation, bytes moved, prefetch hits and the distance to the physical lower bound.

    The report (-o) and the timeline (--timeline) are written together or not at all.

    \b
    Examples:
      ndpc simulate run.ndpsched --target rtx5080-ndp
      ndpc simulate run.ndpsched --target rtx5080-ndp --set ndp.units=6 --json
      ndpc simulate run.ndpsched --target rtx5080-ndp --timeline run.json --check   # open in ui.perfetto.dev
    """
    with output_files() as outputs:
        report_tmp = outputs.path(output) if output else None
        timeline_tmp = outputs.path(timeline) if timeline else None
        target = load_target(target_name, overrides)
        schedule = read_any_schedule(schedule_path)
        cost = CostModel(target)
        t0 = time.perf_counter()
        result = simulate(schedule, target, cost, engine=engine)
        wall = time.perf_counter() - t0
        check = (
            check_timeline(schedule, target, result.start, result.end, cost) if run_check else None
        )
        doc = report_doc(result, schedule.meta, check)
        if report_tmp:
            report_tmp.write_text(json_text(doc) + "\n", encoding="utf-8")
        if timeline_tmp:
            write_timeline_file(
                timeline_tmp, timeline, schedule, result, target.name, timeline_ops, target
            )
    if as_json:
        click.echo(json_text(doc))
    else:
        click.echo(report_text(result))
        if steps > 0:
            click.echo(report_steps(result, steps))
    click.echo(
        f"simulated {len(schedule)} ops in {wall:.2f} s ({len(schedule) / max(wall, 1e-9):,.0f} ops/s)",
        err=True,
    )
    if check is not None:
        click.echo(check.summary(), err=True)
        if not check.ok:
            raise NdpcError("the independent checker found violations (see above)")
