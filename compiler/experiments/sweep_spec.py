"""Sweep specs (TOML, docs/sweeps.md): axes combined as a product or zipped, expanded to jobs.

    model = "qwen3-30b-a3b"            # a scalar is fixed for every point ...
    policy = ["monde", "paper"]        # ... a list is an axis
    combine = "product"                # or "zip" (all axes in lockstep); default product
    zip = [["model", "trace.seed"]]    # optional: these axes in lockstep, product with the rest
    [trace]                            # fixed generator options (or file = "t.npz")
    prompt = 64
    tokens = 128
    [set]                              # fixed target overrides
    "link.pcie.gbps" = 32
    [axes]
    "set.ndp.units" = [2, 4]
    "trace.seed" = [0, 1]

Axis names: `model`, `target`, `policy`, `pipeline` (a pass pipeline instead of the policy's),
`trace.seed`, `trace.prompt`, `trace.tokens`, `trace.file`, and `set.KEY` for any target key.
"""

from __future__ import annotations

import difflib
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndpc.backends.target import ALIASES, SCHEMA, load_target
from ndpc.compiler.experiments.runner import Case
from ndpc.compiler.experiments.sweep import Job, TraceGen, make_job, model_digest
from ndpc.compiler.policies import get_policy
from ndpc.compiler.zoo import get_model
from ndpc.ir.core import Location
from ndpc.ir.diagnostics import NdpcError

PLAIN_AXES = ("model", "target", "policy", "pipeline")
TRACE_KEYS = ("seed", "prompt", "tokens", "file", "calib")
TRACE_AXES = tuple(f"trace.{k}" for k in TRACE_KEYS if k != "calib")
TOP_KEYS = (*PLAIN_AXES, "combine", "zip", "axes", "trace", "set", "check")
LIMITS = {"trace.seed": 2**32 - 1, "trace.prompt": 1 << 20, "trace.tokens": 1 << 20}
DEFAULTS: dict[str, Any] = {"target": "rtx5080-ndp", "policy": "ndpc", "trace.prompt": 64,
                            "trace.tokens": 128, "trace.seed": 0}  # fmt: skip


@dataclass
class Spec:
    """A parsed spec: fixed values and axes by name (`set.KEY`, `trace.KEY` or plain)."""

    path: str
    fixed: dict[str, Any]
    axes: dict[str, list[Any]]
    groups: list[list[str]]  # axes run in lockstep within a group; groups form a product
    check: bool = False
    text: str = field(default="", repr=False)

    def points(self) -> list[dict[str, Any]]:
        """Every point: axis name -> value, in the order the axes are written."""
        blocks = []
        for group in self.groups:
            blocks.append([dict(zip(group, vals, strict=True))
                           for vals in zip(*(self.axes[a] for a in group), strict=True)])  # fmt: skip
        out = []
        for combo in itertools.product(*blocks):
            merged: dict[str, Any] = {}
            for part in combo:
                merged.update(part)
            out.append({a: merged[a] for a in self.axes})
        return out

    def value(self, point: dict[str, Any], name: str) -> Any:
        return point.get(name, self.fixed.get(name, DEFAULTS.get(name)))

    def target_ref(self, target: str) -> str:
        """A target name, or a .toml path relative to the spec's folder."""
        return str(Path(self.path).parent / target) if target.endswith(".toml") else target

    def error(self, message: str, key: str | None = None) -> NdpcError:
        where = _locate(self.text, key) if key else None
        loc = Location(self.path, *where) if where else Location(self.path, name=self.path)
        return NdpcError(message, loc, self.text if where else None)


