"""`ndpc compare` (reserved; filled by its issue)."""

import click


@click.command(name="compare")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc compare' is not implemented yet")
