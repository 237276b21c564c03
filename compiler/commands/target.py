"""`ndpc target` (reserved; filled by its issue)."""

import click


@click.command(name="target")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc target' is not implemented yet")
