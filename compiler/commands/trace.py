"""`ndpc trace`: import, generate, capture, inspect routing traces (library code lives in traces/)."""

from __future__ import annotations

import itertools
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ndpc.compiler import zoo
from ndpc.compiler.cliutil import complete_model, echo_json, json_text, output_file, user_errors
from ndpc.compiler.frontend import load_model
from ndpc.compiler.frontend.summary import layer_rows
from ndpc.ir.diagnostics import NdpcError
from ndpc.traces.capture import capture_trace
from ndpc.traces.errors import TraceError
from ndpc.traces.format import TraceWriter, concat_traces, save_trace
from ndpc.traces.importers import FORMATS, import_source
from ndpc.traces.show import compute_stats, format_stats, parse_range, plot_heatmap, show_trace


@click.group(name="trace")
def command() -> None:
    """Routing traces: which experts every token picks at every MoE layer.

    \b
    Examples:
      ndpc trace gen --model qwen3-30b-a3b --tokens 1024 --prompt 512 --seed 0 -o t.npz
      ndpc trace gen --layers 8 --experts 64 --k 6 --tokens 2048 --prompt 2048 --seed 1 -o f.npz
      ndpc trace import flame-moe-290m-prefill/ -o flame.npz        # a folder of layer<N>.csv
      ndpc trace stats t.npz --plot heat.png
      ndpc trace show t.npz --tokens 0:10 --layers 0:4
      ndpc trace capture model.onnx --prompt-tokens 16 --decode-tokens 8 -o cap.npz
    The format (.npz, or .jsonl interchange) is described in docs/traces.md.
    """


def _model(name: str) -> Any:

    try:
        return zoo.get_model(name)
    except KeyError:
        raise click.BadParameter(
            f"unknown model {name!r}; see `ndpc model list`", param_hint="--model"
        ) from None


def _model_shape(spec: str) -> tuple[str, int, int, int, int]:
    """(name, MoE layers, experts, top-k, shared experts) of a zoo name or a model file
    (.onnx / .ndpir), read from its IR."""
    if spec in zoo.ZOO or not (spec.endswith((".onnx", ".ndpir")) or Path(spec).is_file()):
        cfg = _model(spec)
        return cfg.name, cfg.moe_layers, cfg.experts, cfg.top_k, cfg.shared_experts
    module = load_model(spec)
    moe = [r for r in layer_rows(module) if r.kind == "moe"]
    if not moe:
        raise NdpcError(f"{spec}: the model has no MoE layer, so there is nothing to route")
    shapes = {(r.experts, r.top_k, r.shared_experts) for r in moe}
    if len(shapes) > 1:
        raise NdpcError(f"{spec}: MoE layers differ in (experts, top-k, shared experts): "
                        f"{sorted(shapes)}; a trace has one shape")  # fmt: skip
    experts, k, shared = shapes.pop()
    return module.name, len(moe), experts, k, shared


def _save(trace: Any, out: str) -> None:

    with output_file(out) as tmp:
        save_trace(trace, tmp, jsonl=out.endswith(".jsonl"))


# ------------------------------------------------------------------------------------ import


@command.command(name="import")
@click.argument("src", type=click.Path(exists=True))
@click.option(
    "-o", "--output", "out", required=True, help="Output trace (.npz, or .jsonl interchange)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    help="Source format (detected when omitted).",
)
@click.option(
    "--model", help="Zoo model the trace belongs to: checks layers/experts, supplies top-k."
)
@click.option("--k", "k", type=int, help="The model's top-k (needed for popularity counts).")
@click.option("--experts", type=int, help="Expert count (default: inferred from the data).")
@click.option("--strict", is_flag=True, help="Treat every source defect as an error.")
@user_errors
def import_cmd(
    src: str,
    out: str,
    fmt: str | None,
    model: str | None,
    k: int | None,
    experts: int | None,
    strict: bool,
) -> None:
    """Import recorded routing data SRC (file or folder) into ndpc's trace format.

    \b
    Formats: topk-jsonl (Mixtral decode traces), batch-jsonl (a serving capture: records per
    iteration, request, position and layer; keeps the decode batches), flame-csv (folder of
    layer<N>.csv), popularity-json (per-layer counts; a folder is pooled), ndpc-jsonl, ndpc-npz.
    Defects in the source are listed on stderr with the rule applied (docs/traces.md).
    Example: ndpc trace import gsm8k_2_routing.jsonl --model mixtral-8x7b -o m.npz
    """

    cfg = _model(model) if model else None
    if cfg is not None:
        k = k or cfg.top_k
        experts = experts or cfg.experts
    trace, report = import_source(src, fmt, k=k, experts=experts, model=model or "")
    meta = trace.meta
    if cfg is not None and meta.layers != cfg.moe_layers:
        raise TraceError(
            src, f"{meta.layers} MoE layers in the source, model {cfg.name} has {cfg.moe_layers}"
        )
    click.echo(
        f"imported {report.format}: {meta.layers} layers x {meta.experts} experts, top-{meta.k}, {trace.tokens} tokens",
        err=True,
    )
    for defect in report.defects:
        click.echo(f"  defect: {defect}", err=True)
    if strict and report.defects:
        raise TraceError(src, f"{len(report.defects)} defect(s) in the source and --strict given")
    _save(trace, out)
    click.echo(f"wrote {out}", err=True)


