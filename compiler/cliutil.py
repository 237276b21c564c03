"""Helpers shared by the CLI commands: error reporting, all-or-nothing output files (one or
several per command), strict JSON and CSV writers, and shell completion of zoo, target and
policy names."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from ndpc.backends.report import finite
from ndpc.backends.report import json_text as strict_json_text
from ndpc.backends.target import list_targets
from ndpc.backends.timeline import truncation_note, write_timeline
from ndpc.compiler.policies import POLICIES
from ndpc.compiler.zoo import ZOO
from ndpc.ir.diagnostics import NdpcError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn ndpc's bad-input errors into one message on stderr and exit status 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NdpcError as err:
            click.echo(err.render(), err=True)
            sys.exit(1)
        except BrokenPipeError:
            raise  # a closed stdout is not an error: the CLI's main ends quietly
        except (ValueError, OSError) as err:
            # Library layers that cannot depend on ir (traces) raise ValueError subclasses that
            # already name the file and record.
            click.echo(f"error: {err}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _temp_beside(target: Path, made: list[Path]) -> Path:
    """An empty temporary file in `target`'s folder, with a plain open()'s mode. Folders it
    creates are appended to `made` (outermost first), to be removed if the command fails."""
    missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    made.extend(reversed(missing))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    return tmp


@contextlib.contextmanager
def output_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only if the block succeeds.

    Commands write every output through this (or `output_files` when they have several), so a
    failure never leaves a partial file behind.
    """
    with output_files() as outputs:
        yield outputs.path(path)


def _why(target: Path, err: OSError) -> str:
    """Why `target` cannot be created: a parent that is a file, else the system's reason."""
    for parent in target.parents:
        if parent.exists():
            return f"{parent} is not a folder" if not parent.is_dir() else str(err.strerror or err)
    return str(err.strerror or err)


