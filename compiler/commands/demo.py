"""`ndpc demo`: a one-minute tour on built-in defaults (what `make demo` runs)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ndpc.compiler.cliutil import user_errors
from ndpc.compiler.experiments.plots import compare_plot
from ndpc.compiler.experiments.runner import Case, add_speedups, default_jobs, run_cases
from ndpc.compiler.experiments.tables import text_table
from ndpc.compiler.experiments.workload import generate_pair

MODEL = "qwen3-30b-a3b"  # the paper's motivating model: 48 layers x 128 experts, top-8
TARGET = "rtx5080-ndp"  # the paper's system: 16 GB RTX-5080-class GPU + 4 NDP-DIMMs
POLICIES = ("monde", "ondemand", "fiddler", "ctxaware", "ep", "tp", "tp-lb", "paper", "ndpc")


@click.command(name="demo")
@click.option("--out", "out_dir", default="demo-out", show_default=True,
              type=click.Path(file_okay=False), help="Where the trace, timeline and plot go.")  # fmt: skip
@click.option("--tokens", type=int, default=64, show_default=True,
              help="Prompt tokens, and as many output tokens.")  # fmt: skip
@click.option("--jobs", "-j", type=int, default=0, help="Worker processes (0: CPU count).")
@user_errors
def command(out_dir: str, tokens: int, jobs: int) -> None:
    """Generate a trace, compare the main policies, write a timeline and a plot.

    Model qwen3-30b-a3b, target rtx5080-ndp (4 NDP units), a generated trace of TOKENS prompt +
    TOKENS output tokens. Then try `ndpc compare` and `ndpc reproduce paper` (see README).
    """

    if tokens < 1:
        raise click.BadParameter("must be >= 1", param_hint="--tokens")
    t0 = time.perf_counter()
    out = Path(out_dir)
    trace, calib = generate_pair(MODEL, tokens, tokens, 0, out)
    click.echo(f"model {MODEL}, target {TARGET}, trace {trace} ({tokens} prompt + {tokens} output "
               "tokens, calibrated synthetic routing)\n")  # fmt: skip
    timeline = out / "timeline-paper.json"
    cases = [Case(MODEL, TARGET, str(trace), p, calib=str(calib),
                  timeline=str(timeline) if p == "paper" else "") for p in POLICIES]  # fmt: skip
    show = sys.stderr.isatty()
    if show:
        with click.progressbar(length=len(cases), label="simulating", file=sys.stderr) as bar:
            rows = run_cases(cases, jobs or default_jobs(), bar.update)
    else:
        rows = run_cases(cases, jobs or default_jobs())
    add_speedups(rows, keys=("model", "target"))
    click.echo(text_table(rows))
    plot = out / "compare.png"
    compare_plot(rows, f"{MODEL} on {TARGET}", plot)
    click.echo(f"\ntimeline of `paper`: {timeline}  (open it in https://ui.perfetto.dev)")
    click.echo(f"plot: {plot}")
    click.echo(f"done in {time.perf_counter() - t0:.0f} s. Next: ndpc compare {MODEL} --target "
               f"{TARGET} --trace {trace}   (all baselines; docs/policies.md)")  # fmt: skip
