"""`ndpc opt` (reserved; filled by its issue)."""

import click


@click.command(name="opt")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc opt' is not implemented yet")
