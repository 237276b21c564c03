"""Importers for recorded routing data (docs/traces.md, "Importers", states every defect rule).

Formats:
- `topk-jsonl`: one JSON record per (problem, layer, token) with `experts`, `gating_probs`,
  `token_idx` (the Mixtral decode traces of speculative-moe; decode tokens only).
- `flame-csv`: a folder of `layer<N>.csv` files, one row per token with the router probability of
  every expert (0 where not selected) (the FLAME-MoE dumps, only top-6 of top-8 kept).
- `popularity-json`: `{"expert_popularity": [[count per expert] per layer]}` (Fiddler's MMLU
  counts); a folder of such files is pooled. Gives a `Popularity`, not a trace.
- `batch-jsonl`: one JSON record per (iteration, request, position, layer) with `experts` and
  `weights` (a serving capture, e.g. vLLM-style routed experts per forward step): the trace keeps
  the recorded decode batches (`TraceMeta.iterations`), which `--batching recorded` replays.
- `ndpc-jsonl` / `ndpc-npz`: ndpc's own forms.

Defects in the source never pass silently: each importer returns an `ImportReport` whose
`defects` list says what was wrong and what the documented rule did about it.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ndpc.traces.errors import TraceError
from ndpc.traces.format import load_any
from ndpc.traces.types import Popularity, Trace, TraceMeta, experts_dtype
from ndpc.traces.validate import (
    MAX_ARRIVAL_S,
    MAX_COUNT,
    MAX_LAYERS,
    MAX_TABLE,
    MAX_WEIGHT,
    check_arrivals,
    check_sizes,
    check_trace,
    check_weight,
    is_int,
    is_number,
    parse_json,
)

FORMATS = ("topk-jsonl", "batch-jsonl", "flame-csv", "popularity-json", "ndpc-jsonl", "ndpc-npz")
BATCH_KEYS = frozenset({"iteration", "request", "position", "layer", "experts"})
PathLike = str | os.PathLike[str]


@dataclass
class ImportReport:
    """What an import found: defects (each with the rule applied) and a few counts."""

    format: str
    defects: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored in the trace header's params.import."""
        return {"format": self.format, "defects": list(self.defects), **self.info}


