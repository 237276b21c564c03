"""Render experiment rows as aligned text tables (terminal) and markdown tables (reports)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

GIB = float(1 << 30)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _speedup(row: dict[str, Any]) -> str:
    s = row.get("speedup_vs_monde")
    if s is None:
        return "-"
    return f"{s:.2f}x" + (" (bound)" if row.get("oracle") else "")


def _gap(g: float | None) -> str:
    return "-" if g is None else f"{g:.2f}x"


COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("policy", lambda r: r["name"] + ("*" if r.get("oracle") else "")),
    ("TTFT ms", lambda r: f"{1e3 * r['ttft_s']:.1f}"),
    ("TPOT ms", lambda r: f"{1e3 * r['tpot_s']:.2f}"),
    ("e2e s", lambda r: f"{r['e2e_s']:.3f}"),
    ("vs monde", _speedup),
    ("GPU busy", lambda r: _pct(r["gpu_busy"])),
    ("NDP busy", lambda r: _pct(r["ndp_busy"])),
    ("NDP std", lambda r: f"{r['ndp_busy_std']:.3f}"),
    ("host GiB", lambda r: f"{r['host_link_bytes'] / GIB:.2f}"),
    ("prefetch hit", lambda r: _pct(r.get("prefetch_hit_rate"))),
    ("packing eff", lambda r: _pct(r["bound_efficiency"])),
    ("gap to opt", lambda r: _gap(r.get("gap_to_optimum"))),
    (
        "J/token",
        lambda r: "-" if r.get("energy_per_token_j") is None else f"{r['energy_per_token_j']:.3f}",
    ),
    ("tokens/J", lambda r: "-" if r.get("tokens_per_j") is None else f"{r['tokens_per_j']:.3f}"),
]


def cells(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cell strings; a failed row shows its error after the name."""
    header = [name for name, _ in COLUMNS]
    body = []
    for row in rows:
        if "error" in row:
            body.append([row["name"], f"n/a: {row['error']}"] + [""] * (len(COLUMNS) - 2))
        else:
            body.append([fmt(row) for _, fmt in COLUMNS])
    return header, body


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    """An aligned plain-text table (errors run past the columns)."""
    header, body = cells(rows)
    ok = [b for b in body if not b[1].startswith("n/a")]
    widths = [max(len(x) for x in col) for col in zip(header, *ok, strict=True)]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for b in body:
        if b[1].startswith("n/a"):
            lines.append(b[0].ljust(widths[0]) + "  " + b[1])
        else:
            lines.append(
                "  ".join(
                    x.rjust(w) if i else x.ljust(w)
                    for i, (x, w) in enumerate(zip(b, widths, strict=True))
                )
            )
    return "\n".join(lines)


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def policy_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The compare table as markdown."""
    header, body = cells(rows)
    return markdown_table(header, body)
