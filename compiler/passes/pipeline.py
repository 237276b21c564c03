"""Pipeline strings, the pass manager and its instruments (IR dumps, pass timing).

Pipeline syntax (MLIR-like, without an op anchor):

    pipeline := element ("," element)*
    element  := pass-name [ "{" option (" " option)* "}" ]
    option   := key "=" value        # key: a field name with "_" spelled "-"; lists: 0,1,2

`print_pipeline(parse_pipeline(s))` spells every option explicitly; `auto` is an option left to
the pass to derive from the target (a None field). Errors carry the column and a "did you mean".
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TextIO

import click

from ndpc.backends.cost import CostModel
from ndpc.backends.target import load_target
from ndpc.compiler.passes import PASSES
from ndpc.compiler.passes.base import ModulePass, PassContext, check_option
from ndpc.ir.core import Location, Module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import ExpertShardsOp
from ndpc.ir.parser import did_you_mean
from ndpc.ir.printer import print_module
from ndpc.ir.schema import Kind, kind_of
from ndpc.ir.verifier import verify

_PASS_NAME = re.compile(r"[A-Za-z0-9_-]+")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _error(message: str, text: str, col: int) -> NdpcError:
    return NdpcError(message, Location("<pipeline>", 1, col + 1), text)


def option_kinds(cls: type[ModulePass]) -> dict[str, Kind]:
    """Option field name -> value kind (from the dataclass annotations)."""
    hints = typing.get_type_hints(cls)
    return {f.name: kind_of(hints[f.name]) for f in cls.option_fields()}


def parse_pipeline(
    text: str, registry: dict[str, type[ModulePass]] | None = None
) -> list[ModulePass]:
    """Parse `a,b{k=v},c` into pass instances; NdpcError at the offending column otherwise."""
    registry = PASSES if registry is None else registry
    passes: list[ModulePass] = []
    pos = 0
    bad = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:  # undecodable bytes on the command line arrive as lone surrogates
        raise NdpcError("pipeline is not UTF-8 text", Location("<pipeline>", 1, bad + 1))
    if not text.strip():
        return passes
    while True:
        while pos < len(text) and text[pos] == " ":
            pos += 1
        match = _PASS_NAME.match(text, pos)
        if match is None:
            raise _error("expected a pass name", text, pos)
        name, start = match.group(), pos
        pos = match.end()
        cls = registry.get(name)
        if cls is None:
            hint = did_you_mean(name, list(registry))
            raise _error(f"unknown pass '{name}'{hint}", text, start)
        options: dict[str, tuple[str, int]] = {}
        if pos < len(text) and text[pos] == "{":
            close = text.find("}", pos)
            if close < 0:
                raise _error(f"'{{' of pass '{name}' is never closed", text, pos)
            options = _split_options(text, pos + 1, close)
            pos = close + 1
        built = _build(cls, options, text, start)
        object.__setattr__(built, "where", Location("<pipeline>", 1, start + 1))
        passes.append(built)
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos == len(text):
            return passes
        if text[pos] != ",":
            raise _error(f"expected ',' between passes, got '{text[pos]}'", text, pos)
        pos += 1


def _split_options(text: str, start: int, stop: int) -> dict[str, tuple[str, int]]:
    """`k=v k2=v2` between the braces -> {key: (value, column of the key)}."""
    out: dict[str, tuple[str, int]] = {}
    for match in re.finditer(r"[^ ]+", text[start:stop]):
        item, col = match.group(), start + match.start()
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _error(f"expected key=value, got '{item}'", text, col)
        if key in out:
            raise _error(f"option '{key}' given twice", text, col)
        out[key] = (value, col)
    return out


def _build(cls: type[ModulePass], options: dict[str, tuple[str, int]], text: str, col: int):
    kinds = option_kinds(cls)
    fields = {f.name: f for f in cls.option_fields()}
    spelled = {name.replace("_", "-"): name for name in kinds}
    kwargs: dict[str, Any] = {}
    for key, (raw, key_col) in options.items():
        field_name = spelled.get(key) or (key if key in kinds else None)
        if field_name is None:
            hint = did_you_mean(key, list(spelled))
            known = ", ".join(spelled) or "none"
            raise _error(
                f"pass '{cls.name}' has no option '{key}'{hint} (options: {known})", text, key_col
            )
        try:
            value = parse_option(kinds[field_name], raw)
            check_option(fields[field_name], value)
        except ValueError as err:
            raise _error(
                f"option '{key}' of '{cls.name}': {err}", text, key_col + len(key) + 1
            ) from None
        kwargs[field_name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise _error(f"bad options for pass '{cls.name}': {err}", text, col) from None


def parse_option(kind: Kind, raw: str) -> Any:
    """Parse one option value of `kind` from its pipeline spelling; ValueError says what's wrong."""
    tag = kind.tag
    if tag == "optional":
        assert kind.inner is not None
        if raw == "auto":
            return None
        try:
            return parse_option(kind.inner, raw)
        except ValueError as err:
            expected = f"expected {kind.inner.describe()}"
            raise ValueError(str(err).replace(expected, f"{expected} or auto", 1)) from None
    if tag == "tuple":
        assert kind.inner is not None
        return tuple(parse_option(kind.inner, part) for part in raw.split(",")) if raw else ()
    shown = raw if len(raw) <= 40 else f"{raw[:37]}..."
    try:
        if tag == "int":
            return int(raw)
        if tag == "float":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got '{shown}'")
            return value
    except ValueError as err:
        if "finite" in str(err):
            raise
        raise ValueError(f"expected {kind.describe()}, got '{shown}'") from None
    if tag == "bool" and raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    if tag == "str":
        return raw
    if tag == "enum":
        assert kind.cls is not None
        for member in kind.cls:
            if raw in (member.value, member.value.replace("_", "-")):
                return member
        hint = did_you_mean(raw, [m.value for m in kind.cls])
        raise ValueError(f"expected {kind.describe()}, got '{shown}'{hint}")
    raise ValueError(f"expected {kind.describe()}, got '{shown}'")