def load_spec(path: str | Path) -> Spec:
    """Read and check a sweep spec; every problem is one NdpcError naming the file and key."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise NdpcError(f"cannot read sweep spec: {err}", Location(path, name=path)) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(err))
        loc = Location(path, int(m.group(1)), int(m.group(2))) if m else Location(path, name=path)
        raise NdpcError(
            f"invalid TOML: {re.sub(r' [(]at .*[)]$', '', str(err))}", loc, text
        ) from None
    spec = Spec(path, {}, {}, [], text=text)
    for key, value in doc.items():
        if key not in TOP_KEYS:
            raise spec.error(f"unknown key '{key}' (expected one of {', '.join(TOP_KEYS)})", key)
        if key in PLAIN_AXES:
            _put(spec, key, value, key)
    for name in ("trace", "set", "axes"):
        if name in doc and not isinstance(doc[name], dict):
            raise spec.error(f"'{name}' must be a table", name)
    for key, value in doc.get("trace", {}).items():
        if key not in TRACE_KEYS:
            raise spec.error(f"unknown key 'trace.{key}' (expected {', '.join(TRACE_KEYS)})", key)
        _put(spec, f"trace.{key}", value, key)
    for key, value in doc.get("set", {}).items():
        _put(spec, f"set.{key}", value, key)
    for key, value in doc.get("axes", {}).items():
        if not isinstance(value, list):
            raise spec.error(f"axis '{key}' must be a list of values", key)
        _put(spec, key, value, key)
    spec.check = doc.get("check", False)
    if not isinstance(spec.check, bool):
        raise spec.error("'check' must be true or false", "check")
    _groups(spec, doc)
    _check(spec)
    return spec


def _put(spec: Spec, name: str, value: Any, key: str) -> None:
    if not (name in PLAIN_AXES or name in TRACE_AXES or name == "trace.calib"
            or (name.startswith("set.") and len(name) > 4)):  # fmt: skip
        raise spec.error(f"unknown axis '{name}' (expected {', '.join(PLAIN_AXES + TRACE_AXES)} "
                         "or set.KEY)", key)  # fmt: skip
    if name in spec.axes or name in spec.fixed:
        raise spec.error(f"'{name}' is given twice", key)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise spec.error(f"axis '{name}' has no values", key)
    for v in values:
        if isinstance(v, dict | list):
            raise spec.error(f"'{name}': values must be strings, numbers or booleans", key)
        if name in ("trace.seed", "trace.prompt", "trace.tokens") and (
            isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= LIMITS[name]
        ):
            raise spec.error(f"'{name}' must be an integer in 0..{LIMITS[name]}, not {v!r}", key)
        if name in PLAIN_AXES + ("trace.file", "trace.calib") and not isinstance(v, str):
            raise spec.error(f"'{name}' must be a string, not {v!r}", key)
    if name == "trace.calib" and isinstance(value, list):
        raise spec.error("'trace.calib' is one file, not a list", key)
    if name.startswith("set.") and name[4:] not in SCHEMA and name[4:] not in ALIASES:
        close = difflib.get_close_matches(name[4:], [*SCHEMA, *ALIASES], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else " (docs/targets.md lists them)"
        raise spec.error(f"'{name}': unknown target key '{name[4:]}'{hint}", key)
    if isinstance(value, list):
        spec.axes[name] = value
    else:
        spec.fixed[name] = value


def _groups(spec: Spec, doc: dict[str, Any]) -> None:
    combine = doc.get("combine", "product")
    if combine not in ("product", "zip"):
        raise spec.error(f'\'combine\' must be "product" or "zip", not {combine!r}', "combine")
    zipped = doc.get("zip", [])
    if not isinstance(zipped, list) or not all(isinstance(g, list) for g in zipped):
        raise spec.error("'zip' must be a list of lists of axis names", "zip")
    if combine == "zip":
        zipped = [list(spec.axes)]
    seen: set[str] = set()
    for group in zipped:
        for name in group:
            if name not in spec.axes:
                raise spec.error(f"'zip' names '{name}', which is not an axis", "zip")
            if name in seen:
                raise spec.error(f"'zip' names '{name}' twice", "zip")
            seen.add(name)
        lengths = {len(spec.axes[a]) for a in group}
        if len(lengths) > 1:
            sizes = ", ".join(f"{a}: {len(spec.axes[a])}" for a in group)
            raise spec.error(f"zipped axes differ in length ({sizes})", "zip" if combine == "product" else "combine")  # fmt: skip
    order = list(spec.axes)  # the first-written axis varies slowest
    groups = [g for g in zipped if g] + [[a] for a in spec.axes if a not in seen]
    spec.groups = sorted(groups, key=lambda g: min(order.index(a) for a in g))


def _check(spec: Spec) -> None:
    if "model" not in spec.axes and "model" not in spec.fixed:
        raise spec.error('no model: give model = "NAME" or an axis model = [...]')
    for policy in spec.axes.get("policy", [spec.value({}, "policy")]):
        try:
            get_policy(policy)
        except (NdpcError, OSError, ValueError) as err:
            raise spec.error(f"policy: {_reason(err)}", "policy") from None
    for target in spec.axes.get("target", [spec.value({}, "target")]):
        try:
            load_target(spec.target_ref(target))
        except (NdpcError, OSError, ValueError) as err:
            raise spec.error(f"target: {_reason(err)}", "target") from None
    generated = "trace.file" not in spec.axes and "trace.file" not in spec.fixed
    for model in spec.axes.get("model", [spec.fixed.get("model")]):
        try:
            if generated:
                get_model(model)  # a generated trace needs a zoo model's shape
            else:
                model_digest(model)
        except (NdpcError, OSError, ValueError) as err:
            raise spec.error(f"model: {_reason(err)}", "model") from None
    if generated:
        for prompt in spec.axes.get("trace.prompt", [spec.value({}, "trace.prompt")]):
            for tokens in spec.axes.get("trace.tokens", [spec.value({}, "trace.tokens")]):
                if not 0 < prompt < tokens:
                    raise spec.error(f"trace: need 0 < prompt < tokens (got prompt {prompt}, "
                                     f"tokens {tokens})", "tokens")  # fmt: skip


def _reason(err: Exception) -> str:
    return err.message if isinstance(err, NdpcError) else str(err)


def _override(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def point_job(spec: Spec, point: dict[str, Any]) -> Job:
    """The job of one point (NdpcError when its target or overrides are invalid)."""
    v = lambda name: spec.value(point, name)  # noqa: E731
    sets = {**{k: x for k, x in spec.fixed.items() if k.startswith("set.")},
            **{k: x for k, x in point.items() if k.startswith("set.")}}  # fmt: skip
    overrides = tuple(_override(k[4:], x) for k, x in sets.items())
    pipeline = v("pipeline") or ""
    base = Path(spec.path).parent
    trace_file, calib = v("trace.file"), v("trace.calib")
    gen = None
    if trace_file:
        trace = str(base / trace_file)
    else:
        prompt, tokens = int(v("trace.prompt")), int(v("trace.tokens"))
        gen, trace = TraceGen(v("model"), prompt, tokens - prompt, int(v("trace.seed"))), ""
    case = Case(v("model"), spec.target_ref(v("target")), trace, v("policy"), overrides,
                calib=str(base / calib) if calib else "", pipeline=pipeline,
                label=pipeline, check=spec.check)  # fmt: skip
    return make_job(case, gen)


def _locate(text: str, key: str) -> tuple[int, int] | None:
    """(line, column) where `key` is assigned (bare or quoted) in the spec text."""
    pattern = re.compile(rf"^\s*(\"{re.escape(key)}\"|'{re.escape(key)}'|{re.escape(key)})\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        m = pattern.match(line)
        if m:
            return number, m.start(1) + 1
    return None
