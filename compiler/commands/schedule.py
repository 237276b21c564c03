"""`ndpc schedule` (reserved; filled by its issue)."""

import click


@click.command(name="schedule")
def command() -> None:
    """Reserved command: not implemented yet."""
    raise click.UsageError("'ndpc schedule' is not implemented yet")
