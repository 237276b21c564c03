"""`ndpc reproduce` (reserved; filled by its issue)."""

import click


@click.command(name="reproduce")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc reproduce' is not implemented yet")
