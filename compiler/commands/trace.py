"""`ndpc trace` (reserved; filled by its issue)."""

import click


@click.command(name="trace")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc trace' is not implemented yet")
