"""`ndpc run` (reserved; filled by its issue)."""

import click


@click.command(name="run")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc run' is not implemented yet")
