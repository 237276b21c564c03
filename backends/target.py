"""Target descriptions: a GPU, a host, NDP units and the links between them, read from TOML.

A target file (`backends/targets/<name>.toml`, format in docs/targets.md) gives every value as an
inline table carrying its provenance:

    [gpu]
    bandwidth_gbps = {value = 960, source = "https://..."}
    launch_us = {value = 5, assumed = "sweep 3-20; no public figure"}
    mem_efficiency = {bytes = [4096, 1048576], fraction = [0.2, 0.85], assumed = "..."}

`load_target(name_or_path, overrides)` validates the file against `SCHEMA` (units are in the key
names), applies `--set key=value` overrides validated the same way and returns a frozen `Target`.
Every problem is an `NdpcError` naming the file, the key, the value and why.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndpc.ir.core import Location
from ndpc.ir.diagnostics import NdpcError, read_source

TARGET_DIR = Path(__file__).resolve().parent / "targets"
GIB = 1 << 30
MAX_TARGET_BYTES = 1 << 20  # a target file is ~5 KB of values and provenance
# Every float is finite and within [MIN_POSITIVE, MAX_VALUE] (or [0, MAX_VALUE] where zero is
# allowed): a bandwidth of 1e-320 made every transfer infinitely long (`Infinity` in --json), and
# 1e308 overflows once scaled to bytes. The range spans every real device many times over.
MIN_POSITIVE = 1e-6
MAX_VALUE = 1e9
MAX_GIB = float(1 << 20)  # capacities: 1 PiB, so every byte count stays exact (< 2^53)
MIN_FRACTION = 1e-3  # efficiency curves: below 0.1 % of peak is no device anyone simulates
MAX_TABLE_KEY = 1e18  # bytes read or FLOP per byte


@dataclass(frozen=True)
class Field:
    """One key of the target schema: its type, unit, allowed range and meaning."""

    kind: str  # "float" | "int" | "bool" | "str" | "table"
    doc: str
    lo: float | None = None  # inclusive lower bound
    hi: float | None = None  # inclusive upper bound
    positive: bool = False  # strictly > 0
    table_key: str = ""  # for tables: the name of the key column ("bytes", "intensity")
    required: bool = True
    choices: tuple[str, ...] = ()


def _eff(key: str, doc: str) -> Field:
    return Field("table", doc, table_key=key)


SCHEMA: dict[str, Field] = {
    "gpu.model": Field("str", "GPU the numbers describe"),
    "gpu.memory_gib": Field("float", "VRAM capacity (GiB)", positive=True, hi=MAX_GIB),
    "gpu.bandwidth_gbps": Field("float", "peak VRAM bandwidth (GB/s, 1e9 B/s)", positive=True),
    "gpu.fp16_tflops": Field(
        "float", "dense FP16/BF16 tensor throughput, FP32 accumulate (TFLOP/s)", positive=True
    ),
    "gpu.int8_tops": Field("float", "dense INT8 tensor throughput (TOP/s)", positive=True),
    "gpu.launch_us": Field("float", "fixed per-kernel launch overhead (µs)", lo=0),
    "gpu.mem_efficiency": _eff("bytes", "achieved fraction of peak bandwidth vs bytes read"),
    "gpu.compute_efficiency": _eff(
        "intensity", "achieved fraction of peak FLOP/s vs FLOP per byte"
    ),
    "host.cpu_model": Field("str", "host CPU the numbers describe"),
    "host.cpu_gflops": Field(
        "float", "host-CPU dense FP16/BF16 throughput (GFLOP/s)", positive=True
    ),
    "host.cpu_launch_us": Field("float", "fixed per-kernel overhead on the CPU (µs)", lo=0),
    "host.dram_channels": Field("int", "host DRAM channels", lo=1, hi=64),
    "host.dram_bandwidth_gbps": Field("float", "host DRAM peak bandwidth (GB/s)", positive=True),
    "host.memory_gib": Field("float", "host DRAM capacity (GiB)", positive=True, hi=MAX_GIB),
    "host.mem_efficiency": _eff("bytes", "CPU kernels: achieved fraction of DRAM bandwidth"),
    "host.compute_efficiency": _eff("intensity", "CPU kernels: achieved fraction of peak FLOP/s"),
    "host.amx_bf16_tflops": Field(
        "float",
        "host matrix engine (Intel AMX), optional: dense BF16 throughput, FP32 accumulate; a CPU"
        " kernel runs on it or on the vector units, whichever is faster (TFLOP/s)",
        positive=True,
        required=False,
    ),
    "host.amx_int8_tops": Field(
        "float",
        "host matrix engine, optional: dense INT8 throughput, recorded as gpu.int8_tops (TOP/s)",
        positive=True,
        required=False,
    ),
    "host.amx_compute_efficiency": Field(
        "table",
        "matrix-engine kernels: achieved fraction of host.amx_bf16_tflops vs FLOP per byte"
        " (required with host.amx_bf16_tflops)",
        table_key="intensity",
        required=False,
    ),
    "link.pcie.kind": Field("str", "host link type", choices=("pcie", "soc-dma")),
    "link.pcie.generation": Field("int", "PCIe generation (0 for soc-dma)", lo=0, hi=7),
    "link.pcie.lanes": Field("int", "PCIe lanes (0 for soc-dma)", lo=0, hi=32),
    "link.pcie.h2d_gbps": Field(
        "float", "achievable host-to-device bandwidth (GB/s)", positive=True
    ),
    "link.pcie.d2h_gbps": Field(
        "float", "achievable device-to-host bandwidth (GB/s)", positive=True
    ),
    "link.pcie.pageable_h2d_gbps": Field(
        "float",
        "host-to-device rate of copies from pageable host memory, as a framework's plain"
        " tensor copy does (GB/s; optional; used by `ndpc reproduce fiddler`'s offloading baseline)",
        positive=True,
        required=False,
    ),
    "link.pcie.setup_us": Field("float", "DMA set-up latency per transfer (µs)", lo=0),
    "link.pcie.copy_engines": Field(
        "int",
        "GPU DMA (copy) engines per direction; each keeps one read or write in flight per NDP"
        " unit, so a copy spread over several units runs on all of them at once",
        lo=1,
        hi=16,
    ),
    "link.pcie.parallel_units": Field(
        "bool",
        "each copy engine keeps one flow per NDP unit in flight (default true); false: one flow"
        " per engine, so a copy spread over several units goes one shard after another",
        required=False,
    ),
    "ndp.kind": Field(
        "str",
        "NDP unit type (host-dram: plain host memory, no near-data compute)",
        choices=("dimm", "lpddr-pim", "cxl", "host-dram"),
    ),
    "ndp.units": Field("int", "number of NDP units", lo=1, hi=64),
    "ndp.min_units": Field("int", "smallest valid unit count", lo=1, hi=64),
    "ndp.max_units": Field("int", "largest valid unit count", lo=1, hi=64),
    "ndp.capacity_gib": Field("float", "memory capacity per unit (GiB)", positive=True, hi=MAX_GIB),
    "ndp.internal_bandwidth_gbps": Field(
        "float", "bandwidth the NDP core sees, per unit (GB/s)", positive=True
    ),
    "ndp.host_bandwidth_gbps": Field(
        "float", "bandwidth of one unit visible to the host (GB/s)", positive=True
    ),
    "ndp.gflops": Field("float", "NDP compute throughput per unit, FP16 (GFLOP/s)", positive=True),
    "ndp.buffer_kib": Field("float", "local buffer per unit (KiB)", positive=True),
    "ndp.launch_us": Field("float", "fixed per-kernel overhead on a unit (µs)", lo=0),
    "ndp.host_sync_us": Field(
        "float",
        "host synchronisation with a unit (status poll) before it reads the unit's partial sum,"
        " once per unit and layer (µs; optional, default 0)",
        lo=0,
        required=False,
    ),
    "ndp.exclusive_host_access": Field(
        "bool", "NDP compute and host access to the same unit exclude each other"
    ),
    "ndp.mem_efficiency": _eff("bytes", "achieved fraction of internal bandwidth"),
    "ndp.compute_efficiency": _eff("intensity", "achieved fraction of NDP peak FLOP/s"),
    "link.ndp.present": Field("bool", "an inter-unit link (DIMM-link) exists"),
    "link.ndp.gbps": Field(
        "float", "inter-unit link bandwidth (GB/s)", positive=True, required=False
    ),
    "link.ndp.latency_us": Field(
        "float", "inter-unit link set-up latency (µs)", lo=0, required=False
    ),
    "link.ndp.concurrent_flows": Field(
        "int", "flows sharing the inter-unit link at once", lo=1, hi=64, required=False
    ),
}


def _energy(doc: str) -> Field:
    return Field("float", doc, lo=0, required=False)


# Energy model (backends/energy.py): optional, a target without them reports no energy.
ENERGY_SCHEMA: dict[str, Field] = {
    "gpu.pj_per_flop": _energy("GPU dynamic energy per FLOP (pJ)"),
    "gpu.mem_pj_per_byte": _energy("GPU memory (VRAM) access energy per byte (pJ)"),
    "gpu.static_w": _energy("GPU power drawn whether busy or not (W)"),
    "host.pj_per_flop": _energy("host-CPU dynamic energy per FLOP (pJ)"),
    "host.dram_pj_per_byte": _energy("host DRAM access energy per byte, channel I/O included (pJ)"),
    "host.static_w": _energy("host platform power drawn whether busy or not (W)"),
    "ndp.pj_per_flop": _energy("NDP dynamic energy per FLOP (pJ)"),
    "ndp.internal_pj_per_byte": _energy("NDP-internal DRAM access energy per byte, no channel I/O (pJ)"),
    "ndp.host_pj_per_byte": _energy("host access to an NDP unit's DRAM per byte, channel I/O included (pJ)"),
    "ndp.static_w": _energy("power of one NDP unit drawn whether busy or not (W)"),
    "link.pcie.pj_per_byte": _energy("host-link transfer energy per byte (pJ)"),
    "link.ndp.pj_per_byte": _energy("inter-unit link transfer energy per byte (pJ)"),
}  # fmt: skip
# each section's energy keys follow its other keys (`target dump` writes SCHEMA in order)
SCHEMA = {k: SCHEMA.get(k) or ENERGY_SCHEMA[k]
          for section in dict.fromkeys(k.rpartition(".")[0] for k in SCHEMA)
          for k in [*(k for k in SCHEMA if k.rpartition(".")[0] == section),
                    *(k for k in ENERGY_SCHEMA if k.rpartition(".")[0] == section)]}  # fmt: skip
_LINK_ENERGY = "link.ndp.pj_per_byte"  # optional even when the link is present
TOP_LEVEL = ("name", "description")
# `--set` shorthands that set several keys at once.
ALIASES: dict[str, tuple[str, ...]] = {
    "link.pcie.gbps": ("link.pcie.h2d_gbps", "link.pcie.d2h_gbps"),
}
_SOURCE_KEYS = ("source", "assumed")


@dataclass(frozen=True)
class EffTable:
    """A piecewise-linear efficiency curve in log2(key), clamped at both ends."""

    keys: tuple[float, ...]
    fractions: tuple[float, ...]


@dataclass(frozen=True, eq=False)
class Target:
    """A validated target: dotted key -> value, and dotted key -> provenance ("source: URL" or
    "assumed: why" or "override"). Treat `values`/`sources` as read-only; derive changed
    targets with `with_overrides`/`with_units`. Picklable (experiment runners fork workers)."""

    name: str
    description: str
    path: str
    values: Mapping[str, Any] = field(repr=False)
    sources: Mapping[str, str] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def ndp_units(self) -> int:
        """Number of NDP units."""
        return int(self.values["ndp.units"])

    @property
    def gpu_memory_bytes(self) -> int:
        """GPU memory capacity in bytes."""
        return int(self.values["gpu.memory_gib"] * GIB)

    @property
    def ndp_capacity_bytes(self) -> int:
        """Capacity of one NDP unit in bytes."""
        return int(self.values["ndp.capacity_gib"] * GIB)

    @property
    def has_ndp_link(self) -> bool:
        """Whether an inter-unit link (resource "ndplink") exists."""
        return bool(self.values["link.ndp.present"])

    @property
    def has_host_cpu(self) -> bool:
        """Every shipped target has a host CPU (the Fiddler baseline computes experts on it)."""
        return "host.cpu_gflops" in self.values

    @property
    def exclusive_host_access(self) -> bool:
        """Whether host transfers to a unit and NDP compute on it exclude each other."""
        return bool(self.values["ndp.exclusive_host_access"])

    def with_units(self, n: int) -> Target:
        """The same target with `n` NDP units (validated against ndp.min_units..max_units)."""
        return self.with_overrides([f"ndp.units={n}"])

    def with_overrides(self, overrides: Sequence[str]) -> Target:
        """A copy with `key=value` overrides applied and re-validated."""
        values = dict(self.values)
        sources = dict(self.sources)
        _apply_overrides(values, sources, overrides, self.path)
        _check_cross(values, self.path, sources)
        return Target(
            self.name,
            self.description,
            self.path,
            values,
            sources,
        )


@dataclass(frozen=True)
class ResourceSpec:
    """A simulator resource: a compute device or a link direction.

    `slots` ops may run at once; on a link, concurrent flows share `bandwidth_Bps` fairly.
    """

    name: str
    kind: str  # "compute" | "link"
    slots: int
    bandwidth_Bps: float  # memory bandwidth (compute) or link bandwidth (link)


def resource_specs(target: Target) -> list[ResourceSpec]:
    """The target's resources in their canonical order (see `resource_names`)."""
    v = target.values
    specs = [
        ResourceSpec("gpu", "compute", 1, v["gpu.bandwidth_gbps"] * 1e9),
        ResourceSpec("cpu", "compute", 1, v["host.dram_bandwidth_gbps"] * 1e9),
    ]
    for i in range(target.ndp_units):
        specs.append(ResourceSpec(f"ndp{i}", "compute", 1, v["ndp.internal_bandwidth_gbps"] * 1e9))
    # host memory is interleaved across channels and a DMA engine keeps requests in flight on
    # all of them: each engine runs one flow per NDP unit at once (flows share the link fairly)
    engines = int(v["link.pcie.copy_engines"])
    if v.get("link.pcie.parallel_units", True):
        engines *= max(1, target.ndp_units)
    specs.append(ResourceSpec("pcie.h2d", "link", engines, v["link.pcie.h2d_gbps"] * 1e9))
    specs.append(ResourceSpec("pcie.d2h", "link", engines, v["link.pcie.d2h_gbps"] * 1e9))
    if target.has_ndp_link:
        flows = int(v.get("link.ndp.concurrent_flows", 1))
        specs.append(ResourceSpec("ndplink", "link", flows, v["link.ndp.gbps"] * 1e9))
    return specs


