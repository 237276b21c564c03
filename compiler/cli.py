"""The `ndpc` command line: a click group whose subcommands live in `compiler/commands/`.

Subcommands are imported lazily, so `ndpc --help` stays fast and one broken command cannot take
the others down.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from ndpc.compiler import __version__

# command name -> module under compiler.commands exposing `command`
COMMANDS: dict[str, str] = {
    "opt": "opt",
    "passes": "passes",
    "import": "import_",
    "model": "model",
    "trace": "trace",
    "target": "target",
    "compile": "compile",
    "schedule": "schedule",
    "simulate": "simulate",
    "run": "run",
    "compare": "compare",
    "reproduce": "reproduce",
    "sweep": "sweep",
    "demo": "demo",
}

SHORT_HELP: dict[str, str] = {
    "opt": "Parse IR, run a pass pipeline, print IR.",
    "passes": "List the registered passes and their options.",
    "import": "Import an ONNX MoE model (or a zoo name) into ndpc IR.",
    "model": "The model zoo: list models, write their ONNX graphs.",
    "trace": "Routing traces: import, generate, capture, stats, show.",
    "target": "Target descriptions: list, show, dump, check.",
    "compile": "Compile a model + trace into an executable schedule.",
    "schedule": "Inspect schedule files.",
    "simulate": "Replay a schedule on the GPU-NDP timing simulator.",
    "run": "Compile and simulate in one step.",
    "compare": "Compare policies (baselines and ndpc) on one model, target and trace.",
    "reproduce": "Reproduce a paper's evaluation.",
    "sweep": "Design-space sweeps (cached, resumable, local or Dask), and their plots.",
    "demo": "A one-minute tour on built-in defaults.",
}


EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE, as the shell reports `yes | head -1`'s `yes`


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush has nowhere to fail."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a test runner's in-memory stdout
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class LazyGroup(click.Group):
    """A group that imports each subcommand's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"ndpc.compiler.commands.{module_name}")
        return module.command

    def invoke(self, ctx: click.Context) -> object:
        # A reader that stops early (`ndpc model show X | head -2`) closes our stdout: end
        # quietly with the status a Unix tool killed by SIGPIPE has, once, here for every command.
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # the last buffered write fails here, not at interpreter exit
            return result
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ndpc")
def main() -> None:
    """ndpc: compile and simulate Mixture-of-Experts inference on GPU + near-data-processing systems.

    \b
    Quick tour:
      ndpc demo                                   # one minute, built-in defaults
      ndpc model list                             # the model zoo
      ndpc import qwen3-30b-a3b --summary         # a model's layers
      ndpc trace gen --model qwen3-30b-a3b --tokens 1024 --prompt 512 --seed 0 -o t.npz
      ndpc run qwen3-30b-a3b --target rtx5080-ndp --trace t.npz --policy paper
      ndpc compare qwen3-30b-a3b --target rtx5080-ndp --trace t.npz

    \b
    Shell completion (bash; zsh and fish: README):
      eval "$(_NDPC_COMPLETE=bash_source ndpc)"
    """


if __name__ == "__main__":  # `python -m ndpc.compiler.cli` (used by the golden tests)
    main()
