"""`ndpc demo` (reserved; filled by its issue)."""

import click


@click.command(name="demo")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc demo' is not implemented yet")