def option_type_name(kind: Kind) -> str:
    """How `ndpc passes` names an option's type ('an integer or auto', 'one of (a, b)')."""
    if kind.tag == "optional" and kind.inner is not None:
        return f"{kind.inner.describe()} or auto"
    if kind.tag == "tuple" and kind.inner is not None:
        return f"a comma-separated list of {kind.inner.describe()}"
    return kind.describe()


def format_option(value: Any) -> str:
    """The pipeline spelling of an option value (inverse of `parse_option`)."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(format_option(v) for v in value)
    if isinstance(value, Enum):
        return str(value.value)
    return repr(value) if isinstance(value, float) else str(value)


def print_pass(p: ModulePass) -> str:
    """`name{opt=value ...}` with every option spelled out."""
    opts = [
        f"{f.name.replace('_', '-')}={format_option(getattr(p, f.name))}" for f in p.option_fields()
    ]
    return p.name + ("{" + " ".join(opts) + "}" if opts else "")


def print_pipeline(passes: Sequence[ModulePass]) -> str:
    """The canonical pipeline string; `parse_pipeline` reads it back to equal passes."""
    return ",".join(print_pass(p) for p in passes)


# --- instruments and the pass manager ---------------------------------------------------------


class PassInstrument:
    """Hooks the pass manager calls around each pass (MLIR/TVM-style instrumentation)."""

    def before_pass(self, p: ModulePass, module: Module) -> None:
        """Called with the input of pass `p`."""

    def after_pass(self, p: ModulePass, module: Module, seconds: float) -> None:
        """Called with the (verified) output of pass `p` and its run time."""

    def after_pipeline(self) -> None:
        """Called once after the last pass."""


@dataclass
class PrintIR(PassInstrument):
    """Dump the IR before/after chosen passes as `// -----` separated, re-parseable chunks."""

    before: frozenset[str] = frozenset()
    after: frozenset[str] = frozenset()
    after_all: bool = False
    expand: bool = False
    stream: TextIO | None = None

    def _dump(self, when: str, p: ModulePass, module: Module) -> None:
        out = self.stream or sys.stderr
        out.write(f"// -----\n// IR {when} {print_pass(p)}\n{print_module(module, self.expand)}")
        out.flush()

    def before_pass(self, p: ModulePass, module: Module) -> None:
        if p.name in self.before:
            self._dump("before", p, module)

    def after_pass(self, p: ModulePass, module: Module, seconds: float) -> None:
        if self.after_all or p.name in self.after:
            self._dump("after", p, module)


@dataclass
class TimePasses(PassInstrument):
    """Collect wall time per pass (and other named steps); print a table at the end."""

    stream: TextIO | None = None
    rows: list[tuple[str, float]] = field(default_factory=list)

    def record(self, label: str, seconds: float) -> None:
        """Add a row for a step outside the pass manager (parse, print, emit, ...)."""
        self.rows.append((label, seconds))

    def after_pass(self, p: ModulePass, module: Module, seconds: float) -> None:
        self.record(print_pass(p), seconds)

    def report(self) -> str:
        total = sum(s for _, s in self.rows) or 1e-12
        lines = [f"// time-passes: total {total:.4f} s"]
        for label, seconds in self.rows:
            lines.append(f"//   {seconds:9.4f} s {100 * seconds / total:5.1f}%  {label}")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Print the table (the driver calls this once its last step is recorded)."""
        (self.stream or sys.stderr).write(self.report())


@dataclass
class PassManager:
    """Runs passes in order, verifying the IR after each one (unless `verify_each` is off)."""

    passes: Sequence[ModulePass]
    verify_each: bool = True
    instruments: Sequence[PassInstrument] = ()

    def run(self, module: Module, ctx: PassContext | None = None) -> Module:
        ctx = ctx or PassContext()
        check_needs(self.passes, ctx, module)
        for p in self.passes:
            for inst in self.instruments:
                inst.before_pass(p, module)
            start = time.perf_counter()
            try:
                module = p.run(module, ctx)
            except NdpcError as err:  # a pass's complaint about its options: point at the pass
                if err.loc is not None or p.where is None:
                    raise
                raise NdpcError(err.message, p.where) from None
            if self.verify_each:
                try:
                    verify(module)
                except NdpcError as err:
                    message = f"pass '{print_pass(p)}' produced invalid IR: {err.message}"
                    raise NdpcError(message, err.loc, err.source) from None
            elapsed = time.perf_counter() - start
            for inst in self.instruments:
                inst.after_pass(p, module, elapsed)
        for inst in self.instruments:
            inst.after_pipeline()
        return module


