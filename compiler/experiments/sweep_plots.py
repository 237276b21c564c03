"""Plots of a sweep's results table: a line per group, a Pareto front, a heat map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ndpc.compiler.experiments.plots import _pyplot, _save
from ndpc.ir.diagnostics import NdpcError


def filter_rows(rows: list[dict[str, Any]], where: Sequence[str]) -> list[dict[str, Any]]:
    """Rows whose columns match every `COL=VALUE` (compared as text)."""
    for cond in where:
        col, sep, value = cond.partition("=")
        if not sep:
            raise NdpcError(f"--where '{cond}': expected COL=VALUE")
        _need(rows, col)
        rows = [r for r in rows if _text(r.get(col)) == value]
    return rows


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "" if v is None else str(v)


def _need(rows: list[dict[str, Any]], col: str) -> None:
    if rows and col not in rows[0]:
        raise NdpcError(f"no column '{col}' in the table (columns: {', '.join(rows[0])})")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both (lower is better on both axes), by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(set(points)):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _key(v: Any):
    return (0, v, "") if isinstance(v, int | float) and not isinstance(v, bool) else (1, 0, str(v))


def plot_sweep(rows: list[dict[str, Any]], kind: str, x: str, y: str, z: str, by: str, path: str) -> None:  # fmt: skip
    """Write the `kind` plot of `rows` to `path` (PNG)."""
    ok = [r for r in rows if not r.get("error")]
    if not ok:
        raise NdpcError("no successful points to plot")
    for col in (x, y) + ((z,) if kind == "heatmap" else (by,)):
        _need(ok, col)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if kind == "heatmap":
        xs = sorted({r[x] for r in ok}, key=_key)
        ys = sorted({r[y] for r in ok}, key=_key)
        cells: dict[tuple, list[float]] = {}
        for r in ok:
            if r.get(z) is not None:
                cells.setdefault((r[x], r[y]), []).append(float(r[z]))
        grid = [[(sum(v) / len(v)) if (v := cells.get((a, b))) else float("nan") for a in xs]
                for b in ys]  # fmt: skip
        im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
        for i, line in enumerate(grid):
            for j, val in enumerate(line):
                if val == val:
                    ax.text(j, i, f"{val:.3g}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=30, ha="right")
        ax.set_yticks(range(len(ys)), [str(v) for v in ys])
        fig.colorbar(im, ax=ax, label=f"{z} (mean over other axes)")
    else:
        groups: dict[Any, list[tuple[float, float]]] = {}
        for r in ok:
            if r.get(x) is None or r.get(y) is None:
                continue
            groups.setdefault(r.get(by), []).append((r[x], float(r[y])))
        for name in sorted(groups, key=_key):
            pts = groups[name]
            if kind == "pareto":
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, alpha=0.5,
                           label=str(name))  # fmt: skip
            else:
                ax.plot(*_mean_line(pts), marker="o", label=str(name))
        if kind == "pareto":
            allpts = [(float(a), b) for pts in groups.values() for a, b in pts]
            front = pareto_front(allpts)
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="k",
                    label="Pareto front")  # fmt: skip
        ax.legend(fontsize=8, title=by)
        ax.grid(alpha=0.3)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _mean_line(pts: list[tuple[Any, float]]) -> tuple[list, list[float]]:
    """Points averaged over equal x (the other axes), sorted by x."""
    acc: dict[Any, list[float]] = {}
    for a, b in pts:
        acc.setdefault(a, []).append(b)
    xs = sorted(acc, key=_key)
    return xs, [sum(acc[a]) / len(acc[a]) for a in xs]
