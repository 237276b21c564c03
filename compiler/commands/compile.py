"""`ndpc compile`: model + target + trace + policy -> an executable schedule file.

`compile_schedule` (also used by `ndpc run`) loads the model (ONNX, .ndpir or a zoo name), runs
the policy's pipeline (or `-p PIPELINE`) with the target as context, then expands the compiled
module over the trace with `ndpc.backends.emit.emit_schedule`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from ndpc.backends.emit import emit_schedule
from ndpc.backends.iterations import count_steps
from ndpc.backends.schedule import save_schedule
from ndpc.backends.serving import ServingConfig
from ndpc.compiler.cliutil import (
    complete_model,
    complete_policy,
    complete_target,
    output_file,
    user_errors,
)
from ndpc.compiler.frontend import load_model
from ndpc.compiler.passes.pipeline import (
    IrDumpOptions,
    ir_dump_options,
    make_context,
    parse_pipeline,
    print_pipeline,
)
from ndpc.compiler.policies import POLICIES, get_policy
from ndpc.ir.diagnostics import NdpcError
from ndpc.traces.format import load_trace


@dataclass
class Compiled:
    """What `compile_schedule` produced: the schedule, the target, its cost model, timings."""

    schedule: Any
    target: Any
    cost: Any
    seconds: dict[str, float]


def resolve_pipeline(policy: str | None, pipeline: str | None) -> tuple[str, str, bool]:
    """(policy label, pipeline text, oracle) from `--policy` / `-p` (exactly one must be given)."""
    if policy and pipeline is not None:
        raise NdpcError("give either --policy or -p/--passes, not both")
    if policy:
        spec = get_policy(policy)
        return policy, spec.pipeline, spec.oracle
    if pipeline is None:
        raise NdpcError(f"give --policy NAME ({', '.join(sorted(POLICIES))}) or -p PIPELINE")
    return "custom", pipeline, False


def compile_schedule(
    model: str,
    target: str,
    trace_path: str,
    policy: str | None,
    pipeline: str | None,
    overrides: Sequence[str] = (),
    seed: int = 0,
    ir_dump: IrDumpOptions | None = None,
    progress: bool = False,
    serving: ServingConfig | None = None,
) -> Compiled:
    """Load, run passes, emit. Raises NdpcError / TraceError on bad input. A trace with arrival
    times, or a `serving` config, runs the serving loop (defaults: ServingConfig())."""

    ir_dump = ir_dump or IrDumpOptions()
    label, text, oracle = resolve_pipeline(policy, pipeline)
    # `calib=@trace` (oracle profiles) means the evaluated trace itself
    passes = parse_pipeline(text.replace("calib=@trace", f"calib={trace_path}"))
    ctx = make_context(target, overrides, seed)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    module = load_model(model)
    trace = load_trace(trace_path)
    seconds["load"] = time.perf_counter() - t0
    if serving is None and trace.meta.arrivals is not None:
        serving = ServingConfig()
    t0 = time.perf_counter()
    module = ir_dump.pass_manager(passes).run(module, ctx)
    for diag in ctx.diagnostics:
        click.echo(diag.render(), err=True)
    seconds["passes"] = time.perf_counter() - t0
    ir_dump.record("load model + trace", seconds["load"])
    meta = {"policy": label, "pipeline": print_pipeline(passes), "oracle": oracle, "seed": seed}
    t0 = time.perf_counter()
    if progress:
        with click.progressbar(length=count_steps(trace), label="emit", file=sys.stderr) as bar:
            schedule = emit_schedule(module, trace, ctx.target, ctx.cost, progress=bar.update,
                                     meta=meta, trace_name=trace_path, serving=serving)  # fmt: skip
    else:
        schedule = emit_schedule(module, trace, ctx.target, ctx.cost, meta=meta,
                                 trace_name=trace_path, serving=serving)  # fmt: skip
    seconds["emit"] = time.perf_counter() - t0
    ir_dump.record("emit schedule", seconds["emit"])
    return Compiled(schedule, ctx.target, ctx.cost, seconds)


def show_progress(flag: bool | None) -> bool:
    """--progress/--no-progress, defaulting to 'stderr is a terminal'."""
    return sys.stderr.isatty() if flag is None else flag


def serving_config(max_batch: int | None, token_budget: int | None, chunked_prefill: bool,
                   kv_memory: str | None = None,
                   batching: str | None = None) -> ServingConfig | None:  # fmt: skip
    """The serving loop's settings when any option is given (else None: batch 1, unless the
    trace has arrival times)."""
    if (max_batch is None and token_budget is None and not chunked_prefill and kv_memory is None
            and batching is None):  # fmt: skip
        return None
    return ServingConfig(max_batch or 1, token_budget or 0, chunked_prefill,
                         kv_memory or "kv-first", batching or "auto")  # fmt: skip


def serving_options(func):
    """--max-batch, --token-budget, --chunked-prefill, --kv-memory, --batching, --slo-ttft,
    --slo-tpot."""
    options = [
        click.option("--max-batch", type=int, help="Serving: sequences per iteration."),
        click.option(
            "--token-budget", type=int, help="Serving: tokens per iteration (default: no limit)."
        ),
        click.option(
            "--chunked-prefill",
            is_flag=True,
            help="Serving: split prompts into chunks that fill the token budget.",
        ),
        click.option(
            "--kv-memory",
            type=click.Choice(["kv-first", "static"]),
            help="Serving: experts yield GPU memory to the growing KV cache (kv-first, default) "
            "or keep their budget while KV gets the rest (static).",
        ),
        click.option(
            "--batching",
            type=click.Choice(["loop", "recorded"]),
            help="Serving: form iterations (loop) or replay the iterations an imported capture "
            "recorded (recorded; the default for such a trace without --max-batch, "
            "--token-budget or --chunked-prefill).",
        ),
        click.option("--slo-ttft", type=float, metavar="S", help="Goodput: TTFT SLO (seconds)."),
        click.option(
            "--slo-tpot", type=float, metavar="S", help="Goodput: TPOT SLO (seconds/token)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def common_options(func):
    """The options `compile` and `run` share."""
    options = [
        click.argument("model", shell_complete=complete_model),
        click.option(
            "--target",
            required=True,
            metavar="NAME|FILE",
            help="Target description.",
            shell_complete=complete_target,
        ),  # fmt: skip
        click.option(
            "--trace",
            "trace_path",
            required=True,
            metavar="FILE",
            help="Routing trace.",
            type=click.Path(dir_okay=False),
        ),  # fmt: skip
        click.option(
            "--policy",
            metavar="NAME",
            help=f"A named policy: {', '.join(POLICIES)}.",
            shell_complete=complete_policy,
        ),  # fmt: skip
        click.option(
            "-p",
            "--passes",
            "pipeline",
            metavar="PIPELINE",
            help="Pass pipeline instead of a policy, e.g. 'tp-split,balance'.",
        ),  # fmt: skip
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a target field (repeatable).",
        ),  # fmt: skip
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for passes."),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Progress bar on stderr (default: when it is a terminal).",
        ),  # fmt: skip
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command(name="compile")
@common_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Schedule file to write (.ndpsched).",
)
@ir_dump_options
@user_errors
def command(model, target, trace_path, policy, pipeline, overrides, seed, progress, output,
            ir_dump: IrDumpOptions) -> None:  # fmt: skip
    """Compile MODEL for TARGET over a routing TRACE into a schedule file (docs/schedule.md).

    MODEL is an .onnx file, an .ndpir file or a zoo name. Pass options left out take their
    defaults from the target (e.g. tp-split's units = the target's NDP unit count).

    \b
    Examples:
      ndpc compile qwen3-30b-a3b --target rtx5080-ndp --trace t.npz --policy paper -o s.ndpsched
      ndpc compile qwen3-30b-a3b --target rtx5080-ndp --trace t.npz -p 'tp-split,balance' -o s.ndpsched
      ndpc compile m.onnx --target rtx5080-ndp --trace t.npz --policy tp --print-ir-after-all -o s.ndpsched
    """

    compiled = compile_schedule(model, target, trace_path, policy, pipeline, overrides, seed,
                                ir_dump, show_progress(progress))  # fmt: skip
    with output_file(output) as tmp:
        save_schedule(compiled.schedule, tmp)
    click.echo(f"wrote {output}: {len(compiled.schedule)} ops", err=True)
    ir_dump.finish()