def resource_names(target: Target) -> list[str]:
    """ "gpu", "cpu", "ndp0".."ndp{N-1}", "pcie.h2d", "pcie.d2h" and "ndplink" when present."""
    return [spec.name for spec in resource_specs(target)]


def list_targets() -> list[str]:
    """Names of the targets shipped in backends/targets/."""
    return sorted(p.stem for p in TARGET_DIR.glob("*.toml"))


def load_target(name_or_path: str, overrides: Sequence[str] = ()) -> Target:
    """Load a shipped target by name or a TOML file by path, apply overrides, validate."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or path.exists()):
        path = TARGET_DIR / f"{name_or_path}.toml"
        if not path.exists():
            names = list_targets()
            close = difflib.get_close_matches(name_or_path, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(names)})"
            raise NdpcError(f"unknown target '{name_or_path}'{hint}")
    text = read_source(path, MAX_TARGET_BYTES, "target file")
    return parse_target(text, str(path), overrides)


def parse_target(text: str, path: str = "<target>", overrides: Sequence[str] = ()) -> Target:
    """Parse and validate target TOML text (see module docstring)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            loc = Location(path, int(m.group(1)), int(m.group(2)))
        else:  # "(at end of document)": point just past the last character
            lines = text.splitlines() or [""]
            loc = Location(path, len(lines), len(lines[-1]) + 1)
        reason = re.sub(r" \(at .*\)$", "", msg)
        raise NdpcError(f"invalid TOML: {reason}", loc, text) from None
    try:
        return _build(doc, path, overrides)
    except NdpcError as err:
        where = _locate(text, err.message)
        if err.loc is None or err.loc.file != path or where is None:
            raise
        raise NdpcError(err.message, Location(path, *where), text) from None