# ------------------------------------------------------------------------------------ gen


@command.command(name="gen")
@click.option("--model", shell_complete=complete_model,
              help="Zoo name or model file (.onnx, .ndpir): sets layers, experts, k, shared experts.")  # fmt: skip
@click.option("--layers", type=int, help="MoE layers (instead of --model).")
@click.option("--experts", type=int, help="Routed experts per layer (instead of --model).")
@click.option("--k", "k", type=int, help="Experts per token (instead of --model).")
@click.option(
    "--shared-experts", type=int, default=None, help="Shared experts (chooses the preset)."
)
@click.option(
    "--tokens",
    default="1024",
    show_default=True,
    help="Tokens per request, prompt included: N, or LO:HI (uniform per request).",
)
@click.option(
    "--prompt",
    default="0",
    show_default=True,
    help="Prompt (prefill) tokens per request: N, or LO:HI (uniform per request).",
)
@click.option("--requests", type=int, default=1, show_default=True)
@click.option(
    "--arrival-rate",
    type=float,
    help="Requests per second: a serving workload (arrival times in the header, version 2).",
)
@click.option(
    "--arrival",
    type=click.Choice(["poisson", "fixed"]),
    default="poisson",
    show_default=True,
    help="Arrival process for --arrival-rate.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--preset", default="auto", show_default=True, help="coarse | fine-shared | fine | auto."
)
@click.option(
    "--answer-drift",
    type=float,
    default=0.0,
    show_default=True,
    help="Prompt-to-answer drift: std of the answer tokens' extra log-popularity shift.",
)
@click.option(
    "--list-presets", is_flag=True, help="Print the presets and their calibration targets."
)
@click.option("-o", "--output", "out", help="Output trace (.npz or .jsonl).")
@user_errors
def gen_cmd(
    model: str | None,
    layers: int | None,
    experts: int | None,
    k: int | None,
    shared_experts: int | None,
    tokens: str,
    prompt: str,
    requests: int,
    arrival_rate: float | None,
    arrival: str,
    seed: int,
    preset: str,
    answer_drift: float,
    list_presets: bool,
    out: str | None,
) -> None:
    """Generate a synthetic routing trace calibrated to measured routing statistics.

    \b
    Examples:
      ndpc trace gen --model qwen3-30b-a3b --tokens 1024 --prompt 512 --seed 0 -o t.npz
      ndpc trace gen --model model.onnx --tokens 256 --prompt 128 -o m.npz
      ndpc trace gen --layers 32 --experts 8 --k 2 --tokens 512 --prompt 256 --requests 4 -o m.npz
      ndpc trace gen --model mixtral-8x7b --requests 16 --arrival-rate 4 --prompt 256 \\
          --tokens 320 --seed 0 -o serve.npz
    """
    # lazy: numba, only `gen` needs it
    from ndpc.traces.generate import (
        PRESETS,
        arrival_times,
        choose_preset,
        iter_generate,
        preset_table,
        request_lengths,
        select_lengths,
    )

    if list_presets:
        echo_json(preset_table())
        return
    if out is None:
        raise click.UsageError("-o/--output is required")
    name = model or ""
    if model:
        name, n_layers, n_experts, top_k, shared = _model_shape(model)
        layers, experts, k = layers or n_layers, experts or n_experts, k or top_k
        shared_experts = shared if shared_experts is None else shared_experts
    if layers is None or experts is None or k is None:
        raise click.UsageError("give --model NAME or all of --layers, --experts and --k")
    if not 0 <= answer_drift < float("inf"):
        raise click.BadParameter(f"{answer_drift} must be a finite number >= 0",
                                 param_hint="--answer-drift")  # fmt: skip
    chosen: Any = preset
    if answer_drift:
        key = choose_preset(experts, shared_experts or 0) if preset in ("auto", "") else preset
        if key not in PRESETS:
            raise click.BadParameter(f"unknown preset {key!r}", param_hint="--preset")
        chosen = replace(PRESETS[key], answer_drift=answer_drift)
    p_range, t_range = _length(prompt, "--prompt"), _length(tokens, "--tokens")
    if p_range[0] == p_range[1] and t_range[0] == t_range[1]:  # fixed lengths, as before
        total = t_range[0] * requests
        chunks = iter_generate(layers, experts, k, t_range[0], p_range[0], seed, requests, chosen,
                               name, shared_experts or 0)  # fmt: skip
    else:
        try:
            prompts, decodes = request_lengths(requests, p_range, t_range, seed)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--prompt/--tokens") from None
        gen_prompt, gen_tokens = int(prompts.max()), int(prompts.max() + decodes.max())
        total = int((prompts + decodes).sum())
        chunks = iter_generate(layers, experts, k, gen_tokens, gen_prompt, seed, requests, chosen,
                               name, shared_experts or 0)  # fmt: skip
        chunks = select_lengths(chunks, gen_tokens, gen_prompt, prompts, decodes)
        lengths = {"prompt_range": list(p_range), "tokens_range": list(t_range)}
        chunks = (replace(c, meta=replace(c.meta, params={**c.meta.params, **lengths}))
                  for c in chunks)  # fmt: skip
    if arrival_rate is not None:
        try:
            arrivals = arrival_times(requests, arrival_rate, seed, arrival)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--arrival-rate") from None
        chunks = (_with_arrivals(c, arrivals, arrival_rate, arrival) for c in chunks)
    _write_stream(chunks, out, total)


