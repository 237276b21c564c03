"""`ndpc target`: list, show and check target descriptions (docs/targets.md)."""

from __future__ import annotations

import json

import click

from ndpc.backends.target import SCHEMA, EffTable, list_targets, load_target, resource_specs
from ndpc.compiler.cliutil import user_errors

_SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                    help="Override a field, e.g. --set ndp.units=6 --set link.pcie.gbps=32 (repeatable).")  # fmt: skip


@click.group(name="target")
def command() -> None:
    """Target descriptions: a GPU, host, NDP units and links, every number with its source.

    \b
    Examples:
      ndpc target list
      ndpc target show rtx5080-ndp --set ndp.units=6
      ndpc target check my-target.toml
    """


def _value_text(value) -> str:
    if isinstance(value, EffTable):
        return ", ".join(f"{k:g}:{f:g}" for k, f in zip(value.keys, value.fractions, strict=True))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@command.command(name="list")
@user_errors
def list_cmd() -> None:
    """List the shipped targets."""
    for name in list_targets():
        t = load_target(name)
        click.echo(f"{name:18s} {t.description}")


@command.command(name="show")
@click.argument("target")
@_SET
@click.option("--json", "as_json", is_flag=True, help="Print values and sources as JSON.")
@click.option("--sources/--no-sources", default=True, help="Show each value's source.")
@user_errors
def show_cmd(target: str, overrides: tuple[str, ...], as_json: bool, sources: bool) -> None:
    """Show TARGET (a shipped name or a .toml file) with every value, unit and source."""
    t = load_target(target, overrides)
    if as_json:
        values = {k: (v.__dict__ if isinstance(v, EffTable) else v) for k, v in t.values.items()}
        out = {
            "name": t.name,
            "description": t.description,
            "values": values,
            "sources": dict(t.sources),
        }
        click.echo(json.dumps(out, indent=1, sort_keys=True, default=list))
        return
    click.echo(f"{t.name}: {t.description}")
    for key in SCHEMA:
        if key not in t.values:
            continue
        line = f"  {key:32s} = {_value_text(t.values[key])}"
        click.echo(line + (f"    [{t.sources[key]}]" if sources else ""))
    specs = resource_specs(t)
    click.echo("resources: " + ", ".join(f"{s.name}({s.slots})" for s in specs))


@command.command(name="check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_SET
@user_errors
def check_cmd(file: str, overrides: tuple[str, ...]) -> None:
    """Validate a target FILE (and overrides); exit 1 with the key, value and reason on error."""
    t = load_target(file, overrides)
    assumed = sum(1 for s in t.sources.values() if s.startswith("assumed"))
    click.echo(
        f"{file}: ok ({t.name}: {len(t.values)} values, {assumed} assumed, {t.ndp_units} NDP units)"
    )