def _build(doc: dict[str, Any], path: str, overrides: Sequence[str]) -> Target:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in TOP_LEVEL:
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            _fail(path, key, doc.get(key), "must be a non-empty string")
    _walk(doc, "", values, sources, path)
    _apply_overrides(values, sources, overrides, path)
    for key, spec in SCHEMA.items():
        needed = spec.required or (
            key.startswith("link.ndp.") and values.get("link.ndp.present") and key != _LINK_ENERGY
        )
        if needed and key not in values:
            raise NdpcError(f"missing key '{key}' ({spec.doc})", _loc(path))
    _check_cross(values, path, sources)
    return Target(doc["name"], doc["description"], path, dict(values), dict(sources))


def _walk(table: Mapping[str, Any], prefix: str, values: dict, sources: dict, path: str) -> None:
    for key, item in table.items():
        dotted = f"{prefix}{key}"
        if not prefix and key in TOP_LEVEL:
            continue
        if dotted in SCHEMA:
            value, source = _read_leaf(dotted, item, path)
            values[dotted] = value
            sources[dotted] = source
        elif isinstance(item, dict) and any(k.startswith(f"{dotted}.") for k in SCHEMA):
            _walk(item, f"{dotted}.", values, sources, path)
        else:
            raise NdpcError(f"unknown key '{dotted}'{_did_you_mean(dotted)}", _loc(path))