def check_needs(
    passes: Sequence[ModulePass], ctx: PassContext, module: Module | None = None
) -> None:
    """Refuse, before any pass runs, a pipeline whose passes need a target the context lacks, or
    expert shards that neither the module nor an earlier pass provides."""
    shards = module is None or bool(module.ops_of(ExpertShardsOp))
    for p in passes:
        spare = p.needs_target() if ctx.target is None else None
        if spare is not None:
            raise NdpcError(
                f"pass '{p.name}' needs a target: give --target NAME|FILE (or {p.name}{{{spare}}})",
                p.where,
            )
        if p.needs_shards and not shards:
            raise NdpcError(
                f"pass '{p.name}' needs expert shards: put tp-split (or stripe) before it", p.where
            )
        shards = shards or p.makes_shards


# --- the shared CLI flags ---------------------------------------------------------------------


@dataclass
class IrDumpOptions:
    """The values of the flags added by `ir_dump_options`."""

    print_ir_before: tuple[str, ...] = ()
    print_ir_after: tuple[str, ...] = ()
    print_ir_after_all: bool = False
    time_passes: bool = False
    expand: bool = False
    verify_each: bool = True
    timer: TimePasses | None = None

    def pass_manager(
        self, passes: Sequence[ModulePass], stream: TextIO | None = None
    ) -> PassManager:
        """A pass manager with the requested dumps/timing (dumps and timing go to stderr)."""
        for name in (*self.print_ir_before, *self.print_ir_after):
            if name not in PASSES:
                raise NdpcError(
                    f"--print-ir-before/after: unknown pass '{name}'{did_you_mean(name, list(PASSES))}"
                )
        instruments: list[PassInstrument] = []
        if self.print_ir_before or self.print_ir_after or self.print_ir_after_all:
            instruments.append(
                PrintIR(
                    frozenset(self.print_ir_before),
                    frozenset(self.print_ir_after),
                    self.print_ir_after_all,
                    self.expand,
                    stream,
                )
            )
        if self.time_passes:
            self.timer = TimePasses(stream)
            instruments.append(self.timer)
        return PassManager(passes, self.verify_each, instruments)

    def record(self, label: str, seconds: float) -> None:
        """Add a timed step (parse, print, ...) to the --time-passes table, if requested."""
        if self.timer is not None:
            self.timer.record(label, seconds)

    def finish(self) -> None:
        """Print the --time-passes table, if requested (call once, at the end)."""
        if self.timer is not None:
            self.timer.write()


def make_context(
    target: str | None = None, overrides: Sequence[str] = (), seed: int = 0
) -> PassContext:
    """A PassContext for `--target NAME --set k=v`: the target and its cost model (or neither)."""
    if target is None:
        if overrides:
            raise NdpcError("--set needs --target")
        return PassContext(seed=seed)
    loaded = load_target(target, overrides)
    return PassContext(target=loaded, cost=CostModel(loaded), seed=seed)


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


def ir_dump_options(func: Callable) -> Callable:
    """Click decorator: add --print-ir-before/after[-all], --time-passes, --expand,
    --no-verify-each; the command receives them as one `ir_dump: IrDumpOptions` argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["ir_dump"] = IrDumpOptions(
            print_ir_before=_names(kwargs.pop("print_ir_before")),
            print_ir_after=_names(kwargs.pop("print_ir_after")),
            print_ir_after_all=kwargs.pop("print_ir_after_all"),
            time_passes=kwargs.pop("time_passes"),
            expand=kwargs.pop("expand"),
            verify_each=not kwargs.pop("no_verify_each"),
        )
        return func(*args, **kwargs)

    options = [
        click.option(
            "--print-ir-before",
            multiple=True,
            metavar="PASS",
            help="Dump the IR (stderr) before each run of PASS.",
        ),
        click.option(
            "--print-ir-after",
            multiple=True,
            metavar="PASS",
            help="Dump the IR (stderr) after each run of PASS.",
        ),
        click.option(
            "--print-ir-after-all", is_flag=True, help="Dump the IR (stderr) after every pass."
        ),
        click.option(
            "--time-passes", is_flag=True, help="Print the time spent in each pass (stderr)."
        ),
        click.option("--expand", is_flag=True, help="Print shard tables one row per expert."),
        click.option(
            "--no-verify-each", is_flag=True, help="Skip verifying the IR after each pass."
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def replace_options(p: ModulePass, **changes: Any) -> ModulePass:
    """A copy of pass `p` with some options changed (e.g. `auto` filled from the target)."""
    return dataclasses.replace(p, **changes)
