"""`ndpc model list|show|make`: the model zoo and its ONNX graphs."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from ndpc.compiler.cliutil import complete_zoo_name, echo_json, output_file, user_errors
from ndpc.compiler.frontend.zoo_spec import config_spec
from ndpc.compiler.zoo import ZOO, get_model
from ndpc.ir.diagnostics import NdpcError

TINY_LIMIT_BYTES = 256 << 20  # --tiny-weights writes real float32 data: keep files small


@click.group(name="model")
def command() -> None:
    """The model zoo: real MoE models' shapes (from their config.json) and small test configs.

    \b
    Examples:
      ndpc model list
      ndpc model show deepseek-v3
      ndpc model make qwen3-30b-a3b -o qwen3.onnx
      ndpc model make tiny-mixtral -o tiny.onnx --tiny-weights
    """


@command.command(name="list")
@click.option("--all", "show_all", is_flag=True, help="Include the 18 small-* configurations.")
@click.option("--json", "as_json", is_flag=True, help="Print the configurations as JSON.")
@user_errors
def list_models(show_all: bool, as_json: bool) -> None:
    """List zoo models (public checkpoints first, then synthetic configurations)."""

    cfgs = [c for c in ZOO.values() if show_all or not c.name.startswith("small-")]
    if as_json:
        echo_json([_config_json(c) for c in cfgs])
        return
    head = ("name", "layers", "moe", "experts", "k", "d_model", "d_ff", "shared", "hf_id")
    rows = [head] + [
        (
            c.name,
            str(c.layers),
            str(c.moe_layers),
            str(c.experts),
            str(c.top_k),
            str(c.d_model),
            str(c.d_ff_expert),
            f"{c.shared_experts}x{c.shared_width}" if c.shared_experts else "-",
            c.hf_id or "(synthetic)",
        )
        for c in cfgs
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if not show_all:
        click.echo("(+ small-{2,4,8}e-{1024,2048,4096}h-top{1,2}: see --all)")


def _config_json(cfg) -> dict:
    """Every field of a zoo configuration as JSON-ready data (`sources` included)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


@command.command(name="show")
@click.argument("name", shell_complete=complete_zoo_name)
@click.option("--json", "as_json", is_flag=True, help="Print the fields and sources as JSON.")
@user_errors
def show(name: str, as_json: bool) -> None:
    """Every field of one zoo model with the source of its value."""

    cfg = get_model(name)
    if as_json:
        echo_json(_config_json(cfg))
        return
    for f in fields(cfg):
        if f.name == "sources":
            continue
        src = cfg.sources.get(f.name, "")
        click.echo(f"{f.name:15} {getattr(cfg, f.name)!s:28} {src}".rstrip())
    click.echo(f"sources: {cfg.sources.get('*', '')}")


@command.command(name="make")
@click.argument("name", shell_complete=complete_zoo_name)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The .onnx file to write.",
)
@click.option(
    "--tiny-weights",
    is_flag=True,
    help="Embed seeded random float32 weights (small models only) so onnxruntime "
    "can run the graph.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of --tiny-weights.")
@click.option(
    "--router-outputs",
    is_flag=True,
    help="Also output each MoE layer's choices: router.<layer>.experts (int64 [seq, k]) "
    "and router.<layer>.weights.",
)
@click.option(
    "--form",
    type=click.Choice(["decomposed", "fused"]),
    default="decomposed",
    show_default=True,
    help="decomposed: torch.onnx.export batched_mm graph; fused: com.microsoft::MoE "
    "nodes as the onnxruntime-genai builder writes them.",
)
@user_errors
def make(
    name: str, output: str, tiny_weights: bool, seed: int, router_outputs: bool, form: str
) -> None:
    """Write zoo model NAME as an ONNX graph with its full shapes.

    The graph has the form torch.onnx.export (TorchScript exporter, batched_mm experts) gives a
    transformers 5.x model. Weights are external-data references into OUTPUT.data, which is
    never written; ndpc import reads the graph without it.
    """

    from ndpc.compiler.frontend.model_writer import (
        make_model,
    )  # lazy: onnx, only `model write` needs it

    cfg = get_model(name)
    if tiny_weights:
        spec = config_spec(cfg)
        params = sum(layer.weight_bytes(cfg.d_model, spec.dtype) for layer in spec.layers)
        if params * 2 > TINY_LIMIT_BYTES:  # bf16 bytes -> float32
            raise NdpcError(
                f"--tiny-weights is for small models: {name} has "
                f"{params * 2 >> 20} MiB of float32 weights (limit "
                f"{TINY_LIMIT_BYTES >> 20} MiB); try tiny-mixtral"
            )
    model = make_model(
        cfg,
        Path(output).name + ".data",
        tiny_weights=tiny_weights,
        seed=seed,
        router_outputs=router_outputs,
        form=form,
    )
    with output_file(output) as tmp:
        tmp.write_bytes(model.SerializeToString())
    kind = "embedded float32 weights" if tiny_weights else "external weights, not written"
    click.echo(f"wrote {output}: {name}, {len(model.graph.node)} nodes ({kind})", err=True)
