"""`ndpc opt`: parse IR, verify it, run a pass pipeline, print the result."""

from __future__ import annotations

import sys
import time

import click

from compiler.cliutil import output_file, user_errors
from compiler.passes.pipeline import IrDumpOptions, ir_dump_options, make_context, parse_pipeline
from ir.diagnostics import NdpcError
from ir.parser import parse_file
from ir.printer import print_module
from ir.verifier import verify


@click.command(name="opt")
@click.argument("input_path", metavar="IN.ndpir", default="-")
@click.option(
    "-p",
    "--passes",
    "pipeline",
    default="",
    metavar="PIPELINE",
    help="Passes to run, e.g. 'tp-split{units=4},balance'.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write the IR here (default: stdout)."
)
@click.option("--target", metavar="NAME|FILE", help="Target description the passes consult.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a target field (repeatable).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for passes that use randomness."
)
@click.option(
    "--verify-diagnostics",
    is_flag=True,
    help="Expect an error: print it on stdout and exit 0 (for golden tests).",
)
@ir_dump_options
@user_errors
def command(
    input_path: str,
    pipeline: str,
    output: str | None,
    target: str | None,
    overrides: tuple[str, ...],
    seed: int,
    verify_diagnostics: bool,
    ir_dump: IrDumpOptions,
) -> None:
    """Parse IN.ndpir ('-' = stdin), verify it, run PIPELINE, verify after each pass, print.

    \b
    Examples:
      ndpc opt model.ndpir                              # parse, verify, print back
      ndpc opt model.ndpir -p canonicalize -o out.ndpir
      ndpc opt model.ndpir -p 'tp-split{units=4},balance' --target rtx5080-ndp --print-ir-after-all
      ndpc passes                                       # what can go in -p
    """
    try:
        text = _run(input_path, pipeline, target, overrides, seed, ir_dump)
    except NdpcError as err:
        if not verify_diagnostics:
            raise
        click.echo(err.render())
        return
    if verify_diagnostics:
        raise NdpcError("expected a diagnostic, but the input is valid")
    if output is None:
        sys.stdout.write(text)
    else:
        with output_file(output) as tmp:
            tmp.write_text(text, encoding="utf-8")
    ir_dump.finish()


def _run(input_path, pipeline, target, overrides, seed, ir_dump: IrDumpOptions) -> str:
    passes = parse_pipeline(pipeline)
    manager = ir_dump.pass_manager(passes)
    ctx = make_context(target, overrides, seed)
    start = time.perf_counter()
    module = parse_file(input_path)
    verify(module)
    ir_dump.record("parse + verify", time.perf_counter() - start)
    module = manager.run(module, ctx)
    for diag in ctx.diagnostics:
        click.echo(diag.render(), err=True)
    start = time.perf_counter()
    text = print_module(module, expand=ir_dump.expand)
    ir_dump.record("print", time.perf_counter() - start)
    return text
