"""Human-facing views of traces: the stats report (text and heat map) and a token/layer table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ndpc.traces.errors import TraceError
from ndpc.traces.format import iter_chunks, load_any, meta_from_header, read_header
from ndpc.traces.stats import DEFAULT_CHUNK, StatsAccumulator, popularity_stats
from ndpc.traces.types import PathLike, Popularity


def compute_stats(path: PathLike, chunk_tokens: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """The statistics report of a trace or popularity file, streaming traces chunk by chunk."""
    header = read_header(path)
    if header["kind"] == "popularity":
        pop = load_any(path)
        assert isinstance(pop, Popularity)
        report = popularity_stats(pop)
    else:
        acc = StatsAccumulator(meta_from_header(header), _total_tokens(path, header))
        for chunk in iter_chunks(path, chunk_tokens):
            acc.update(chunk)
            del chunk  # free it before the next one is read
        report = acc.result()
    return {"file": Path(path).name, **report}


def _total_tokens(path: PathLike, header: dict[str, Any]) -> int:
    if header.get("tokens") or not str(path).endswith(".jsonl"):
        return int(header["tokens"])
    return sum(c.tokens for c in iter_chunks(path, 65536))  # .jsonl without a token count


_COLUMNS = (
    ("max_mean", "max/mean"),
    ("gini", "gini"),
    ("entropy", "Hnorm"),
    ("overlap", "overlap"),
    ("top1_repeat", "top1-rep"),
    ("next_top1_acc", "next-top1"),
    ("next_set_recall", "next-set"),
    ("prefill_decode_jsd", "JSD p/d"),
)


def format_stats(report: dict[str, Any]) -> str:
    """The report as an aligned text table: one row per layer, then the summary with noise floors."""
    cols = [
        (key, name) for key, name in _COLUMNS if report["layers"] and key in report["layers"][0]
    ]
    lines = [
        f"{report.get('file', '')}: {report['kind']} of {report.get('model') or 'unnamed model'}: "
        f"{len(report['layers'])} layers x {report['experts']} experts, top-{report['k']}, "
        f"{report['tokens']} tokens"
        + (
            f" ({report['prefill_tokens']} prefill, {report['decode_tokens']} decode, {report['requests']} requests)"
            if "requests" in report
            else ""
        ),
        "layer " + "".join(f"{name:>10}" for _, name in cols),
    ]
    for entry in report["layers"]:
        cells = "".join(_cell(entry.get(key)) for key, _ in cols)
        lines.append(f"{entry['layer']:>5} {cells}")
    lines.append("summary (mean over layers [min..max]; uniform router at this sample size):")
    for key, name in _COLUMNS:
        s = report["summary"].get(key)
        if s is None:
            continue
        extra = f"  static {s['static']:.4f}" if "static" in s else ""
        floor = f"  uniform {s['noise_floor']:.4f}" if s.get("noise_floor") is not None else ""
        lines.append(f"  {name:<10} {s['mean']:.4f} [{s['min']:.4f}..{s['max']:.4f}]{floor}{extra}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:>10.4f}" if isinstance(value, (int, float)) else f"{'-':>10}"


def plot_heatmap(report: dict[str, Any], out: PathLike, title: str = "") -> None:
    """Write a layer x expert heat map of selection counts relative to the layer mean (PNG)."""
    import matplotlib  # lazy: ~0.5 s to load, only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.array([entry["counts"] for entry in report["layers"]], dtype=np.float64)
    rel = counts / np.maximum(counts.mean(axis=1, keepdims=True), 1e-12)
    width = min(16.0, 4.0 + counts.shape[1] / 16)
    fig, ax = plt.subplots(figsize=(width, 2.0 + counts.shape[0] / 6))
    image = ax.imshow(rel, aspect="auto", cmap="viridis", interpolation="nearest")
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, ax.yaxis):  # expert ids and layers are whole numbers
        axis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("expert id")
    ax.set_ylabel("MoE layer")
    ax.set_title(f"{title}: selections / layer mean ({report['tokens']} tokens)", fontsize=10)
    fig.colorbar(image, ax=ax, label="load / mean")
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)


def parse_range(text: str, option: str) -> tuple[int, int | None]:
    """'a:b' / 'a:' / 'a' -> (start, stop); ValueError naming the option otherwise."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            start = int(parts[0])
            return start, start + 1
        if len(parts) == 2:
            return int(parts[0] or 0), int(parts[1]) if parts[1] else None
    except ValueError:
        pass
    raise ValueError(f"{option}: expected a range like 0:10, got {text!r}")


def show_trace(
    path: PathLike, tokens: tuple[int, int | None], layers: tuple[int, int | None]
) -> str:
    """A table of tokens [a, b) x layers [c, d): request, phase, then `expert:weight` per choice."""
    header = read_header(path)
    if header["kind"] != "trace":
        raise TraceError(path, "is a popularity file; use `ndpc trace stats`")
    t0, t1 = tokens
    l0, l1 = layers
    l1 = header["layers"] if l1 is None else min(l1, header["layers"])
    if not 0 <= l0 < l1:
        raise ValueError(f"--layers: empty or out of range for {header['layers']} layers")
    rows = [
        f"{'token':>7} {'req':>4} {'phase':>7}  " + "  ".join(f"layer {l}" for l in range(l0, l1))
    ]
    seen = 0
    for chunk in iter_chunks(path, 8192):
        lo, hi = max(t0 - seen, 0), chunk.tokens if t1 is None else min(t1 - seen, chunk.tokens)
        for i in range(lo, hi):
            rows.append(_token_row(chunk, i, seen + i, l0, l1))
        seen += chunk.tokens
        if t1 is not None and seen >= t1:
            break
    return "\n".join(rows)


def _token_row(chunk: Any, i: int, t: int, l0: int, l1: int) -> str:
    phase = "decode" if chunk.phase[i] else "prefill"
    cells = [
        ",".join(
            f"{e}:{w:.2f}" for e, w in zip(chunk.experts[i, l], chunk.weights[i, l], strict=True)
        )
        for l in range(l0, l1)
    ]
    return f"{t:>7} {int(chunk.request[i]):>4} {phase:>7}  " + "  ".join(cells)
