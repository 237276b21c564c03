"""`ndpc schedule`: inspect schedule files (docs/schedule.md)."""

from __future__ import annotations

import sys

import click
import numpy as np

from ndpc.backends.schedule import BYTES_PER_OP, OpKind, load_schedule, save_schedule
from ndpc.backends.schedule_text import print_schedule, read_any_schedule
from ndpc.compiler.cliutil import output_file, user_errors


@click.group(name="schedule")
def command() -> None:
    """Inspect schedule files.

    \b
    Examples:
      ndpc schedule show run.ndps --token 600 --layer 3
      ndpc schedule show run.ndps --limit 50
      ndpc schedule stats run.ndps
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
@user_errors
def stats_cmd(file: str) -> None:
    """Op counts per kind and resource, dependency count, memory per op."""
    s = load_schedule(file)
    click.echo(f"{file}: {len(s)} ops, {len(s.dep_idx)} dependencies, meta {s.meta}")
    for k in OpKind:
        count = int((s.kind == k).sum())
        if count:
            click.echo(f"  {k.name.lower():12s} {count}")
    for r, name in enumerate(s.resources):
        click.echo(f"  @{name:10s} {int((s.resource == r).sum())}")
    per_op = BYTES_PER_OP + 4 * len(s.dep_idx) / max(len(s), 1)
    click.echo(f"  {per_op:.1f} bytes per op in memory and on disk")


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
