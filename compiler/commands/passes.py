"""`ndpc passes`: list the registered passes, their options (type, default) and one-line docs."""

from __future__ import annotations

import dataclasses

import click

from ndpc.compiler.cliutil import echo_json
from ndpc.compiler.passes import PASSES
from ndpc.compiler.passes.base import MAX_FLOAT
from ndpc.compiler.passes.pipeline import format_option, option_kinds, option_type_name


def describe_passes() -> list[dict]:
    """One entry per registered pass: name, summary and options (name, type, default, doc)."""
    out = []
    for name, cls in PASSES.items():
        kinds = option_kinds(cls)
        options = []
        for f in cls.option_fields():
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            options.append(
                {
                    "name": f.name.replace("_", "-"),
                    "type": _with_range(option_type_name(kinds[f.name]), f),
                    "default": format_option(default) if has_default else None,
                    "doc": f.metadata.get("doc", ""),
                }
            )
        out.append({"name": name, "summary": cls.summary(), "options": options})
    return out


def _with_range(type_name: str, f: dataclasses.Field) -> str:
    """'an integer in 1..64 or auto': the type with the option's bounds (the parser refuses
    values outside them)."""
    lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
    if lo is None and hi is None:
        return type_name
    if hi is None and type_name.startswith("a number"):
        hi = MAX_FLOAT  # what check_option applies to every float
    bounds = f" in {_bound(lo)}..{_bound(hi)}"
    if type_name.endswith(" or auto"):
        return type_name[: -len(" or auto")] + bounds + " or auto"
    return type_name + bounds


def _bound(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@click.command(name="passes")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of text.")
def command(as_json: bool) -> None:
    """List the passes usable in `-p PIPELINE`, with their options.

    \b
    Examples:
      ndpc passes
      ndpc passes --json
    Options are written `name{key=value key2=value2}`; `auto` lets the pass derive a value
    from the target.
    """
    entries = describe_passes()
    if as_json:
        echo_json(entries)
        return
    for entry in entries:
        click.echo(f"{entry['name']}: {entry['summary']}")
        for opt in entry["options"]:
            shown = opt["default"] if opt["default"] != "" else '""'
            default = "required" if opt["default"] is None else f"default {shown}"
            doc = f"  {opt['doc']}" if opt["doc"] else ""
            click.echo(f"    {opt['name']}: {opt['type']} ({default}){doc}")
