"""`ndpc sweep SPEC --out DIR`: a design-space sweep, cached and resumable; `ndpc sweep plot`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ndpc.compiler.cliutil import user_errors
from ndpc.compiler.experiments.runner import default_jobs
from ndpc.compiler.experiments.sweep import code_digest, run_jobs_with_progress
from ndpc.compiler.experiments.sweep_plots import filter_rows, plot_sweep
from ndpc.compiler.experiments.sweep_spec import load_spec, point_job
from ndpc.compiler.experiments.sweep_table import read_table, table_rows, write_tables
from ndpc.ir.diagnostics import NdpcError


class SweepGroup(click.Group):
    """`ndpc sweep SPEC ...` runs a sweep; `ndpc sweep plot DIR ...` plots one."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        return "run", self.commands["run"], args


@click.group(
    name="sweep",
    cls=SweepGroup,
    invoke_without_command=False,
    subcommand_metavar="SPEC --out DIR [OPTIONS] | plot DIR [OPTIONS]",
    context_settings={"ignore_unknown_options": True},
)  # options may come before SPEC
def command() -> None:
    """Design-space sweeps: `ndpc sweep SPEC --out DIR`, then `ndpc sweep plot DIR`.

    Every point (model, target, --set overrides, policy, pipeline, trace) is cached by the hash
    of its inputs under DIR/cache: a second run recomputes nothing, a killed run resumes, a
    failed point is recorded with its error. Spec format and cluster use: docs/sweeps.md.

    \b
    Examples:
      ndpc sweep spec.toml --out runs/a                 # local process pool, every core
      ndpc sweep spec.toml --out runs/a --workers 1     # in this process
      ndpc sweep spec.toml --out runs/a --scheduler tcp://10.0.0.5:8786 --json
      ndpc sweep plot runs/a --x set.ndp.units --y e2e_s            # a line per policy
      ndpc sweep plot runs/a --kind pareto --x energy_per_token_j --y e2e_s
      ndpc sweep plot runs/a --kind heatmap --x set.ndp.units --y model --z e2e_s
    """


@command.command(name="run")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory (results.csv, results.parquet, cache/, traces/).")  # fmt: skip
@click.option("--workers", "-j", type=int, default=0, help="Local worker processes (0: CPU count).")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Run the points on this Dask distributed cluster instead.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@user_errors
def run(spec, out_dir, workers, scheduler, as_json, progress) -> None:
    """Run the sweep SPEC, writing OUT/results.csv and OUT/results.parquet."""
    if workers < 0:
        raise NdpcError(f"--workers must be >= 0, not {workers}")
    if scheduler and not scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise NdpcError(f"--scheduler: expected tcp://HOST:PORT, not '{scheduler}'")
    t0 = time.perf_counter()
    parsed = load_spec(spec)
    points = parsed.points()
    jobs = [point_job(parsed, p) for p in points]
    out = Path(out_dir)
    outcome = run_jobs_with_progress(jobs, out / "cache", "sweep", progress,
                                     workers=workers or default_jobs(), scheduler=scheduler,
                                     trace_dir=out / "traces" / code_digest())  # fmt: skip
    columns, rows = table_rows(parsed, points, jobs, outcome)
    paths = write_tables(out, columns, rows, outcome.wall_s)
    summary = {"points": len(jobs), "computed": outcome.computed, "cached": outcome.cached,
               "failed": outcome.failed, "executor": f"dask {scheduler}" if scheduler else
               f"local x{workers or default_jobs()}", "results": [str(p) for p in paths],
               "wall_s": round(time.perf_counter() - t0, 3)}  # fmt: skip
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        click.echo(f"{summary['points']} points: {summary['computed']} computed, "
                   f"{summary['cached']} cached, {summary['failed']} failed "
                   f"({summary['wall_s']:.1f} s); wrote {paths[0]} and {paths[1]}")  # fmt: skip
    for row in rows:
        if row.get("error"):
            click.echo(f"note: {row['error']}", err=True)
            break


@command.command(name="plot")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--kind", type=click.Choice(["line", "pareto", "heatmap"]), default="line",
              show_default=True, help="line: one line per --by over --x; pareto: the front of "
              "--y against the cost --x; heatmap: --z over --x and --y.")  # fmt: skip
@click.option("--x", "x", required=True, help="Column on the x axis (an axis or a metric).")
@click.option("--y", "y", required=True, help="Column on the y axis.")
@click.option("--z", "z", default="e2e_s", show_default=True, help="Heat-map value column.")
@click.option("--by", "by", default="policy", show_default=True, help="One line/colour per value.")
@click.option("--where", multiple=True, metavar="COL=VALUE", help="Keep only matching rows.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="PNG (default: DIR/KIND.png)."
)
@user_errors
def plot(out_dir, kind, x, y, z, by, where, output) -> None:
    """Plot the results table of the sweep in OUT_DIR."""
    rows = filter_rows(read_table(out_dir), where)
    path = output or str(Path(out_dir) / f"{kind}.png")
    plot_sweep(rows, kind, x, y, z, by, path)
    click.echo(f"wrote {path}")
