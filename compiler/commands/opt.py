"""`ndpc opt`: parse IR, verify it, run a pass pipeline, print the result."""

from __future__ import annotations

import re
import sys
import time

import click

from ndpc.compiler.cliutil import complete_target, output_file, user_errors
from ndpc.compiler.passes.base import PassContext
from ndpc.compiler.passes.pipeline import (
    IrDumpOptions,
    PassManager,
    ir_dump_options,
    make_context,
    parse_pipeline,
)
from ndpc.ir.diagnostics import NdpcError, read_source
from ndpc.ir.parser import MAX_IR_BYTES, parse_module
from ndpc.ir.printer import print_module
from ndpc.ir.verifier import verify

SPLIT_MARKER = re.compile(r"^// -----[^\n]*$", re.MULTILINE)


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
@click.option("--target", metavar="NAME|FILE", help="Target description the passes consult.",
              shell_complete=complete_target)  # fmt: skip
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
    "--split-input-file",
    is_flag=True,
    help="Treat each '// -----' separated chunk as its own module.",
)
@click.option(
    "--verify-diagnostics",
    is_flag=True,
    help="Expect an error (per chunk): print it on stdout, exit 0.",
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
    split_input_file: bool,
    verify_diagnostics: bool,
    ir_dump: IrDumpOptions,
) -> None:
    """Parse IN.ndpir ('-' = stdin), verify it, run PIPELINE, verify after each pass, print.

    \b
    Examples:
      ndpc opt model.ndpir                              # parse, verify, print back
      ndpc opt model.ndpir -p canonicalize -o out.ndpir
      ndpc opt model.ndpir -p 'tp-split{units=4},balance' --target rtx5080-ndp --print-ir-after-all
      ndpc opt dumps.ndpir --split-input-file          # every '// -----' chunk on its own
      ndpc passes                                       # what can go in -p
    """
    manager = ir_dump.pass_manager(parse_pipeline(pipeline))
    ctx = make_context(target, overrides, seed)
    filename, text = _read(input_path)
    chunks = split_chunks(text) if split_input_file else [text]
    outputs = []
    for chunk in chunks:
        try:
            outputs.append(_run(chunk, filename, manager, ctx, ir_dump))
        except NdpcError as err:
            if not verify_diagnostics:
                raise
            outputs.append(err.render() + "\n")
            continue
        if verify_diagnostics:
            raise NdpcError("expected a diagnostic, but the input is valid")
    result = "// -----\n".join(outputs)
    if output is None:
        sys.stdout.write(result)
    else:
        with output_file(output) as tmp:
            tmp.write_text(result, encoding="utf-8")
    ir_dump.finish()


def split_chunks(text: str) -> list[str]:
    """Cut at `// -----` lines; each chunk keeps its place (earlier lines blanked), so
    diagnostics report line numbers of the whole file."""
    chunks, start = [], 0
    for match in [*SPLIT_MARKER.finditer(text), None]:
        end = match.start() if match else len(text)
        before = text.count("\n", 0, start)
        chunks.append("\n" * before + text[start:end])
        start = match.end() if match else end
    return [c for c in chunks if c.strip()]


def _read(input_path: str) -> tuple[str, str]:
    if input_path == "-":
        text = sys.stdin.read(MAX_IR_BYTES + 1)
        if len(text) > MAX_IR_BYTES:
            raise NdpcError(f"<stdin>: IR larger than the {MAX_IR_BYTES >> 20} MiB limit")
        return "<stdin>", text
    return input_path, read_source(input_path, MAX_IR_BYTES, "IR file")


def _run(
    text: str, filename: str, manager: PassManager, ctx: PassContext, ir_dump: IrDumpOptions
) -> str:
    start = time.perf_counter()
    module = parse_module(text, filename)
    verify(module)
    ir_dump.record("parse + verify", time.perf_counter() - start)
    module = manager.run(module, ctx)
    for diag in ctx.diagnostics:
        click.echo(diag.render(), err=True)
    ctx.diagnostics.clear()
    start = time.perf_counter()
    text = print_module(module, expand=ir_dump.expand)
    ir_dump.record("print", time.perf_counter() - start)
    return text
