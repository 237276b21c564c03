"""`ndpc reproduce paper`: re-run the evaluation of arXiv 2601.03992 and write a report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ndpc.compiler.cliutil import output_file, user_errors
from ndpc.compiler.experiments import paper as setup_mod
from ndpc.compiler.experiments import paper_report
from ndpc.compiler.experiments.runner import add_speedups, default_jobs, run_cases


@click.group(name="reproduce")
def command() -> None:
    """Reproduce a paper's evaluation (tables, plots, JSON of every number).

    \b
    Examples:
      ndpc reproduce paper --quick --out /tmp/repro     # < 1 minute, shrunk set-up
      ndpc reproduce paper --out docs/results           # the full evaluation
    """


@command.command(name="paper")
@click.option("--quick", is_flag=True, help="Shrunk set-up that runs in under a minute.")
@click.option("--out", "out_dir", default="reproduce-out", show_default=True,
              type=click.Path(file_okay=False), help="Output directory.")  # fmt: skip
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of real routing data (default: ../shared/data of the repo).")  # fmt: skip
@click.option("--jobs", "-j", type=int, default=0, help="Worker processes (0: CPU count).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@user_errors
def paper(
    quick: bool, out_dir: str, data_dir: str | None, jobs: int, progress: bool | None
) -> None:
    """arXiv 2601.03992 (DATE 2026): paper vs MoNDE, ablations, baselines, prefetch sweep.

    Writes OUT/report.md (tables + plots), OUT/results.json (every number), OUT/*.png and the
    traces it generated (OUT/traces/). Setup and policies: docs/results.md, docs/policies.md.
    """

    setup = setup_mod.QUICK if quick else setup_mod.Setup()
    out = Path(out_dir)
    traces = setup_mod.prepare_traces(setup, out / "traces")
    data = Path(data_dir) if data_dir else setup_mod.DATA
    real = setup_mod.prepare_real(out / "traces", data) if setup.real_trace else None
    if setup.real_trace and real is None:
        click.echo(f"note: {data} has no Mixtral trace: the real-trace runs are skipped", err=True)
    cases = setup_mod.build_cases(setup, traces, real)
    rows = _run(cases, jobs or default_jobs(), progress)
    add_speedups(rows, keys=("model", "units", "trace"))
    summary = paper_report.summarise(rows, setup)
    names = paper_report.write_plots(rows, setup, out)
    command_line = "ndpc reproduce paper" + (" --quick" if quick else "") + f" --out {out_dir}"
    text = paper_report.markdown(rows, setup, summary, names, command_line)
    with output_file(out / "report.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    doc = {"setup": setup.to_json(), "summary": summary, "rows": rows}
    with output_file(out / "results.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
    s = summary
    if s["paper_vs_monde_mean"] is not None:
        click.echo(f"paper vs MoNDE: mean {s['paper_vs_monde_mean']:.2f}x, max "
                   f"{s['paper_vs_monde_max']:.2f}x (reported: 2.41x / 2.56x)")  # fmt: skip
    click.echo(f"wrote {out / 'report.md'}, {out / 'results.json'} and {len(names)} plots")


def _run(cases, jobs: int, progress: bool | None):

    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return run_cases(cases, jobs)
    with click.progressbar(length=len(cases), label="reproduce", file=sys.stderr) as bar:
        return run_cases(cases, jobs, bar.update)
