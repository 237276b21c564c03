"""`ndpc simulate`: replay a schedule on the GPU-NDP timing simulator (docs/simulator.md)."""

from __future__ import annotations

import sys
import time

import click

from ndpc.backends.check import check_timeline
from ndpc.backends.cost import CostModel
from ndpc.backends.report import report_json, report_steps, report_text
from ndpc.backends.schedule_text import read_any_schedule
from ndpc.backends.simulator import simulate
from ndpc.backends.target import load_target
from ndpc.backends.timeline import write_timeline
from ndpc.compiler.cliutil import output_file, user_errors
from ndpc.ir.diagnostics import NdpcError


@click.command(name="simulate")
@click.argument("schedule_path", metavar="SCHEDULE", type=click.Path(dir_okay=False))
@click.option(
    "--target", "target_name", required=True, metavar="NAME|FILE", help="Target description."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a target field (repeatable).",
)
@click.option(
    "--timeline", type=click.Path(dir_okay=False), help="Write a Chrome-trace JSON timeline here."
)
@click.option("--timeline-ops", type=int, default=200_000, show_default=True,
              help="At most this many ops (the earliest) in the timeline.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--steps", type=int, default=0, metavar="N",
              help="Also list the first N token steps and the N slowest decode steps with their floors.")  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option(
    "--check",
    "run_check",
    is_flag=True,
    help="Re-verify the timeline with the independent checker.",
)
@click.option("--engine", type=click.Choice(["auto", "fast", "exact"]), default="auto", show_default=True,
              help="Replay engine (auto: fast single pass, event loop when flows share a link).")  # fmt: skip
@user_errors
def command(schedule_path: str, target_name: str, overrides: tuple[str, ...], timeline: str | None,
            timeline_ops: int, as_json: bool, steps: int, output: str | None, run_check: bool,
            engine: str) -> None:  # fmt: skip
    """Replay SCHEDULE (binary, or the .txt text form) on a target and report latency, utilisation,
    bytes moved, prefetch hits and the distance to the physical lower bound.

    \b
    Examples:
      ndpc simulate run.ndps --target rtx5080-ndp
      ndpc simulate run.ndps --target rtx5080-ndp --set ndp.units=6 --json
      ndpc simulate run.ndps --target rtx5080-ndp --timeline run.json --check   # open in ui.perfetto.dev
    """
    target = load_target(target_name, overrides)
    schedule = read_any_schedule(schedule_path)
    cost = CostModel(target)
    t0 = time.perf_counter()
    result = simulate(schedule, target, cost, engine=engine)
    wall = time.perf_counter() - t0
    if output:
        with output_file(output) as tmp:
            tmp.write_text(report_json(result) + "\n", encoding="utf-8")
    if as_json:
        sys.stdout.write(report_json(result) + "\n")
    else:
        click.echo(report_text(result))
        if steps > 0:
            click.echo(report_steps(result, steps))
    click.echo(
        f"simulated {len(schedule)} ops in {wall:.2f} s ({len(schedule) / max(wall, 1e-9):,.0f} ops/s)",
        err=True,
    )
    if timeline:
        with output_file(timeline) as tmp:
            write_timeline(
                tmp,
                schedule,
                result.start,
                result.end,
                target_name=target.name,
                max_ops=timeline_ops,
            )
    if run_check:
        report = check_timeline(schedule, target, result.start, result.end, cost)
        click.echo(report.summary(), err=True)
        if not report.ok:
            raise NdpcError("the independent checker found violations (see above)")
