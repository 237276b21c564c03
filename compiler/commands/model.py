"""`ndpc model` (reserved; filled by its issue)."""

import click


@click.command(name="model")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc model' is not implemented yet")
