"""`ndpc simulate` (reserved; filled by its issue)."""

import click


@click.command(name="simulate")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc simulate' is not implemented yet")
