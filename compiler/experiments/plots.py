"""PNG plots of experiment rows (matplotlib with the Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ndpc.compiler.cliutil import output_file


def _pyplot():
    import matplotlib  # lazy: ~0.5 s to load, only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "ndpc", "figure.dpi": 100})
    return plt


def _save(fig, path: str | Path) -> None:

    with output_file(path) as tmp:
        # "tight" grows the canvas to hold a legend placed outside the axes
        fig.savefig(tmp, format="png", metadata={"Software": None}, bbox_inches="tight")
    fig.clf()


def _legend_outside(ax) -> None:
    """The legend right of the axes, where it can cover no bar or line; none if nothing has a
    label (a series with no points is not drawn, so it gets no entry)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0)  # fmt: skip


def _integer_ticks(axis, values) -> None:
    """Integer-only ticks on `axis` when every plotted value is a whole number (unit counts)."""
    from matplotlib.ticker import FixedLocator

    values = sorted(set(values))
    if values and all(float(v).is_integer() for v in values):
        axis.set_major_locator(FixedLocator(values))


def compare_plot(rows: Sequence[dict[str, Any]], title: str, path: str | Path) -> None:
    """Two panels: end-to-end latency per policy (speedup vs MoNDE on top) and utilisation."""
    plt = _pyplot()
    ok = [r for r in rows if "error" not in r]
    names = [r["name"] + ("*" if r.get("oracle") else "") for r in ok]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 0.8 * len(ok) + 2), 7), sharex=True)
    colors = ["tab:gray" if r.get("oracle") else "tab:blue" for r in ok]
    bars = ax1.bar(names, [r["e2e_s"] for r in ok], color=colors)
    for bar, r in zip(bars, ok, strict=True):
        s = r.get("speedup_vs_monde")
        if s is not None:
            ax1.annotate(f"{s:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                         ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax1.set_ylabel("end-to-end latency (s)")
    oracle = "; * and grey: oracle, a bound" if any(r.get("oracle") for r in ok) else ""
    ax1.set_title(f"{title}\n(bar labels: speedup vs monde{oracle})", fontsize=9)
    x = range(len(ok))
    ax2.bar([i - 0.2 for i in x], [100 * r["gpu_busy"] for r in ok], 0.4, label="GPU busy")
    ax2.bar([i + 0.2 for i in x], [100 * r["ndp_busy"] for r in ok], 0.4,
            label="NDP busy, mean of units", color="tab:orange")  # fmt: skip
    ax2.errorbar([i + 0.2 for i in x], [100 * r["ndp_busy"] for r in ok],
                 yerr=[100 * r["ndp_busy_std"] for r in ok], fmt="none", ecolor="black",
                 capsize=3, label="error bar: std across NDP units")  # fmt: skip
    ax2.set_ylabel("busy (% of e2e)")
    ax2.set_xticks(list(x), names, rotation=30, ha="right")
    _legend_outside(ax2)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def lines_plot(
    series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str,
    path: str | Path, hline: float | None = None, hline_label: str | None = None,
    styles: dict[str, dict[str, Any]] | None = None,
) -> None:  # fmt: skip
    """One line per series of (x, y) points; `styles` gives a series its matplotlib style (e.g.
    one colour per model, one line style per policy). Whole-number x values get integer ticks."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs_all: list[float] = []
    for name, pts in series.items():
        if pts:
            xs, ys = zip(*pts, strict=True)
            xs_all.extend(xs)
            ax.plot(xs, ys, label=name, **{"marker": "o", **(styles or {}).get(name, {})})
    if hline is not None:
        ax.axhline(hline, color="gray", lw=0.8, ls="--", label=hline_label)
    _integer_ticks(ax.xaxis, xs_all)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def grouped_bars(
    groups: list[str], series: dict[str, list[float | None]], ylabel: str, title: str,
    path: str | Path, hline: float | None = None, hline_label: str | None = None,
    styles: dict[str, dict[str, Any]] | None = None,
) -> None:  # fmt: skip
    """Grouped bars: one group per entry of `groups`, one bar per series (None = missing; a
    series with no bar at all takes no slot and no legend entry)."""
    plt = _pyplot()
    drawn = {k: v for k, v in series.items() if any(x is not None for x in v)}
    n = max(1, len(drawn))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.5, 0.7 * len(groups) + 2)), 5))
    for j, (name, values) in enumerate(drawn.items()):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(groups))]
        ax.bar([x for x, v in zip(xs, values, strict=True) if v is not None],
               [v for v in values if v is not None], width, label=name,
               **(styles or {}).get(name, {}))  # fmt: skip
    if hline is not None:
        ax.axhline(hline, color="gray", lw=0.8, ls="--", label=hline_label)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
