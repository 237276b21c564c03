"""`ndpc compare`: one model, target and trace under many policies, side by side."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from ndpc.compiler.cliutil import user_errors
from ndpc.compiler.experiments.plots import compare_plot
from ndpc.compiler.experiments.runner import Case, add_speedups, default_jobs, run_cases
from ndpc.compiler.experiments.tables import text_table
from ndpc.compiler.experiments.workload import calibration_for
from ndpc.compiler.policies import get_policy
from ndpc.ir.diagnostics import NdpcError
from ndpc.traces.format import read_header

DEFAULT_POLICIES = (
    "monde", "monde-lb", "ondemand", "lru", "fiddler", "duplex", "ctxaware", "eplb",
    "ep", "tp", "tp-lb", "paper", "ndpc", "oracle-cache",
)  # fmt: skip


def parse_policies(text: str | None) -> list[str]:
    """The policy list (comma-separated; unknown names are an error with a did-you-mean)."""

    names = (
        list(DEFAULT_POLICIES) if not text else [p.strip() for p in text.split(",") if p.strip()]
    )
    if not names:
        raise NdpcError("--policies: no policy given")
    for name in names:
        get_policy(name)
    return list(dict.fromkeys(names))


def build_cases(model, target, trace, policies, overrides, calib, timeline_dir, check):
    """One `Case` per policy."""

    out = []
    for name in policies:
        timeline = str(Path(timeline_dir) / f"{name}.json") if timeline_dir else ""
        out.append(Case(model, target, trace, name, tuple(overrides), calib=calib or "",
                        timeline=timeline, check=check))  # fmt: skip
    return out


@click.command(name="compare")
@click.argument("model")
@click.option("--target", required=True, metavar="NAME|FILE", help="Target description.")
@click.option("--trace", "trace_path", required=True, metavar="FILE", help="Routing trace.")
@click.option("--policies", metavar="A,B,...", help="Policies to compare (default: all).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Target override.")
@click.option("--calib-trace", metavar="FILE", help="Fiddler's calibration trace/popularity.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG plot here.")
@click.option("--timeline-dir", type=click.Path(file_okay=False), help="One timeline per policy.")
@click.option("--check", is_flag=True, help="Re-verify every timeline with the checker.")
@click.option("--jobs", "-j", type=int, default=0, help="Worker processes (0: CPU count).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@user_errors
def command(model, target, trace_path, policies, overrides, calib_trace, as_json, plot,
            timeline_dir, check, jobs, progress) -> None:  # fmt: skip
    """Compare policies on MODEL, TARGET and TRACE: latency, utilisation, traffic, bound.

    Speedups are relative to `monde` (MoNDE, the paper's main baseline). Policies marked * are
    oracles that see the future trace: bounds, not methods. `fiddler` profiles a calibration
    trace; for a generated trace ndpc draws one from the same generator (other requests), for
    a real trace give --calib-trace. Policies and their sources: docs/policies.md.

    \b
    Examples:
      ndpc compare qwen3-30b-a3b --target rtx5080-ndp --trace t.npz
      ndpc compare qwen3-30b-a3b --target rtx5080-ndp --trace t.npz --policies monde,tp,paper
      ndpc compare mixtral-8x7b --target rtx5080-ndp --set ndp.units=6 --trace m.npz --json
      ndpc compare qwen3-30b-a3b --target rtx5080-ndp --trace t.npz --plot cmp.png \\
          --timeline-dir timelines/
    """

    names = parse_policies(policies)
    read_header(trace_path)  # a bad trace fails here, with its own message, before any work
    with tempfile.TemporaryDirectory(prefix="ndpc-compare-") as tmp:
        calib = calib_trace
        if "fiddler" in names and not calib:
            try:
                calib = str(calibration_for(trace_path, Path(tmp)))
            except NdpcError as err:
                click.echo(f"note: {err.message if hasattr(err, 'message') else err}", err=True)
        cases = build_cases(model, target, trace_path, names, overrides, calib, timeline_dir, check)
        rows = _run(cases, jobs or default_jobs(), progress)
    add_speedups(rows, keys=("model", "target"))
    if as_json:
        doc = {"model": model, "target": target, "trace": trace_path, "overrides": list(overrides),
               "baseline": "monde", "policies": rows}  # fmt: skip
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        click.echo(text_table(rows))
        click.echo("* oracle: sees the future trace (a bound, not an online method)")
    if plot:
        compare_plot(rows, f"{model} on {target} {' '.join(overrides)}", plot)
        click.echo(f"wrote plot {plot}", err=True)
    if timeline_dir:
        click.echo(f"wrote timelines to {timeline_dir}/ (open in ui.perfetto.dev)", err=True)
    if any("check" in r and r["check"] != "ok" for r in rows):
        raise NdpcError("checker found violations: " + "; ".join(
            f"{r['name']}: {r['check']}" for r in rows if r.get("check", "ok") != "ok"))  # fmt: skip
    if all("error" in r for r in rows):
        raise NdpcError("no policy could run: " + rows[0]["error"])


def _run(cases, jobs: int, progress: bool | None):

    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return run_cases(cases, jobs)
    with click.progressbar(length=len(cases), label="policies", file=sys.stderr) as bar:
        return run_cases(cases, jobs, bar.update)