def detect_format(src: PathLike) -> str:
    """Guess the format of `src` from its name and first record; TraceError if it cannot."""
    path = Path(src)
    if path.is_dir():
        if sorted(path.glob("layer*.csv")):
            return "flame-csv"
        if sorted(path.glob("*.json")):
            return "popularity-json"
        raise TraceError(src, "folder holds neither layer*.csv nor *.json files; pass --format")
    if not path.exists():
        raise TraceError(src, "no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "ndpc-npz"
    if suffix == ".csv":
        return "flame-csv"
    if suffix == ".json":
        return "popularity-json"
    if suffix == ".jsonl":
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        try:
            rec = json.loads(first)
        except (ValueError, RecursionError):
            raise TraceError(
                src, "line 1 is not JSON; cannot tell the format (pass --format)", "1"
            ) from None
        if isinstance(rec, dict) and rec.get("format") == "ndpc-trace-jsonl":
            return "ndpc-jsonl"
        if isinstance(rec, dict) and {"layer", "experts", "token_idx"} <= set(rec):
            return "topk-jsonl"
        if isinstance(rec, dict) and set(rec) >= BATCH_KEYS:
            return "batch-jsonl"
    raise TraceError(src, f"cannot tell the trace format; pass --format ({', '.join(FORMATS)})")


def import_source(
    src: PathLike,
    fmt: str | None = None,
    k: int | None = None,
    experts: int | None = None,
    model: str = "",
) -> tuple[Trace | Popularity, ImportReport]:
    """Read `src` in format `fmt` (detected when None) into a Trace or Popularity + its report.

    `k` is the model's top-k when known (a source with fewer choices is reported); `experts`
    overrides the expert count inferred from the data.
    """
    fmt = fmt or detect_format(src)
    try:
        return _import(src, fmt, k, experts, model)
    except UnicodeDecodeError as err:  # (the folder importer names the layer file itself)
        raise TraceError(src, f"not UTF-8 text (byte {err.start})") from None


def _import(
    src: PathLike, fmt: str, k: int | None, experts: int | None, model: str
) -> tuple[Trace | Popularity, ImportReport]:
    if fmt == "topk-jsonl":
        return import_topk_jsonl(src, k, experts, model)
    if fmt == "batch-jsonl":
        return import_batch_jsonl(src, k, experts, model)
    if fmt == "flame-csv":
        return import_flame_csv(src, k, model)
    if fmt == "popularity-json":
        return import_popularity_json(src, k, model)
    if fmt in ("ndpc-jsonl", "ndpc-npz"):
        return load_any(src), ImportReport(fmt)
    raise TraceError(src, f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


# ------------------------------------------------------------------------------- topk-jsonl


def _topk_record(
    line: str, src: PathLike, lineno: int
) -> tuple[int, int, int, list[int], list[float]]:
    where = str(lineno)
    rec = parse_json(line, src, where)
    if not isinstance(rec, dict):
        raise TraceError(src, "record must be a JSON object", where)
    for key in ("layer", "experts", "gating_probs", "token_idx"):
        if key not in rec:
            raise TraceError(src, f"record lacks {key!r}", where)
    ex, w = rec["experts"], rec["gating_probs"]
    ints = (rec.get("problem_id", 0), rec["layer"], rec["token_idx"])
    if not all(is_int(v) and 0 <= v < 2**63 for v in ints):
        raise TraceError(src, "problem_id, layer and token_idx must be integers >= 0", where)
    if rec["layer"] > MAX_LAYERS:
        raise TraceError(src, f"layer {rec['layer']} beyond the {MAX_LAYERS} ndpc holds", where)
    if not isinstance(ex, list) or not ex or not all(is_int(e) for e in ex):
        raise TraceError(src, "'experts' must be a non-empty list of integer expert ids", where)
    bad = [e for e in ex if not 0 <= e < MAX_TABLE]
    if bad:
        raise TraceError(src, f"expert id {bad[0]} out of range [0, {MAX_TABLE})", where)
    if not isinstance(w, list) or len(w) != len(ex):
        raise TraceError(src, "'gating_probs' must hold one finite number per expert", where)
    probs = [check_weight(x, src, f"{where} ('gating_probs')") for x in w]
    if len(set(ex)) != len(ex):
        raise TraceError(src, f"expert chosen twice in {ex}", where)
    return (ints[0], ints[1], ints[2], ex, probs)


def import_topk_jsonl(
    src: PathLike, k: int | None, experts: int | None, model: str
) -> tuple[Trace, ImportReport]:
    """Decode traces recorded as one JSON record per (problem, layer, token); see module doc."""
    report = ImportReport("topk-jsonl")
    groups: dict[tuple[int, int], list[tuple[int, list[int], list[float]]]] = defaultdict(list)
    max_id, choices, records = -1, set(), 0
    with open(src, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                prob, layer, tok, ex, w = _topk_record(line, src, lineno)
                groups[(prob, layer)].append((tok, ex, w))
                max_id, choices = max(max_id, *ex), choices | {len(ex)}
                records += 1
    if not groups:
        raise TraceError(src, "no records")
    problems = sorted({p for p, _ in groups})
    layers = max(l for _, l in groups) + 1
    for p in problems:
        # (every layer below the highest needs records, so `layers` <= the record count)
        missing = [l for l in range(min(layers, records + 1)) if (p, l) not in groups]
        if missing:
            shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
            raise TraceError(src, f"problem {p} has no records at layer(s) {shown}; cannot align")
    n_experts = _experts(src, experts, max_id, report)
    kk = _choose_k(choices, k, report)
    check_sizes(layers, n_experts, kk, src, "")
    blocks = [
        _align_problem(src, p, [groups[(p, l)] for l in range(layers)], kk, report)
        for p in problems
    ]
    ex = np.concatenate([b[0] for b in blocks])
    w = np.concatenate([b[1] for b in blocks])
    req = np.concatenate([np.full(len(b[0]), i, np.int32) for i, b in enumerate(blocks)])
    report.info.update(problems=len(problems), layers=layers, tokens=len(ex))
    meta = TraceMeta(
        model,
        layers,
        n_experts,
        kk,
        "import:topk-jsonl",
        Path(src).name,
        None,
        {"import": report.as_dict()},
    )
    trace = Trace(
        meta,
        ex.astype(experts_dtype(n_experts)),
        w.astype(np.float32),
        np.ones(len(ex), np.uint8),
        req,
    )
    check_trace(trace, src)
    return trace, report


def _experts(src: PathLike, experts: int | None, max_id: int, report: ImportReport) -> int:
    if experts is not None and experts < 1:
        raise TraceError(src, f"--experts {experts} must be >= 1")
    if experts is None:
        report.info["experts_inferred"] = True
        return max_id + 1
    if max_id >= experts:
        raise TraceError(src, f"expert id {max_id} out of range for --experts {experts}")
    return experts


def _choose_k(choices: set[int], k: int | None, report: ImportReport) -> int:
    kk = min(choices)
    if len(choices) > 1:
        report.defects.append(
            f"records hold {sorted(choices)} choices; rule: keep the first {kk} (best first) of every record"
        )
    if k is not None and kk < k:
        report.defects.append(
            f"model top-k is {k} but only {kk} choices were recorded; rule: the trace has k = {kk}"
        )
    if k is not None and kk > k:
        report.defects.append(
            f"records hold {kk} choices, more than the model's top-{k}; rule: keep the first {k}"
        )
        kk = k
    return kk


def _align_problem(
    src: PathLike, prob: int, per_layer: list[list[Any]], k: int, report: ImportReport
) -> tuple[np.ndarray, np.ndarray]:
    """Stack one problem's layers; uneven per-layer counts are cut to the shortest (reported)."""
    for l, recs in enumerate(per_layer):
        recs.sort(key=lambda r: r[0])
        idx = [r[0] for r in recs]
        if idx != list(range(len(idx))):
            report.defects.append(
                f"problem {prob} layer {l}: token_idx not 0..{len(idx) - 1} without gaps; rule: records kept in token_idx order"
            )
    counts = [len(r) for r in per_layer]
    n = min(counts)
    short = {l: max(counts) - c for l, c in enumerate(counts) if c < max(counts)}
    if short:
        dropped = sum(c - n for c in counts)
        report.defects.append(
            f"problem {prob}: uneven per-layer token counts {min(counts)}..{max(counts)} "
            f"(layers short by: {short}); rule: every layer cut to the first {n} tokens, "
            f"{dropped} records dropped; alignment across layers after a gap is not guaranteed"
        )
    ex = np.array([[r[1][:k] for r in recs[:n]] for recs in per_layer]).transpose(1, 0, 2)
    w = np.array([[r[2][:k] for r in recs[:n]] for recs in per_layer]).transpose(1, 0, 2)
    return ex, w


# ------------------------------------------------------------------------------ batch-jsonl

PHASES = {0: 0, 1: 1, "prefill": 0, "decode": 1}


def _batch_record(line: str, src: PathLike, lineno: int) -> tuple:
    """(iteration, request, position, layer, experts, weights, phase or None, arrival or None)."""
    where = str(lineno)
    rec = parse_json(line, src, where)
    if not isinstance(rec, dict):
        raise TraceError(src, "record must be a JSON object", where)
    for key in ("iteration", "request", "position", "layer", "experts", "weights"):
        if key not in rec:
            raise TraceError(src, f"record lacks {key!r}", where)
    ints = (rec["iteration"], rec["request"], rec["position"], rec["layer"])
    if not all(is_int(v) and 0 <= v < 2**31 for v in ints):
        raise TraceError(src, "iteration, request, position and layer must be integers in "
                         "[0, 2**31)", where)  # fmt: skip
    if rec["layer"] > MAX_LAYERS:
        raise TraceError(src, f"layer {rec['layer']} beyond the {MAX_LAYERS} ndpc holds", where)
    ex, w = rec["experts"], rec["weights"]
    if not isinstance(ex, list) or not ex or not all(is_int(e) for e in ex):
        raise TraceError(src, "'experts' must be a non-empty list of integer expert ids", where)
    bad = [e for e in ex if not 0 <= e < MAX_TABLE]
    if bad:
        raise TraceError(src, f"expert id {bad[0]} out of range [0, {MAX_TABLE})", where)
    if len(set(ex)) != len(ex):
        raise TraceError(src, f"expert chosen twice in {ex}", where)
    if not isinstance(w, list) or len(w) != len(ex):
        raise TraceError(src, "'weights' must hold one finite number per expert", where)
    weights = [check_weight(x, src, f"{where} ('weights')") for x in w]
    phase = rec.get("phase")
    if phase is not None and (isinstance(phase, bool) or phase not in PHASES):
        raise TraceError(src, f"'phase' must be 0, 1, \"prefill\" or \"decode\", got {phase!r}",
                         where)  # fmt: skip
    arrival = rec.get("arrival_s")
    if arrival is not None and (not is_number(arrival) or not 0 <= arrival <= MAX_ARRIVAL_S):
        raise TraceError(src, f"'arrival_s' = {arrival!r} must be a time in "
                         f"[0, {MAX_ARRIVAL_S:g}] s", where)  # fmt: skip
    return (*ints, ex, weights, None if phase is None else PHASES[phase],
            None if arrival is None else float(arrival))  # fmt: skip


def import_batch_jsonl(
    src: PathLike, k: int | None, experts: int | None, model: str
) -> tuple[Trace, ImportReport]:
    """A serving capture, one record per (iteration, request, position, layer); keeps the
    recorded iterations (docs/traces.md, "batch-jsonl")."""
    report = ImportReport("batch-jsonl")
    tokens: dict[tuple[int, int], dict[str, Any]] = {}  # (request, position) -> its records
    arrivals: dict[int, float] = {}
    max_id, choices, max_layer = -1, set(), -1
    with open(src, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            it, req, pos, layer, ex, w, phase, arrival = _batch_record(line, src, lineno)
            tok = tokens.setdefault((req, pos), {"iteration": it, "phase": phase, "layers": {},
                                                 "line": lineno})  # fmt: skip
            if tok["iteration"] != it:
                raise TraceError(src, f"request {req} position {pos} recorded in iterations "
                                 f"{tok['iteration']} and {it}", str(lineno))  # fmt: skip
            if phase is not None and tok["phase"] not in (None, phase):
                raise TraceError(src, f"request {req} position {pos}: two phases", str(lineno))
            tok["phase"] = phase if phase is not None else tok["phase"]
            if layer in tok["layers"]:
                raise TraceError(src, f"request {req} position {pos} layer {layer} recorded twice",
                                 str(lineno))  # fmt: skip
            tok["layers"][layer] = (ex, w)
            if arrival is not None and arrivals.setdefault(req, arrival) != arrival:
                raise TraceError(src, f"request {req}: two arrival times", str(lineno))
            max_id, choices = max(max_id, *ex), choices | {len(ex)}
            max_layer = max(max_layer, layer)
    if not tokens:
        raise TraceError(src, "no records")
    layers = max_layer + 1
    n_experts = _experts(src, experts, max_id, report)
    kk = _choose_k(choices, k, report)
    check_sizes(layers, n_experts, kk, src, "")
    requests = sorted({r for r, _ in tokens})
    if arrivals and len(arrivals) != len(requests):
        miss = next(r for r in requests if r not in arrivals)
        raise TraceError(src, f"request {miss} has no 'arrival_s' while others have one")
    if not arrivals:
        report.info["arrivals"] = "none recorded: every request arrives at 0 s"
    rows_ex, rows_w, rows_phase, rows_req, row_iter = [], [], [], [], []
    by_request: dict[int, list[int]] = defaultdict(list)
    for r, p in tokens:
        by_request[r].append(p)
    for r in requests:
        positions = sorted(by_request[r])
        if positions != list(range(len(positions))):
            gap = next(i for i, p in enumerate(positions) if p != i)
            raise TraceError(src, f"request {r} lacks position {gap} (positions must be 0, 1, "
                             "2, ... without gaps)")  # fmt: skip
        first_it = tokens[(r, 0)]["iteration"]
        last_it, seen_decode = -1, False
        for p in positions:
            tok = tokens[(r, p)]
            where = str(tok["line"])
            missing = [l for l in range(layers) if l not in tok["layers"]]
            if missing:
                raise TraceError(src, f"request {r} position {p} lacks layer {missing[0]}", where)
            if tok["iteration"] < last_it:
                raise TraceError(src, f"request {r} position {p} is in iteration "
                                 f"{tok['iteration']}, before position {p - 1}'s", where)  # fmt: skip
            last_it = tok["iteration"]
            # unless recorded, a request's first iteration is its prefill, later ones decode
            ph = tok["phase"] if tok["phase"] is not None else int(tok["iteration"] != first_it)
            if ph == 0 and seen_decode:
                raise TraceError(src, f"request {r} position {p}: prefill after decode", where)
            seen_decode |= ph == 1
            rows_ex.append([tok["layers"][l][0][:kk] for l in range(layers)])
            rows_w.append([tok["layers"][l][1][:kk] for l in range(layers)])
            rows_phase.append(ph)
            rows_req.append(r)
            row_iter.append(tok["iteration"])
    iterations = _recorded_iterations(src, rows_req, rows_phase, row_iter)
    report.info.update(requests=len(requests), layers=layers, tokens=len(rows_ex),
                       iterations=len(iterations),
                       batch_max=max(len(it) for it in iterations))  # fmt: skip
    meta = TraceMeta(model, layers, n_experts, kk, "import:batch-jsonl", Path(src).name, None,
                     {"import": report.as_dict()},
                     tuple(arrivals.get(r, 0.0) for r in requests), iterations)  # fmt: skip
    trace = Trace(meta, np.array(rows_ex).astype(experts_dtype(n_experts)),
                  np.array(rows_w, np.float32), np.array(rows_phase, np.uint8),
                  np.array(rows_req, np.int32))  # fmt: skip
    check_trace(trace, src)
    check_arrivals(trace, src)
    return trace, report


def _recorded_iterations(src, rows_req, rows_phase, row_iter):
    """Per recorded iteration (in order), its slices (first row, tokens): a request's rows of
    one iteration must be one phase (they are consecutive: positions in iteration order)."""
    slices: dict[int, list[list[int]]] = {}
    for row, (r, ph, it) in enumerate(zip(rows_req, rows_phase, row_iter, strict=True)):
        cur = slices.setdefault(it, [])
        if cur and cur[-1][2] == r:
            if rows_phase[cur[-1][0]] != ph:
                raise TraceError(src, f"iteration {it}: request {r} has prefill and decode tokens")
            cur[-1][1] += 1
        else:
            cur.append([row, 1, r])
    return tuple(tuple((f, n) for f, n, _ in slices[it]) for it in sorted(slices))


# ------------------------------------------------------------------------------- flame-csv


def _layer_files(src: PathLike) -> list[Path]:
    path = Path(src)
    if path.is_file():
        return [path]
    files = sorted(path.glob("layer*.csv"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not files:
        raise TraceError(src, "no layer*.csv files")
    return files


def _read_prob_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """token ids [T] and probabilities [T, E] of one layer file, validated line by line."""
    try:
        return _parse_prob_csv(path)
    except UnicodeDecodeError as err:
        raise TraceError(path, f"not UTF-8 text (byte {err.start})") from None


def _parse_prob_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            return _parse_prob_rows(reader, path)
        except csv.Error as err:  # e.g. a field over the csv module's 131,072-character limit
            raise TraceError(path, f"not valid CSV: {err}", str(reader.line_num)) from None


def _parse_prob_rows(reader: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    head = next(reader, None)
    if (
        not head
        or len(head) < 3
        or head[1].strip() != "token_id"
        or not head[2].startswith("expert_")
    ):
        raise TraceError(path, "header must be layer_id,token_id,expert_0,...", "1")
    n_exp = len(head) - 2
    if n_exp > MAX_TABLE:
        raise TraceError(path, f"{n_exp} expert columns; ndpc holds at most {MAX_TABLE}", "1")
    tokens, rows = [], []
    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != n_exp + 2:
            raise TraceError(path, f"{len(row)} fields, header has {n_exp + 2}", str(lineno))
        try:
            token = int(row[1])
            vals = np.array(row[2:], dtype=np.float64)
        except ValueError:
            raise TraceError(
                path, "token_id must be an integer and probabilities numbers", str(lineno)
            ) from None
        if not 0 <= token < 2**63:
            raise TraceError(path, f"token_id {token} must be in [0, 2**63)", str(lineno))
        if not (np.isfinite(vals) & (vals >= 0) & (vals <= MAX_WEIGHT)).all():
            raise TraceError(
                path,
                f"probabilities must be finite and in [0, {MAX_WEIGHT:.4g}]",
                str(lineno),
            )
        tokens.append(token)
        if not (vals > 0).any():
            raise TraceError(path, "row selects no expert", str(lineno))
        rows.append(vals)
    if not rows:
        raise TraceError(path, "no token rows")
    return np.array(tokens, dtype=np.int64), np.stack(rows)


def import_flame_csv(src: PathLike, k: int | None, model: str) -> tuple[Trace, ImportReport]:
    """Per-layer probability CSVs (one row per token) -> a prefill trace; see module doc."""
    report = ImportReport("flame-csv")
    files = _layer_files(src)
    layers = [_read_prob_csv(f) for f in files]
    n_exp = {p.shape[1] for _, p in layers}
    if len(n_exp) > 1:
        raise TraceError(src, f"layer files disagree on the expert count: {sorted(n_exp)}")
    common = set(layers[0][0].tolist())
    for toks, _ in layers[1:]:
        common &= set(toks.tolist())
    sizes = [len(t) for t, _ in layers]
    if any(s != len(common) for s in sizes):
        report.defects.append(
            f"layers hold {min(sizes)}..{max(sizes)} tokens; rule: keep the {len(common)} token ids present in every layer"
        )
    keep = np.array(sorted(common), dtype=np.int64)
    probs = np.stack(
        [
            p[np.searchsorted(t, keep, sorter=np.argsort(t))] if not np.array_equal(t, keep) else p
            for t, p in layers
        ],
        axis=1,
    )
    nz = (probs > 0).sum(axis=2)
    kk = _choose_k(set(np.unique(nz).tolist()), k, report)
    ex = np.argsort(-probs, axis=2, kind="stable")[:, :, :kk]
    w = np.take_along_axis(probs, ex, axis=2)
    E = probs.shape[2]
    report.info.update(layers=len(files), tokens=len(keep), files=[f.name for f in files])
    meta = TraceMeta(
        model,
        len(files),
        E,
        kk,
        "import:flame-csv",
        Path(src).name,
        None,
        {"import": report.as_dict()},
    )
    n = len(keep)
    trace = Trace(
        meta,
        ex.astype(experts_dtype(E)),
        w.astype(np.float32),
        np.zeros(n, np.uint8),
        np.zeros(n, np.int32),
    )
    check_trace(trace, src)
    return trace, report


# ------------------------------------------------------------------------------- popularity-json


def import_popularity_json(
    src: PathLike, k: int | None, model: str
) -> tuple[Popularity, ImportReport]:
    """Per-layer expert counts (one file, or a folder of files pooled) -> Popularity."""
    report = ImportReport("popularity-json")
    path = Path(src)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise TraceError(src, "no .json files")
    if k is None:
        raise TraceError(
            src, "popularity counts do not say the model's top-k; pass --k (or --model)"
        )
    if k < 1:
        raise TraceError(src, f"--k {k} must be >= 1")
    tables = [_read_popularity(f) for f in files]
    shapes = {t.shape for t in tables}
    if len(shapes) > 1:
        raise TraceError(src, f"files disagree on [layers, experts]: {sorted(shapes)}")
    check_sizes(*tables[0].shape, k, src, "")
    if sum(int(t.sum(axis=1).max()) for t in tables) > MAX_COUNT:
        raise TraceError(src, f"pooled per-layer counts exceed {MAX_COUNT} (2**53)")
    counts = np.sum(tables, axis=0)
    sums = counts.sum(axis=1)
    if len(set(sums.tolist())) > 1:
        report.defects.append(
            f"per-layer selection totals differ ({sums.min()}..{sums.max()}); rule: counts kept as recorded, tokens = layer-0 total / k"
        )
    if sums[0] % k:
        report.defects.append(
            f"layer-0 total {sums[0]} is not a multiple of k={k}; rule: tokens rounded"
        )
    report.info.update(
        files=[f.name for f in files], layers=counts.shape[0], tokens=int(round(sums[0] / k))
    )
    L, E = counts.shape
    meta = TraceMeta(
        model, L, E, k, "import:popularity-json", path.name, None, {"import": report.as_dict()}
    )
    return Popularity(meta, counts.astype(np.int64)), report


def _read_popularity(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TraceError(path, f"not UTF-8 text (byte {err.start})") from None
    data = parse_json(text, path)
    table = data.get("expert_popularity") if isinstance(data, dict) else None
    if not isinstance(table, list) or not table or not all(isinstance(r, list) for r in table):
        raise TraceError(
            path, "'expert_popularity' must be a list of per-layer count lists", "expert_popularity"
        )
    width = len(table[0])
    for l, row in enumerate(table):
        if len(row) != width or not all(is_int(c) and c >= 0 for c in row):
            raise TraceError(
                path, f"layer {l}: expected {width} integer counts >= 0", f"expert_popularity[{l}]"
            )
        if sum(row) > MAX_COUNT:
            raise TraceError(
                path, f"layer {l}: counts sum beyond {MAX_COUNT} (2**53)", f"expert_popularity[{l}]"
            )
    return np.array(table, dtype=np.int64)
