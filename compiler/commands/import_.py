"""`ndpc import MODEL [-o OUT.ndpir] [--summary] [--json]`: an ONNX graph or zoo model as IR."""

from __future__ import annotations

import click

from ndpc.compiler.cliutil import complete_model, echo_json, output_file, user_errors
from ndpc.compiler.frontend import load_model, verify_import
from ndpc.compiler.frontend.builder import build_module
from ndpc.compiler.frontend.summary import summary_json, summary_text
from ndpc.ir.printer import print_module
from ndpc.ir.verifier import verify


def _load(model: str):
    """(module, notes) for a .onnx path, a .ndpir path or a zoo name."""
    if model.endswith(".onnx"):
        from ndpc.compiler.frontend.importer import import_spec  # lazy: onnx is slow to load

        spec = import_spec(model)
        return verify_import(build_module(spec), model), spec.notes

    return load_model(model), ()


@click.command(name="import")
@click.argument("model", shell_complete=complete_model)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the IR to this file.")
@click.option("--summary", is_flag=True, help="Print a per-layer table instead of the IR.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-layer summary as JSON.")
@user_errors
def command(model: str, output: str | None, summary: bool, as_json: bool) -> None:
    """Import MODEL (an ONNX file, an .ndpir file or a zoo name) into ndpc IR.

    Weights are never read: a model whose external .data file is missing imports fine.

    \b
    Examples:
      ndpc import model.onnx -o model.ndpir
      ndpc import qwen3-30b-a3b --summary
      ndpc import model.onnx --json | jq '.layers[0]'
    """

    module, notes = _load(model)
    verify(module)
    text = print_module(module)
    if output:
        with output_file(output) as tmp:
            tmp.write_text(text, encoding="utf-8")
    if as_json:
        echo_json(summary_json(module, model, notes))
    elif summary:
        click.echo(summary_text(module, model, notes), nl=False)
    elif not output:
        click.echo(text, nl=False)
