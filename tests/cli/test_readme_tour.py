"""README.md's "A 5-minute tour" runs as written: every line of its code block, in order, in an
empty folder. The block is read from README.md itself, so the tour cannot drift from the CLI."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from ndpc.compiler.cli import main

REPO = Path(__file__).resolve().parents[2]
ACTIVATE = ". .venv/bin/activate; mkdir -p tour; cd tour"
# The long lines (about 10 s and 25 s on two shared cores): run by the slow test only.
SLOW = {"compare", "reproduce"}


def tour_commands() -> list[list[str]]:
    """The tour's commands (argument lists after `ndpc`), `;`-separated ones split apart."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## A 5-minute tour", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    # the first line activates the venv `make` creates and moves into a scratch folder (ignored by
    # git); the test runs the rest in an empty temporary folder instead
    assert lines[0] == ACTIVATE
    assert "/tour/" in (REPO / ".gitignore").read_text().splitlines()
    commands = []
    for line in lines[1:]:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words, current = list(lexer), []
        for word in [*words, ";"]:
            if word == ";":
                if current:
                    assert current[0] == "ndpc", f"tour line runs something other than ndpc: {line}"
                    commands.append(current[1:])
                current = []
            else:
                current.append(word)
    return commands


def _run_tour(tmp_path, monkeypatch, skip: set[str]) -> list[str]:
    monkeypatch.chdir(tmp_path)
    ran = []
    for args in tour_commands():
        if args[0] in skip:
            continue
        result = CliRunner().invoke(main, args)
        shown = "ndpc " + shlex.join(args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{shown}: {result.exception!r}"
        )
        assert result.exit_code == 0, f"{shown} failed:\n{result.output[-2000:]}"
        assert "Traceback" not in result.output, shown
        ran.append(args[0])
    return ran


def test_tour_block_is_what_the_test_runs():
    commands = tour_commands()
    names = [c[0] for c in commands]
    assert {"import", "trace", "run", "compile", "simulate", "compare", "reproduce"} <= set(names)
    # the long line is the shrunk set-up, as the README says
    assert next(c for c in commands if c[0] == "reproduce")[:3] == ["reproduce", "paper", "--quick"]


def test_tour_runs_as_written(tmp_path, monkeypatch):
    """Every tour line but the two long ones (see the slow test), ~10 s."""
    ran = _run_tour(tmp_path, monkeypatch, SLOW)
    assert len(ran) == len(tour_commands()) - len(SLOW)
    for made in ("model.onnx", "model.ndpir", "t.npz", "heat.png", "tl.json", "s.ndpsched"):
        assert (tmp_path / made).stat().st_size > 0, made


@pytest.mark.slow
def test_whole_tour_runs_as_written(tmp_path, monkeypatch):
    _run_tour(tmp_path, monkeypatch, set())
    for made in ("cmp.png", "cmp.csv", "repro/report.md", "repro/results.csv"):
        assert (tmp_path / made).stat().st_size > 0, made
