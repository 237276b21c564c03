"""`ndpc compare`: one model, target and trace under many policies, side by side."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from ndpc.compiler.cliutil import (
    complete_model,
    complete_policy,
    complete_target,
    csv_text,
    echo_json,
    output_files,
    user_errors,
)
from ndpc.compiler.commands.compile import serving_config, serving_options
from ndpc.compiler.experiments.plots import compare_plot
from ndpc.compiler.experiments.runner import Case, add_speedups, default_jobs, run_cases
from ndpc.compiler.experiments.tables import text_table
from ndpc.compiler.experiments.workload import calibration_for
from ndpc.compiler.policies import get_policy
from ndpc.ir.diagnostics import NdpcError
from ndpc.traces.format import read_header

# CSV columns in this order first (then every other figure of a row)
CSV_FIRST = ("name", "policy", "oracle", "model", "target", "overrides", "units", "e2e_s",
             "speedup_vs_monde", "ttft_s", "tpot_s", "tpot_p99_s", "bound_s", "bound_efficiency",
             "gpu_busy", "cpu_busy", "ndp_busy", "ndp_busy_std", "host_link_bytes",
             "prefetch_hit_rate", "ops", "error")  # fmt: skip

DEFAULT_POLICIES = (
    "monde", "monde-lb", "ondemand", "lru", "fiddler", "duplex", "ctxaware", "eplb",
    "ep", "tp", "tp-lb", "paper", "ndpc", "oracle-cache", "oracle-opt",
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


def build_cases(model, target, trace, policies, overrides, calib, timelines, check,
                serving=None, slo=(None, None)):  # fmt: skip
    """One `Case` per policy; `timelines` maps a policy to (temporary, final) timeline paths;
    `serving` (a ServingConfig) and `slo` ((TTFT, TPOT) seconds) for serving runs."""

    out = []
    for name in policies:
        tmp, final = timelines.get(name, ("", ""))
        out.append(Case(model, target, trace, name, tuple(overrides), calib=calib or "",
                        timeline=str(tmp), timeline_name=str(final), check=check,
                        serving=serving, slo=slo))  # fmt: skip
    return out


def serving_table(rows) -> str:
    """Serving figures per policy (rows of a serving comparison)."""
    head = f"{'policy':14s} {'tok/s':>8s} {'TTFT p50':>9s} {'TTFT p99':>9s} {'TPOT p50':>9s} " \
           f"{'TPOT p99':>9s} {'queue p99':>9s} {'goodput':>8s} {'makespan':>9s} {'bound':>9s} " \
           f"{'gap to opt':>10s}"  # fmt: skip
    lines = [head]
    for r in rows:
        sv = r.get("serving")
        if not sv:
            continue
        good = f"{sv['goodput_tok_s']:8.2f}" if "goodput_tok_s" in sv else f"{'-':>8s}"
        lines.append(f"{r['name']:14s} {sv['throughput_tok_s']:8.2f} {sv['ttft_p50_s']:9.3f} "
                     f"{sv['ttft_p99_s']:9.3f} {sv['tpot_p50_s']:9.3f} {sv['tpot_p99_s']:9.3f} "
                     f"{sv['queue_p99_s']:9.3f} {good} {sv['makespan_s']:9.3f} "
                     f"{_opt(r.get('optimum_bound_s'), '9.3f')} "
                     f"{_opt(r.get('gap_to_optimum'), '9.2f')}{'x' if r.get('gap_to_optimum') else ''}")  # fmt: skip
    return "\n".join(lines) + (
        "\n(seconds; tok/s and goodput in output tokens/s; bound: the least makespan of any "
        "schedule of the iterations each run formed, docs/optimum.md §7)"
    )


def _opt(value, fmt: str) -> str:
    return format(value, fmt) if value is not None else f"{'-':>{fmt.split('.')[0]}s}"


@click.command(name="compare")
@click.argument("model", shell_complete=complete_model)
@click.option("--target", required=True, metavar="NAME|FILE", help="Target description.",
              shell_complete=complete_target)  # fmt: skip
@click.option("--trace", "trace_path", required=True, metavar="FILE", help="Routing trace.",
              type=click.Path(dir_okay=False))  # fmt: skip
@click.option("--policies", metavar="A,B,...", help="Policies to compare (default: all).",
              shell_complete=complete_policy)  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Target override.")
@click.option("--calib-trace", metavar="FILE", help="Fiddler's calibration trace/popularity.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
              help="Write the results as CSV here (one line per policy).")  # fmt: skip
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG plot here.")
@click.option("--timeline-dir", type=click.Path(file_okay=False), help="One timeline per policy.")
@click.option("--check", is_flag=True, help="Re-verify every timeline with the checker.")
@click.option("--jobs", "-j", type=int, default=0, help="Worker processes (0: CPU count).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@serving_options
@user_errors
def command(model, target, trace_path, policies, overrides, calib_trace, as_json, csv_path, plot,
            timeline_dir, check, jobs, progress, max_batch, token_budget, chunked_prefill,
            kv_memory, batching, slo_ttft, slo_tpot) -> None:  # fmt: skip
    """Compare policies on MODEL, TARGET and TRACE: latency, utilisation, traffic, bound.

    Speedups are relative to `monde` (MoNDE, the paper's main baseline). Policies marked * are
    oracles that see the future trace: bounds, not methods. `fiddler` profiles a calibration
    trace; for a generated trace ndpc draws one from the same generator (other requests), for
    a real trace give --calib-trace. Policies and their sources: docs/policies.md.
    The plot, the CSV and the timelines are written together or not at all; with --check, a
    checker violation is reported in each row's `check` and exits 1 after they are written.

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
    with output_files() as outputs, tempfile.TemporaryDirectory(prefix="ndpc-compare-") as tmp:
        plot_tmp = outputs.path(plot) if plot else None
        csv_tmp = outputs.path(csv_path) if csv_path else None
        timelines = {}
        for name in names if timeline_dir else ():
            final = Path(timeline_dir) / f"{name}.json"
            timelines[name] = (outputs.path(final), final)
        calib = calib_trace
        if "fiddler" in names and not calib:
            try:
                calib = str(calibration_for(trace_path, Path(tmp)))
            except NdpcError as err:
                click.echo(f"note: {err.message if hasattr(err, 'message') else err}", err=True)
        serving = serving_config(max_batch, token_budget, chunked_prefill, kv_memory, batching)
        cases = build_cases(model, target, trace_path, names, overrides, calib, timelines, check,
                            serving, (slo_ttft, slo_tpot))  # fmt: skip
        rows = _run(cases, jobs or default_jobs(), progress)
        if all("error" in r for r in rows):
            raise NdpcError("no policy could run: " + rows[0]["error"])
        add_speedups(rows, keys=("model", "target"))
        for row in rows:
            if "error" in row and row["name"] in timelines:
                outputs.drop(
                    timelines.pop(row["name"])[0]
                )  # a policy that cannot run draws nothing
        if plot_tmp:
            compare_plot(rows, f"{model} on {target} {' '.join(overrides)}", plot_tmp)
        if csv_tmp:
            csv_tmp.write_text(csv_text(rows, CSV_FIRST), encoding="utf-8")
    if as_json:
        echo_json({"model": model, "target": target, "trace": trace_path,
                   "overrides": list(overrides), "baseline": "monde", "policies": rows})  # fmt: skip
    else:
        click.echo(text_table(rows))
        click.echo("* oracle: sees the future trace (a bound, not an online method)")
        if any(r.get("serving") for r in rows):
            click.echo(serving_table(rows))
    for path in (plot, csv_path):
        if path:
            click.echo(f"wrote {path}", err=True)
    if timelines:
        click.echo(f"wrote {len(timelines)} timelines to {timeline_dir}/ (open in ui.perfetto.dev)",
                   err=True)  # fmt: skip
    failed = [r for r in rows if "check" in r and not r["check"]["ok"]]
    if failed:
        raise NdpcError("checker found violations: " + "; ".join(
            f"{r['name']}: {r['check']['violations']} ({', '.join(r['check']['counts'])})"
            for r in failed))  # fmt: skip


def _run(cases, jobs: int, progress: bool | None):

    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return run_cases(cases, jobs)
    with click.progressbar(length=len(cases), label="policies", file=sys.stderr) as bar:
        return run_cases(cases, jobs, bar.update)
