"""`ndpc demo`: a one-minute tour on built-in defaults (what `make demo` runs)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ndpc.compiler.cliutil import echo_json, output_files, user_errors
from ndpc.compiler.experiments.plots import compare_plot
from ndpc.compiler.experiments.runner import Case, add_speedups, default_jobs, run_cases
from ndpc.compiler.experiments.tables import text_table
from ndpc.compiler.experiments.workload import generate_pair
from ndpc.ir.diagnostics import NdpcError

MODEL = "qwen3-30b-a3b"  # the paper's motivating model: 48 layers x 128 experts, top-8
TARGET = "rtx5080-ndp"  # the paper's system: 16 GB RTX-5080-class GPU + 4 NDP-DIMMs
POLICIES = ("monde", "ondemand", "fiddler", "ctxaware", "ep", "tp", "tp-lb", "paper", "ndpc",
            "oracle-opt")  # fmt: skip


@click.command(name="demo")
@click.option("--out", "out_dir", default="demo-out", show_default=True,
              type=click.Path(file_okay=False), help="Where the trace, timeline and plot go.")  # fmt: skip
@click.option("--tokens", type=int, default=64, show_default=True,
              help="Prompt tokens, and as many output tokens.")  # fmt: skip
@click.option("--jobs", "-j", type=int, default=0, help="Worker processes (0: CPU count).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (as `compare`).")
@user_errors
def command(out_dir: str, tokens: int, jobs: int, as_json: bool) -> None:
    """Generate a trace, compare the main policies, write a timeline and a plot.

    Model qwen3-30b-a3b, target rtx5080-ndp (4 NDP units), a generated trace of TOKENS prompt +
    TOKENS output tokens. Then try `ndpc compare` and `ndpc reproduce paper` (see README).
    """

    if tokens < 1:
        raise click.BadParameter("must be >= 1", param_hint="--tokens")
    t0 = time.perf_counter()
    out = Path(out_dir)
    trace, calib = generate_pair(MODEL, tokens, tokens, 0, out)
    say = (lambda text: click.echo(text, err=True)) if as_json else click.echo
    say(f"model {MODEL}, target {TARGET}, trace {trace} ({tokens} prompt + {tokens} output "
        "tokens, calibrated synthetic routing)\n")  # fmt: skip
    timeline, plot = out / "timeline-paper.json", out / "compare.png"
    with output_files() as outputs:  # the timeline and the plot appear together
        timeline_tmp, plot_tmp = outputs.path(timeline), outputs.path(plot)
        cases = [Case(MODEL, TARGET, str(trace), p, calib=str(calib),
                      timeline=str(timeline_tmp) if p == "paper" else "",
                      timeline_name=str(timeline)) for p in POLICIES]  # fmt: skip
        show = sys.stderr.isatty()
        if show:
            with click.progressbar(length=len(cases), label="simulating", file=sys.stderr) as bar:
                rows = run_cases(cases, jobs or default_jobs(), bar.update)
        else:
            rows = run_cases(cases, jobs or default_jobs())
        paper = next(r for r in rows if r["name"] == "paper")
        if "error" in paper:
            raise NdpcError(f"policy paper could not run: {paper['error']}")
        add_speedups(rows, keys=("model", "target"))
        compare_plot(rows, f"{MODEL} on {TARGET}", plot_tmp)
    if as_json:
        echo_json({"model": MODEL, "target": TARGET, "trace": str(trace), "timeline": str(timeline),
                   "plot": str(plot), "baseline": "monde", "policies": rows})  # fmt: skip
    else:
        click.echo(text_table(rows))
    say(f"\ntimeline of `paper`: {timeline}  (open it in https://ui.perfetto.dev)")
    say(f"plot: {plot}")
    say(f"done in {time.perf_counter() - t0:.0f} s. Next: ndpc compare {MODEL} --target "
        f"{TARGET} --trace {trace}   (all baselines; docs/policies.md)")  # fmt: skip