def _length(text: str, option: str) -> tuple[int, int]:
    """N or LO:HI as (lo, hi)."""
    try:
        parts = [int(x) for x in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or parts[0] < 0 or parts[0] > parts[1]:
        raise click.BadParameter(f"{text!r}: give N or LO:HI with 0 <= LO <= HI", param_hint=option)
    return parts[0], parts[1]


def _with_arrivals(chunk: Any, arrivals: tuple[float, ...], rate: float, kind: str) -> Any:
    """`chunk` whose metadata carries the requests' arrival times (and how they were drawn)."""
    params = dict(chunk.meta.params, arrival_rate=rate, arrival=kind)
    return replace(chunk, meta=replace(chunk.meta, arrivals=arrivals, params=params))


def _write_stream(chunks: Any, out: str, total: int) -> None:
    """Write chunks to `out` (all or nothing), with a progress bar for long traces."""

    with output_file(out) as tmp:
        if out.endswith(".jsonl"):
            save_trace(concat_traces(list(chunks)), tmp, jsonl=True)
        else:
            it = iter(chunks)
            first = next(it)
            bar = click.progressbar(
                length=total, label="generating", file=sys.stderr, hidden=total < 200_000
            )
            with TraceWriter(tmp, first.meta) as writer, bar:
                for chunk in itertools.chain([first], it):
                    writer.write(chunk)
                    bar.update(chunk.tokens)
    click.echo(f"wrote {out} ({total} tokens)", err=True)


# ------------------------------------------------------------------------------------ capture


@command.command(name="capture")
@click.argument("onnx_model", type=click.Path(exists=True, dir_okay=False))
@click.option("--prompt-tokens", type=int, required=True, help="Prompt length (one prefill run).")
@click.option(
    "--decode-tokens", type=int, default=0, show_default=True, help="Greedy decode steps."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random prompt.")
@click.option("-o", "--output", "out", required=True)
@user_errors
def capture_cmd(
    onnx_model: str, prompt_tokens: int, decode_tokens: int, seed: int, out: str
) -> None:
    """Run ONNX_MODEL with onnxruntime (CPU) and record the router's real top-k choices.

    Example: ndpc trace capture tiny.onnx --prompt-tokens 16 --decode-tokens 8 -o cap.npz
    """

    trace, notes = capture_trace(onnx_model, prompt_tokens, decode_tokens, seed)
    for note in notes:
        click.echo(f"  note: {note}", err=True)
    _save(trace, out)
    click.echo(
        f"wrote {out}: {trace.meta.layers} MoE layers, top-{trace.meta.k}, {trace.tokens} tokens",
        err=True,
    )


# ------------------------------------------------------------------------------------ stats


@command.command(name="stats")
@click.argument("trace_path", metavar="TRACE", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as one JSON object.")
@click.option(
    "--plot", type=click.Path(dir_okay=False), help="Write a layer x expert heat map (PNG)."
)
@click.option(
    "--chunk-tokens", type=int, default=16384, show_default=True, help="Streaming chunk size."
)
@user_errors
def stats_cmd(trace_path: str, as_json: bool, plot: str | None, chunk_tokens: int) -> None:
    """Routing statistics of TRACE, each beside a uniform router's value at the same sample size.

    Example: ndpc trace stats t.npz --json
    """

    report = compute_stats(trace_path, chunk_tokens)
    if plot:
        with output_file(plot) as tmp:
            plot_heatmap(report, tmp, title=Path(trace_path).name)
    click.echo(json_text(report, indent=1) if as_json else format_stats(report))


# ------------------------------------------------------------------------------------ show


@command.command(name="show")
@click.argument("trace_path", metavar="TRACE", type=click.Path(exists=True))
@click.option("--tokens", "token_range", default="0:10", show_default=True, help="Token range a:b.")
@click.option("--layers", "layer_range", default="0:4", show_default=True, help="Layer range a:b.")
@user_errors
def show_cmd(trace_path: str, token_range: str, layer_range: str) -> None:
    """Print part of TRACE: per token its request, phase and each layer's experts (weights).

    Example: ndpc trace show t.npz --tokens 0:10 --layers 0:4
    """

    click.echo(
        show_trace(
            trace_path, parse_range(token_range, "--tokens"), parse_range(layer_range, "--layers")
        )
    )
