"""Shared pytest set-up: collects golden IR tests under tests/filecheck/ (`*.ndpir`).

Each `// RUN: <cmd>` line of a golden file runs in a shell with `ndpc` -> this Python's
`-m ndpc.compiler.cli`, `filecheck` -> `-m filecheck`, `%s` -> the file; `not <cmd>` inverts the exit
status of that one command (so `not ndpc ... | filecheck` still fails when filecheck does). The test fails on a non-zero exit and shows the command's output. Lines ending in `\\`
continue on the next RUN line.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests run with --import-mode=importlib (test files in different folders may share a basename);
# each area's helper modules (ir_helpers, sim_helpers, ...) are importable by their plain names.
sys.path[:0] = sorted(str(p) for p in Path(__file__).resolve().parent.iterdir() if p.is_dir())
_TOOL = re.compile(r"(?<![\w./%-])(filecheck|ndpc)(?![\w./-])")
# `not CMD` inverts the exit status of CMD alone (LLVM's `not`), not of the whole pipeline.
_PRELUDE = 'set -o pipefail; not() { ! "$@"; }; '


def pytest_collect_file(parent: pytest.Collector, file_path: Path):
    if file_path.suffix == ".ndpir" and "filecheck" in file_path.parts:
        return GoldenFile.from_parent(parent, path=file_path)
    return None


def run_lines(path: Path) -> list[str]:
    """The RUN commands of a golden file, with continuation lines joined."""
    commands, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*//\s*RUN:\s?(.*)$", line)
        if not match:
            continue
        pending += match.group(1).rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
        else:
            commands.append(pending)
            pending = ""
    return commands


def expand_command(command: str, path: Path) -> str:
    """Substitute the tools by whole word, then `%s` (last, so the path is never rewritten)."""
    py = shlex.quote(sys.executable)
    tools = {"filecheck": f"{py} -m filecheck", "ndpc": f"{py} -m ndpc.compiler.cli"}
    command = _TOOL.sub(lambda m: tools[m.group(1)], command)
    return command.replace("%s", shlex.quote(str(path)))


class GoldenFile(pytest.File):
    """One `.ndpir` golden file: one test item per RUN line."""

    def collect(self):
        commands = run_lines(self.path)
        if not commands:
            raise pytest.UsageError(f"{self.path}: golden file without a // RUN: line")
        for i, command in enumerate(commands):
            yield RunLine.from_parent(self, name=f"RUN{i}", command=command)


class RunLine(pytest.Item):
    """One RUN line executed through bash with `set -o pipefail`."""

    def __init__(self, *, command: str, **kwargs):
        super().__init__(**kwargs)
        self.command = command

    def runtest(self) -> None:
        shell = _PRELUDE + expand_command(self.command, self.path)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.run(
            ["bash", "-c", shell], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            raise GoldenFailure(self.command, proc.returncode, proc.stdout + proc.stderr)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GoldenFailure):
            err = excinfo.value
            return f"RUN: {err.command}\nexit status {err.status}\n{err.output}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"{self.path.name}: RUN: {self.command}"


class GoldenFailure(Exception):
    """A RUN line exited non-zero."""

    def __init__(self, command: str, status: int, output: str):
        super().__init__(command)
        self.command, self.status, self.output = command, status, output
