"""`ndpc passes` (reserved; filled by its issue)."""

import click


@click.command(name="passes")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc passes' is not implemented yet")
