"""`ndpc reproduce paper` / `fiddler` / `trimoe`: re-run a published evaluation, write a report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ndpc.compiler.cliutil import (
    csv_text,
    echo_json,
    json_text,
    output_files,
    user_errors,
)
from ndpc.compiler.experiments import fiddler as fiddler_mod
from ndpc.compiler.experiments import paper as setup_mod
from ndpc.compiler.experiments import paper_report
from ndpc.compiler.experiments import trimoe as trimoe_mod
from ndpc.compiler.experiments.runner import add_speedups, default_jobs
from ndpc.compiler.experiments.sweep import make_job, run_jobs_with_progress
from ndpc.compiler.zoo import get_model

# CSV columns in this order first (then every other figure of a row)
CSV_FIRST = ("experiment", "model", "units", "trace", "name", "policy", "e2e_s",
             "speedup_vs_monde", "ttft_s", "tpot_s", "bound_efficiency", "error")  # fmt: skip


@click.group(name="reproduce")
def command() -> None:
    """Reproduce a paper's evaluation (tables, plots, JSON of every number).

    \b
    Examples:
      ndpc reproduce paper --quick --out repro/    # about a minute, shrunk set-up
      ndpc reproduce paper --out repro/            # the full evaluation: about 11 minutes on 2 cores
      ndpc reproduce fiddler --out fiddler/        # Fiddler's published figures (seconds)
      ndpc reproduce trimoe --out trimoe/          # TriMoE's ratios (~4.5 minutes on 2 cores)
    """


@command.command(name="paper")
@click.option("--quick", is_flag=True, help="Shrunk set-up that runs in under a minute.")
@click.option("--out", "out_dir", default="reproduce-out", show_default=True,
              type=click.Path(file_okay=False), help="Output directory.")  # fmt: skip
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of recorded routing data with traces/mixtral-8x7b-gsm8k/ "
                   "(default: a shared/data folder beside the checkout, when there is one).")  # fmt: skip
@click.option("--jobs", "-j", type=int, default=0, help="Worker processes (0: CPU count).")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Run the cases on this Dask distributed cluster (docs/sweeps.md).")  # fmt: skip
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary (headline figures) and the files written as JSON.")  # fmt: skip
@user_errors
def paper(quick: bool, out_dir: str, data_dir: str | None, jobs: int, scheduler: str | None,
          progress: bool | None, as_json: bool) -> None:  # fmt: skip
    """arXiv 2601.03992 (DATE 2026): paper vs MoNDE, ablations, baselines, prefetch sweep.

    Writes OUT/report.md (tables + plots), OUT/results.json (every number), OUT/results.csv
    (one line per run), OUT/*.png (together, or none of them) and the traces it generated
    (OUT/traces/). The full set-up takes about 11 minutes on two cores; --quick under one.
    Every case is cached in OUT/cache (the sweep machinery, docs/sweeps.md): a re-run
    recomputes nothing, a killed run resumes. Setup and policies: docs/results.md,
    docs/policies.md.
    """

    setup = setup_mod.QUICK if quick else setup_mod.Setup()
    out = Path(out_dir)
    traces = setup_mod.prepare_traces(setup, out / "traces")
    data = Path(data_dir) if data_dir else setup_mod.DATA
    real = setup_mod.prepare_real(out / "traces", data) if setup.real_trace else None
    if setup.real_trace and real is None:
        click.echo(f"note: {data} has no Mixtral trace: the real-trace runs are skipped", err=True)
    drift = setup_mod.prepare_drift_traces(setup, out / "traces")
    cases = setup_mod.build_cases(setup, traces, real, drift)
    rows = _run(cases, out / "cache", jobs or default_jobs(), scheduler, progress)
    add_speedups(rows, keys=("model", "units", "trace", "ndp_gbps"))
    summary = paper_report.summarise(rows, setup)
    command_line = "ndpc reproduce paper" + (" --quick" if quick else "") + f" --out {out_dir}"
    with output_files() as outputs:
        stage = outputs.folder(out)
        names = paper_report.write_plots(rows, setup, stage)
        text = paper_report.markdown(rows, setup, summary, names, command_line)
        (stage / "report.md").write_text(text, encoding="utf-8")
        doc = {"setup": setup.to_json(), "summary": summary, "rows": rows}
        (stage / "results.json").write_text(json_text(doc, indent=1), encoding="utf-8")
        (stage / "results.csv").write_text(csv_text(rows, CSV_FIRST), encoding="utf-8")
    files = [str(out / n) for n in ("report.md", "results.json", "results.csv", *names)]
    if as_json:
        echo_json({"summary": summary, "files": files})
        return
    s = summary
    if s["paper_vs_best_monde_mean"] is not None:
        click.echo(f"paper vs the stronger MoNDE per point: mean {s['paper_vs_best_monde_mean']:.2f}x, "
                   f"max {s['paper_vs_best_monde_max']:.2f}x (reported: 2.41x / 2.56x); vs the "
                   f"plain rule (monde): mean {s['paper_vs_monde_mean']:.2f}x, max "
                   f"{s['paper_vs_monde_max']:.2f}x")  # fmt: skip
    click.echo(f"wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'results.csv'} and "
               f"{len(names)} plots")  # fmt: skip


@command.command(name="fiddler")
@click.option("--quick", is_flag=True, help="16 output tokens per point (seconds; for tests).")
@click.option("--out", "out_dir", default="reproduce-fiddler", show_default=True,
              type=click.Path(file_okay=False), help="Output directory.")  # fmt: skip
@click.option("--jobs", "-j", type=int, default=0, help="Worker processes (0: CPU count).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary (one entry per published point) and the files as JSON.")  # fmt: skip
@user_errors
def fiddler(quick: bool, out_dir: str, jobs: int, progress: bool | None, as_json: bool) -> None:
    """Fiddler's published tokens/s (Mixtral-8x7B, batch 1) on its two machines vs ndpc.

    Runs Fiddler and the offloading baseline on targets fiddler-rtx6000 and fiddler-l4 over the
    whole request and writes OUT/report.md and OUT/results.json, together (docs/simulator.md,
    Validation).
    """
    out = Path(out_dir)
    cases = fiddler_mod.build_cases(out, quick)
    rows = _run(cases, out / "cache", jobs or default_jobs(), None, progress)
    summary = fiddler_mod.summarise(rows)
    command_line = "ndpc reproduce fiddler" + (" --quick" if quick else "") + f" --out {out_dir}"
    with output_files() as outputs:
        stage = outputs.folder(out)
        text = fiddler_mod.markdown(summary, command_line, quick)
        (stage / "report.md").write_text(text, encoding="utf-8")
        doc = {"summary": summary, "rows": rows}
        (stage / "results.json").write_text(json_text(doc, indent=1), encoding="utf-8")
    files = [str(out / "report.md"), str(out / "results.json")]
    if as_json:
        echo_json({"summary": summary, "files": files})
        return
    for s in summary:
        if isinstance(s.get("error"), str):
            click.echo(f"{s['name']}: failed: {s['error']}")
        elif s.get("kind") == "speedup":
            click.echo(f"{'speedup':<10} {s['target']:<16} published {s['published_speedup']:.1f}x "
                       f"over {s['baseline']}, ndpc {s['simulated_speedup']:.2f}x "
                       f"({s['error']:+.1%}, {s['role']}; mean of {s['requests']} requests)")  # fmt: skip
        else:
            click.echo(f"{s['system']:<10} {s['target']:<16} published {s['published_tok_s']:.2f} "
                       f"tok/s, ndpc {s['simulated_tok_s']:.2f} ({s['error']:+.1%}, {s['role']})")  # fmt: skip
    click.echo(f"wrote {files[0]} and {files[1]}")


def _int_list(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"every value must be >= 1, got {value!r}")
    return tuple(sorted(set(out)))


@command.command(name="trimoe")
@click.option("--quick", is_flag=True, help="One model, batches 1 and 4, 4+2 tokens (for tests).")
@click.option("--tokens", type=click.IntRange(1, 4096), default=None,
              help=f"Output tokens per request (default {trimoe_mod.OUTPUT}; fewer is faster).")  # fmt: skip
@click.option("--batch", "batches", callback=_int_list, default=None, metavar="B1,B2,...",
              help="Batch sizes (default: " + ",".join(map(str, trimoe_mod.BATCHES)) + ").")  # fmt: skip
@click.option("--models", default=None, metavar="M1,M2,...",
              help="Zoo models (default: " + ",".join(trimoe_mod.MODELS) + ").")  # fmt: skip
@click.option("--out", "out_dir", default="reproduce-trimoe", show_default=True,
              type=click.Path(file_okay=False), help="Output directory.")  # fmt: skip
@click.option("--jobs", "-j", type=int, default=0, help="Worker processes (0: CPU count).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary (published vs ndpc ratios) and the files as JSON.")  # fmt: skip
@user_errors
def trimoe(quick: bool, tokens: int | None, batches: tuple[int, ...] | None, models: str | None,
           out_dir: str, jobs: int, progress: bool | None, as_json: bool) -> None:  # fmt: skip
    """TriMoE (arXiv 2603.01058): GPU + AMX CPU + DIMM-NDP vs its baselines, the seed paper, ndpc.

    Runs DeepSeek-V2, Qwen3-235B-A22B and GLM-4.5-Air on target trimoe-h100-spr at each batch
    size (B requests at once, --max-batch B) with TriMoE's baselines (fiddler, monde,
    monde-lb), the seed paper's method, ndpc and TriMoE with its ablation steps, and writes
    OUT/report.md and OUT/results.json (together): TriMoE's published ratios next to ndpc's,
    each within 25 % or not (docs/trimoe.md). Cached in OUT/cache.
    """
    setup = trimoe_mod.QUICK if quick else trimoe_mod.Setup()
    changes = {}
    if tokens is not None:
        changes["output"] = tokens
    if batches is not None:
        changes["batches"] = batches
    if models is not None:
        names = tuple(dict.fromkeys(m.strip() for m in models.split(",") if m.strip()))
        for name in names:
            get_model(name)  # an unknown name: one message with a did-you-mean
        changes["models"] = names
    setup = dataclasses.replace(setup, **changes)
    out = Path(out_dir)
    cases = trimoe_mod.build_cases(setup, out / "traces")
    rows = _run(cases, out / "cache", jobs or default_jobs(), None, progress)
    summary = trimoe_mod.summarise(rows, setup)
    flags = [f"--{k} {v}" for k, v in (("tokens", tokens), ("models", models)) if v is not None]
    if batches is not None:
        flags.append("--batch " + ",".join(map(str, batches)))
    command_line = " ".join(["ndpc reproduce trimoe", *(["--quick"] if quick else []), *flags,
                             f"--out {out_dir}"])  # fmt: skip
    with output_files() as outputs:
        stage = outputs.folder(out)
        text = trimoe_mod.markdown(summary, setup, command_line)
        (stage / "report.md").write_text(text, encoding="utf-8")
        doc = {"setup": setup.to_json(), "summary": summary, "rows": rows}
        (stage / "results.json").write_text(json_text(doc, indent=1), encoding="utf-8")
    files = [str(out / "report.md"), str(out / "results.json")]
    if as_json:
        echo_json({"summary": summary["claims"], "files": files})
        return
    for c in summary["claims"]:
        lo, hi = c["published"]
        vals = ", ".join(f"{m} {'-' if r is None else f'{r:.2f}x'}" for m, r in c["ndpc"].items())
        pub = f"{lo:.2f}x" if lo == hi else f"{lo:.2f}-{hi:.2f}x"
        click.echo(f"{c['claim']}: published {pub}; ndpc {vals} "
                   f"({c['reproduced_on']} of {c['models_run']} within 25 %)")  # fmt: skip
    click.echo(f"wrote {files[0]} and {files[1]}")


def _run(cases, cache_dir: Path, jobs: int, scheduler: str | None, progress: bool | None):
    outcome = run_jobs_with_progress([make_job(c) for c in cases], cache_dir, "reproduce",
                                     progress, workers=jobs, scheduler=scheduler)  # fmt: skip
    click.echo(f"{len(cases)} cases: {outcome.computed} computed, {outcome.cached} cached, "
               f"{outcome.failed} failed", err=True)  # fmt: skip
    return outcome.rows