def _read_leaf(key: str, item: Any, path: str) -> tuple[Any, str]:
    spec = SCHEMA[key]
    if not isinstance(item, dict):
        _fail(
            path,
            key,
            item,
            'must be an inline table {value = ..., source = "URL"} or {..., assumed = "why"}',
        )
    provenance = [k for k in _SOURCE_KEYS if k in item]
    if (
        len(provenance) != 1
        or not isinstance(item[provenance[0]], str)
        or not item[provenance[0]].strip()
    ):
        _fail(path, key, item, "needs exactly one non-empty 'source' (URL) or 'assumed' (reason)")
    source = f"{provenance[0]}: {item[provenance[0]]}"
    if spec.kind == "table":
        allowed = {spec.table_key, "fraction", provenance[0]}
        extra = set(item) - allowed
        if extra:
            _fail(
                path,
                key,
                item,
                f"unexpected field(s) {sorted(extra)}; expected '{spec.table_key}' and 'fraction'",
            )
        return _validate(key, (item.get(spec.table_key), item.get("fraction")), path), source
    extra = set(item) - {"value", provenance[0]}
    if extra or "value" not in item:
        _fail(path, key, item, "expected exactly the fields 'value' and 'source'/'assumed'")
    return _validate(key, item["value"], path), source


def _validate(key: str, value: Any, path: str) -> Any:
    """Type- and range-check one value against SCHEMA[key]; return it normalised."""
    spec = SCHEMA[key]
    if spec.kind == "table":
        return _validate_table(key, value, path)
    if spec.kind == "bool":
        if not isinstance(value, bool):
            _fail(path, key, value, "must be true or false")
        return value
    if spec.kind == "str":
        if not isinstance(value, str) or not value.strip():
            _fail(path, key, value, "must be a non-empty string")
        if spec.choices and value not in spec.choices:
            _fail(path, key, value, f"must be one of {', '.join(spec.choices)}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, key, value, f"must be a number ({spec.doc})")
    if spec.kind == "int":
        if isinstance(value, float) and not value.is_integer():
            _fail(path, key, value, "must be an integer")
        value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float
            _fail(path, key, value, f"is implausibly large (must be <= {MAX_VALUE:g})")
        if value != value or value in (float("inf"), float("-inf")):
            _fail(path, key, value, "must be finite")
    if spec.positive and value <= 0:
        _fail(path, key, value, "must be > 0")
    if spec.lo is not None and value < spec.lo:
        _fail(path, key, value, f"must be >= {_bound(spec.lo)}")
    if spec.hi is not None and value > spec.hi:
        _fail(path, key, value, f"must be <= {_bound(spec.hi)}")
    if spec.kind == "float" and spec.positive and value < MIN_POSITIVE:
        _fail(path, key, value, f"is implausibly small (must be >= {MIN_POSITIVE:g})")
    if spec.kind == "float" and value > MAX_VALUE:
        _fail(path, key, value, f"is implausibly large (must be <= {MAX_VALUE:g})")
    return value


def _validate_table(key: str, value: Any, path: str) -> EffTable:
    spec = SCHEMA[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = ([1.0], [value])  # a scalar override means a flat curve
    elif isinstance(value, dict):  # --set 'k={bytes = [...], fraction = [...]}'
        value = (value.get(spec.table_key), value.get("fraction"))
    if not isinstance(value, tuple) or len(value) != 2:
        _fail(
            path,
            key,
            value,
            f"must be a fraction in (0, 1] or a table {{{spec.table_key} = [...], fraction = [...]}}",
        )
    keys, fractions = value
    if not isinstance(keys, list) or not isinstance(fractions, list) or not keys:
        _fail(path, key, value, f"needs non-empty lists '{spec.table_key}' and 'fraction'")
    if len(keys) != len(fractions):
        _fail(
            path,
            key,
            value,
            f"'{spec.table_key}' and 'fraction' differ in length ({len(keys)} vs {len(fractions)})",
        )
    for k in keys:
        if isinstance(k, bool) or not isinstance(k, int | float) or not 0 < k <= MAX_TABLE_KEY:
            _fail(path, key, k, f"every '{spec.table_key}' entry must be in (0, {MAX_TABLE_KEY:g}]")
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, int | float) or not MIN_FRACTION <= f <= 1:
            _fail(path, key, f, f"every 'fraction' must be in [{MIN_FRACTION:g}, 1]")
    if any(b <= a for a, b in zip(keys, keys[1:], strict=False)):
        _fail(path, key, keys, f"'{spec.table_key}' must be strictly increasing")
    return EffTable(tuple(float(k) for k in keys), tuple(float(f) for f in fractions))


def _apply_overrides(values: dict, sources: dict, overrides: Sequence[str], path: str) -> None:
    for text in overrides:
        bad = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
        if bad is not None:  # undecodable bytes on the command line arrive as lone surrogates
            raise NdpcError(
                f"override {text[:bad]!r}...: not UTF-8 text at character {bad + 1}", _loc("--set")
            )
        key, sep, raw = text.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise NdpcError(
                f"override '{text}': expected key=value (e.g. ndp.units=6)", _loc("--set")
            )
        keys = ALIASES.get(key, (key,))
        if keys[0] not in SCHEMA:
            raise NdpcError(
                f"override '{text}': unknown key '{key}'{_did_you_mean(key)}", _loc("--set")
            )
        value = _parse_override_value(raw)
        for k in keys:
            values[k] = _validate(k, value, "--set")
            sources[k] = f"override: --set {text}"


def _parse_override_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare word: a string value


def _check_cross(values: dict, path: str, sources: dict) -> None:
    """Constraints between keys."""
    lo, hi, n = values["ndp.min_units"], values["ndp.max_units"], values["ndp.units"]
    # blame the override when one of the keys involved came from --set (the file was consistent)
    overridden = [k for k in ("ndp.units", "ndp.min_units", "ndp.max_units")
                  if sources.get(k, "").startswith("override")]  # fmt: skip
    if lo > hi:
        key = next((k for k in overridden if k != "ndp.units"), "ndp.min_units")
        value = values[key]
        where = "--set" if overridden else path
        _fail(where, key, value, f"makes ndp.min_units={lo} > ndp.max_units={hi}")
    if not lo <= n <= hi:
        key = overridden[0] if overridden else "ndp.units"
        where = "--set" if overridden else path
        why = f"must be between ndp.min_units={lo} and ndp.max_units={hi}"
        if key != "ndp.units":
            why = f"leaves ndp.units={n} outside ndp.min_units={lo}..ndp.max_units={hi}"
        _fail(where, key, values[key], why)
    amx = ("host.amx_bf16_tflops", "host.amx_compute_efficiency")
    if (amx[0] in values) != (amx[1] in values):
        have, lack = amx if amx[0] in values else amx[::-1]
        where = "--set" if sources.get(have, "").startswith("override") else path
        raise NdpcError(f"missing key '{lack}' (required with {have})", _loc(where))
    if values["link.ndp.present"]:
        for key in ("link.ndp.gbps", "link.ndp.latency_us"):
            if key not in values:
                raise NdpcError(
                    f"missing key '{key}' (required when link.ndp.present = true)", _loc(path)
                )


def _locate(text: str, message: str) -> tuple[int, int] | None:
    """(line, column) of the key a message names ("key 'gpu.launch_us'"), if it is in the text."""
    m = re.search(r"key '([^']+)'", message)
    if m is None:
        return None
    *section, leaf = m.group(1).split(".")
    current: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.match(r"\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = [part.strip() for part in header.group(1).split(".")]
        elif current == section and re.match(rf"{re.escape(leaf)}\s*=", line):
            return number, raw.index(leaf) + 1
    return None


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _loc(path: str) -> Location:
    """A location that prints as just the file name (no line is known)."""
    return Location(path, name=path)


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, [*SCHEMA, *ALIASES], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _fail(path: str, key: str, value: Any, why: str) -> None:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise NdpcError(f"key '{key}': value {shown} {why}", _loc(path))