class Outputs:
    """The output files of one command, committed together: see `output_files`."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temporary, final)
        self._made: list[Path] = []  # folders created for the outputs, outermost first
        self._staged: list[tuple[Path, Path]] = []  # (staging folder, final folder)
        self._committed = False

    def path(self, final: str | os.PathLike[str]) -> Path:
        """A temporary path to write `final`'s content to; it is renamed at commit.

        Call this for every output before the long work starts: a destination that cannot be
        created (its folder is a file, no permission) then fails before anything is computed.
        """
        target = Path(final)
        if target.is_dir():
            raise NdpcError(f"{final}: is a folder, expected a file name")
        try:
            tmp = _temp_beside(target, self._made)
        except OSError as err:  # its folder is a file, or not writable
            raise NdpcError(f"{final}: cannot write this file ({_why(target, err)})") from None
        self._pending.append((tmp, target))
        return tmp

    def folder(self, final: str | os.PathLike[str]) -> Path:
        """A staging folder whose files (not subfolders) move into `final` at commit: for
        outputs whose names are decided while they are written (a report's plots)."""
        target = Path(final)
        missing = [p for p in (target, *target.parents) if not p.exists()]
        try:
            target.mkdir(parents=True, exist_ok=True)
            self._made.extend(reversed(missing))
            stage = Path(tempfile.mkdtemp(prefix=".ndpc-staging-", dir=target))
        except OSError as err:
            raise NdpcError(
                f"{final}: cannot write into this folder ({err.strerror or err})"
            ) from None
        self._staged.append((stage, target))
        return stage

    def drop(self, tmp: Path) -> None:
        """Leave out the output whose temporary is `tmp` (e.g. a run that produced nothing)."""
        self._pending = [(t, f) for t, f in self._pending if t != tmp]
        with contextlib.suppress(OSError):
            tmp.unlink()

    def _commit(self) -> None:
        done: list[Path] = []
        staged = [(f, target / f.name) for stage, target in self._staged
                  for f in sorted(stage.iterdir()) if f.is_file()]  # fmt: skip
        try:
            for tmp, target in [*self._pending, *staged]:
                os.replace(tmp, target)
                done.append(target)
            self._committed = True
        except OSError:
            for target in done:  # best effort: rename does not fail once the folder exists
                with contextlib.suppress(OSError):
                    target.unlink()
            raise

    def _discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for stage, _ in self._staged:
            shutil.rmtree(stage, ignore_errors=True)
        if not self._committed:
            for folder in reversed(self._made):  # innermost first; only if still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()


@contextlib.contextmanager
def output_files() -> Iterator[Outputs]:
    """All outputs of one command appear together, or none does.

    with output_files() as out:
        report, timeline = out.path(report_path), out.path(timeline_path)
        ...write both temporaries...
    # both renamed into place here; on any exception neither is
    """
    outputs = Outputs()
    try:
        yield outputs
        outputs._commit()
    finally:
        outputs._discard()


# ------------------------------------------------------------------------------------ JSON, CSV


def json_text(data: Any, indent: int | None = 2) -> str:
    """Strict, deterministic JSON (sorted keys, no NaN/Infinity) of plain data."""
    return strict_json_text(data, indent)


def echo_json(data: Any) -> None:
    """Print `json_text(data)` on stdout."""
    click.echo(json_text(data))


def csv_text(rows: Sequence[dict[str, Any]], first: Iterable[str] = ()) -> str:
    """CSV of `rows` (one line per dict): the columns `first`, then every other key seen.

    Nested values (dicts, lists) are written as compact JSON; None as an empty cell.
    """
    seen: dict[str, None] = dict.fromkeys(first)
    for row in rows:
        seen.update(dict.fromkeys(row))
    columns = list(seen)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for c in columns:
            v = finite(row.get(c))
            if v is None:
                cells.append("")
            elif isinstance(v, dict | list):
                cells.append(json.dumps(v, sort_keys=True, separators=(",", ":")))
            elif isinstance(v, float):
                cells.append(repr(v))
            else:
                cells.append(str(v))
        writer.writerow(cells)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ completion


def _matching(names: Iterable[str], incomplete: str) -> list[Any]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_model(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Zoo model names, then model files (.onnx, .ndpir) by the shell's own file completion."""
    from click.shell_completion import CompletionItem

    return [*_matching(ZOO, incomplete), CompletionItem(incomplete, type="file")]


def complete_zoo_name(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Zoo model names only (`model show`, `model make`)."""
    return _matching(ZOO, incomplete)


def complete_target(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shipped target names, then target files."""
    from click.shell_completion import CompletionItem

    return [*_matching(list_targets(), incomplete), CompletionItem(incomplete, type="file")]


def complete_policy(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Policy names; after a comma (`--policies a,b,`) the next name of the list."""
    head, _, last = incomplete.rpartition(",")
    prefix = f"{head}," if head else ""
    return _matching([prefix + p for p in POLICIES if p.startswith(last)], incomplete)


# ------------------------------------------------------------------------------------ timelines

TIMELINE_OPS = 200_000  # default cap of ops per timeline (files stay in the tens of MB)

timeline_option = click.option(
    "--timeline", type=click.Path(dir_okay=False),
    help="Write a Chrome-trace JSON timeline here (open in ui.perfetto.dev).",
)  # fmt: skip
timeline_ops_option = click.option(
    "--timeline-ops", type=click.IntRange(min=1), default=TIMELINE_OPS, show_default=True,
    metavar="N",
    help="At most this many ops (the earliest) in the timeline.",
)  # fmt: skip


def write_timeline_file(tmp: Path, shown_as: str, schedule, result, target_name: str,
                        max_ops: int, target=None) -> None:  # fmt: skip
    """Write the timeline of `result` to `tmp` (a temporary of `shown_as`); say on stderr when
    ops were left out. With `target`, the timeline has a power track (backends/energy.py)."""
    info = write_timeline(tmp, schedule, result.start, result.end, target_name=target_name,
                          max_ops=max_ops, target=target)  # fmt: skip
    note = truncation_note(info, shown_as)
    if note:
        click.echo(note, err=True)
