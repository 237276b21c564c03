"""`ndpc compile` (reserved; filled by its issue)."""

import click


@click.command(name="compile")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc compile' is not implemented yet")
