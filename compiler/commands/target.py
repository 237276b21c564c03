"""`ndpc target`: list, show and check target descriptions (docs/targets.md)."""

from __future__ import annotations

import click

from ndpc.backends.target import SCHEMA, EffTable, list_targets, load_target, resource_specs
from ndpc.compiler.cliutil import complete_target, echo_json, user_errors

_SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                    help="Override a field, e.g. --set ndp.units=6 --set link.pcie.gbps=32 (repeatable).")  # fmt: skip


@click.group(name="target")
def command() -> None:
    """Target descriptions: a GPU, host, NDP units and links, every number with its source.

    \b
    Examples:
      ndpc target list
      ndpc target show rtx5080-ndp --set ndp.units=6
      ndpc target dump rtx5080-ndp > my-target.toml    # a starting point for your own
      ndpc target check my-target.toml
    """


_TARGET_ARG = click.argument("target", shell_complete=complete_target)


def _unit(key: str) -> str:
    """The unit of a schema key, from the parenthesis that ends its description ("" if none)."""
    doc = SCHEMA[key].doc
    if SCHEMA[key].kind == "table":
        return "fraction"
    if doc.endswith(")") and "(" in doc:
        unit = doc[doc.rindex("(") + 1 : -1].split(",")[0].strip()
        return "" if " " in unit else unit  # "(0 for soc-dma)" is a remark, not a unit
    return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _value_text(value) -> str:
    if isinstance(value, EffTable):
        return ", ".join(
            f"{_num(k)}:{f:g}" for k, f in zip(value.keys, value.fractions, strict=True)
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@command.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print name, description, NDP units as JSON.")
@user_errors
def list_cmd(as_json: bool) -> None:
    """List the shipped targets."""
    targets = [load_target(name) for name in list_targets()]
    if as_json:
        echo_json([{"name": t.name, "description": t.description, "ndp_units": t.ndp_units,
                    "ndp_kind": t.values["ndp.kind"], "gpu": t.values["gpu.model"]}
                   for t in targets])  # fmt: skip
        return
    for t in targets:
        click.echo(f"{t.name:18s} {t.description}")


@command.command(name="show")
@_TARGET_ARG
@_SET
@click.option("--json", "as_json", is_flag=True, help="Print values and sources as JSON.")
@click.option("--sources/--no-sources", default=True, help="Show each value's source.")
@user_errors
def show_cmd(target: str, overrides: tuple[str, ...], as_json: bool, sources: bool) -> None:
    """Show TARGET (a shipped name or a .toml file) with every value, unit and source."""
    t = load_target(target, overrides)
    if as_json:
        values = {k: (v.__dict__ if isinstance(v, EffTable) else v) for k, v in t.values.items()}
        values = {k: (dict(keys=list(v[0]), fractions=list(v[1])) if isinstance(v, tuple) else v)
                  for k, v in ((k, _plain(v)) for k, v in t.values.items())}  # fmt: skip
        units = {k: _unit(k) for k in t.values if _unit(k)}
        echo_json({"name": t.name, "description": t.description, "values": values,
                   "units": units, "sources": dict(t.sources)})  # fmt: skip
        return
    click.echo(f"{t.name}: {t.description}")
    width = max(len(_value_text(v)) for v in t.values.values() if not isinstance(v, EffTable))
    for key in SCHEMA:
        if key not in t.values:
            continue
        value = _value_text(t.values[key])
        unit = _unit(key)
        if isinstance(t.values[key], EffTable):
            unit = f"{SCHEMA[key].table_key}:fraction"
        line = f"  {key:32s} = {value:{width}s} {unit}"
        click.echo(line.rstrip() + (f"    [{t.sources[key]}]" if sources else ""))
    specs = resource_specs(t)
    click.echo("resources: " + ", ".join(f"{s.name}({s.slots})" for s in specs))


def _plain(value):
    """A target value as JSON-ready data (an efficiency table as its two columns)."""
    if isinstance(value, EffTable):
        return (value.keys, value.fractions)
    return value


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return repr(value) if isinstance(value, float) else str(value)


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def target_toml(t) -> str:
    """`t` as a target file (docs/targets.md) that `load_target` reads back to the same values
    and sources: one inline table {value, source|assumed} per key, grouped by section."""
    lines = [
        f"# Written by `ndpc target dump {t.name}`: edit the values, keep a source (URL) or an",
        "# `assumed` reason for each, rename, and check with `ndpc target check FILE`.",
        f"name = {_toml_str(t.name)}",
        f"description = {_toml_str(t.description)}",
    ]
    section = None
    for key in SCHEMA:
        if key not in t.values:
            continue
        head, _, leaf = key.rpartition(".")
        if head != section:
            section = head
            lines += ["", f"[{head}]"]
        kind, _, why = t.sources[key].partition(": ")
        if kind not in ("source", "assumed"):  # an override: say where the value came from
            kind, why = "assumed", f"set with {why}"
        value = t.values[key]
        if isinstance(value, EffTable):
            keys = ", ".join(_toml_value(float(k)) for k in value.keys)
            fractions = ", ".join(_toml_value(float(f)) for f in value.fractions)
            body = f"{SCHEMA[key].table_key} = [{keys}], fraction = [{fractions}]"
        else:
            body = f"value = {_toml_value(value)}"
        lines.append(f"{leaf} = {{{body}, {kind} = {_toml_str(why)}}}")
    return "\n".join(lines) + "\n"


@command.command(name="dump")
@_TARGET_ARG
@_SET
@user_errors
def dump_cmd(target: str, overrides: tuple[str, ...]) -> None:
    """Print TARGET (with overrides) as a target file: a starting point for a custom target.

    \b
    Example:
      ndpc target dump rtx5080-ndp --set ndp.units=6 > my-target.toml
      ndpc target check my-target.toml
    """
    click.echo(target_toml(load_target(target, overrides)), nl=False)


@command.command(name="check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_SET
@click.option("--json", "as_json", is_flag=True, help="Print the verdict and counts as JSON.")
@user_errors
def check_cmd(file: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Validate a target FILE (and overrides); exit 1 with the key, value and reason on error."""
    t = load_target(file, overrides)
    assumed = sum(1 for s in t.sources.values() if s.startswith("assumed"))
    if as_json:
        echo_json({"file": file, "ok": True, "name": t.name, "values": len(t.values),
                   "assumed": assumed, "ndp_units": t.ndp_units})  # fmt: skip
        return
    click.echo(
        f"{file}: ok ({t.name}: {len(t.values)} values, {assumed} assumed, {t.ndp_units} NDP units)"
    )
