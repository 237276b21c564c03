"""`ndpc schedule`: inspect schedule files (docs/schedule.md)."""

from __future__ import annotations

import sys

import click
import numpy as np

from ndpc.backends.schedule import BYTES_PER_OP, OpKind, save_schedule
from ndpc.backends.schedule_text import print_schedule, read_any_schedule
from ndpc.compiler.cliutil import echo_json, output_file, user_errors


@click.group(name="schedule")
def command() -> None:
    """Inspect schedule files.

    \b
    Examples:
      ndpc schedule show run.ndpsched --token 600 --layer 3
      ndpc schedule show run.ndpsched --limit 50
      ndpc schedule stats run.ndpsched
    """


@command.command(name="show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--token", type=int, help="Only ops of this token step.")
@click.option("--layer", type=int, help="Only ops of this decoder layer.")
@click.option(
    "--limit", type=int, default=200, show_default=True, help="At most this many ops (0 = all)."
)
@user_errors
def show_cmd(file: str, token: int | None, layer: int | None, limit: int) -> None:
    """List FILE's ops in the text form (a binary schedule or a .txt text-form schedule)."""
    s = read_any_schedule(file)
    mask = np.ones(len(s), dtype=bool)
    if token is not None:
        mask &= s.token == token
    if layer is not None:
        mask &= s.layer == layer
    ops = np.flatnonzero(mask)
    total = len(ops)
    if limit > 0:
        ops = ops[:limit]
    sys.stdout.write(print_schedule(s, ops))
    if len(ops) < total:
        click.echo(f"# ... {total - len(ops)} more ops (use --limit 0 for all)")


@command.command(name="stats")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the counts and the header as JSON.")
@user_errors
def stats_cmd(file: str, as_json: bool) -> None:
    """Op counts per kind and resource, dependency count, memory per op, the header's meta."""
    s = read_any_schedule(file)
    kinds = {k.name.lower(): int((s.kind == k).sum()) for k in OpKind}
    resources = {name: int((s.resource == r).sum()) for r, name in enumerate(s.resources)}
    per_op = BYTES_PER_OP + 4 * len(s.dep_idx) / max(len(s), 1)
    if as_json:
        echo_json({"file": file, "ops": len(s), "dependencies": len(s.dep_idx),
                   "ops_per_kind": {k: n for k, n in kinds.items() if n},
                   "ops_per_resource": resources, "bytes_per_op": per_op,
                   "meta": dict(s.meta)})  # fmt: skip
        return
    click.echo(f"{file}: {len(s)} ops, {len(s.dep_idx)} dependencies")
    width = max(len(k) for k in [*s.meta, *kinds, *resources])
    for key in sorted(s.meta):
        value = s.meta[key]
        text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
        if isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
        click.echo(f"  {key:{width}s} {text}")
    click.echo("ops per kind:")
    for name, count in kinds.items():
        if count:
            click.echo(f"  {name:{width}s} {count}")
    click.echo("ops per resource:")
    for name, count in resources.items():
        click.echo(f"  {name:{width}s} {count}")
    click.echo(f"{per_op:.1f} bytes per op in memory and on disk")


@command.command(name="convert")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@user_errors
def convert_cmd(src: str, dst: str) -> None:
    """Convert between the binary form and the text form (.txt) by file extension."""

    s = read_any_schedule(src)
    with output_file(dst) as tmp:
        if dst.endswith(".txt"):
            tmp.write_text(print_schedule(s), encoding="utf-8")
        else:
            save_schedule(s, tmp)
