"""`ndpc import` (reserved; filled by its issue)."""

import click


@click.command(name="import")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc import' is not implemented yet")
