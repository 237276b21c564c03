"""The results table of a sweep: one row per point, written as CSV and Parquet.

Columns: one per axis (its name as written in the spec), then the point's model, target,
policy, units, trace parameters, every figure (`METRICS`), `error` and the input hashes: each a
function of the inputs alone. Column types are fixed (not guessed from the data), so the table of
a sweep is the same bytes whichever executor filled it. The one measured figure, the seconds each
point took, goes to a side file (`timings.csv`: `key, wall_s`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ndpc.compiler.cliutil import output_files
from ndpc.ir.diagnostics import NdpcError

# (column, type) of the figures, in table order
METRICS: tuple[tuple[str, str], ...] = (
    ("e2e_s", "float"), ("ttft_s", "float"), ("tpot_s", "float"), ("tpot_p99_s", "float"),
    ("energy_per_token_j", "float"), ("tokens_per_j", "float"), ("energy_j", "float"),
    ("gpu_busy", "float"), ("cpu_busy", "float"), ("ndp_busy", "float"),
    ("ndp_busy_std", "float"), ("host_link_bytes", "float"), ("pcie_h2d_bytes", "float"),
    ("pcie_d2h_bytes", "float"), ("ndplink_bytes", "float"), ("prefetch_hit_rate", "float"),
    ("bound_s", "float"), ("bound_efficiency", "float"), ("optimum_bound_s", "float"),
    ("gap_to_optimum", "float"), ("ops", "int"), ("oracle", "bool"),
    ("pipeline", "str"), ("check", "str"),
)  # fmt: skip
POINT: tuple[tuple[str, str], ...] = (
    ("model", "str"), ("target", "str"), ("policy", "str"), ("units", "int"),
    ("overrides", "str"), ("trace", "str"),
)  # fmt: skip
TAIL: tuple[tuple[str, str], ...] = (
    ("error", "str"), ("key", "str"), ("model_hash", "str"), ("target_hash", "str"),
    ("trace_hash", "str"),
)  # fmt: skip


def _axis_type(values: Sequence[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float"
    return "str"


def table_rows(spec, points, jobs, outcome) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """The table's (column, type) list and one dict per point."""
    axes = [(a, _axis_type(spec.axes[a])) for a in spec.axes]
    names = {a for a, _ in axes}
    columns = axes + [c for c in POINT + METRICS + TAIL if c[0] not in names]
    out = []
    for point, job, row in zip(points, jobs, outcome.rows, strict=True):
        links = row.get("link_bytes") or {}
        gen = job.gen
        trace = (f"gen:{gen.model}:{gen.prompt}+{gen.output}:s{gen.seed}" if gen
                 else Path(job.case.trace).name)  # fmt: skip
        record = {
            **row, **point,
            "overrides": " ".join(job.case.overrides),
            "trace": trace,
            "pcie_h2d_bytes": links.get("pcie.h2d"),
            "pcie_d2h_bytes": links.get("pcie.d2h"),
            "ndplink_bytes": links.get("ndplink"),
            "key": job.key,
            "model_hash": job.inputs.get("model"),
            "target_hash": job.inputs.get("target"),
            "trace_hash": job.inputs.get("trace"),
            "check": _verdict(row.get("check")),
        }  # fmt: skip
        out.append({c: _cast(record.get(c), t) for c, t in columns})
    return columns, out


def _verdict(check: Any) -> str | None:
    """The checker's verdict as one cell: "ok" or "N violations" (None when not checked)."""
    if isinstance(check, dict):
        return "ok" if check.get("ok") else f"{check.get('violations', '?')} violations"
    return check


def _cast(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    if kind == "bool":
        return bool(value)
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def csv_text(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c for c, _ in columns])
    for row in rows:
        writer.writerow([_cell(row[c]) for c, _ in columns])
    return buf.getvalue()


def write_tables(out_dir: Path, columns, rows, wall_s: dict[str, float]) -> list[Path]:
    """DIR/results.csv, DIR/results.parquet and DIR/timings.csv (each point's `key, wall_s`),
    committed together (all or nothing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "str": pa.string()}
    schema = pa.schema([(c, kinds[t]) for c, t in columns])
    table = pa.table({c: [r[c] for r in rows] for c, _ in columns}, schema=schema)
    csv_path, pq_path = out_dir / "results.csv", out_dir / "results.parquet"
    timings_path = out_dir / "timings.csv"
    timings = [{"key": r["key"], "wall_s": wall_s.get(r["key"])} for r in rows]
    with output_files() as outputs:  # all appear together, or none
        outputs.path(csv_path).write_text(csv_text(columns, rows), encoding="utf-8")
        pq.write_table(table, outputs.path(pq_path), compression="zstd")
        outputs.path(timings_path).write_text(
            csv_text([("key", "str"), ("wall_s", "float")], timings), encoding="utf-8"
        )
    return [csv_path, pq_path, timings_path]


def read_table(out_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a sweep's results (Parquet when present, else CSV)."""
    d = Path(out_dir)
    pq_path, csv_path = d / "results.parquet", d / "results.csv"
    if pq_path.is_file():
        import pyarrow.parquet as pq

        try:
            return pq.read_table(pq_path).to_pylist()
        except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds for bad files
            raise NdpcError(f"{pq_path}: not a readable Parquet table: {err}") from None
    if csv_path.is_file():
        with csv_path.open(encoding="utf-8", newline="") as f:
            return [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(f)]
    raise NdpcError(f"{d}: no results.parquet or results.csv (run `ndpc sweep SPEC --out {d}`)")


def _parse(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)
