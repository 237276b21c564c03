"""Per-layer summaries of a model module (`ndpc import --summary / --json`).

Read from the IR (so .onnx, .ndpir and zoo names summarise alike). `weight_bytes` counts a layer's
feed-forward weights: routed experts, router gate and shared experts for an MoE layer, the MLP for a
dense layer (attention and embeddings are not counted).
"""

from __future__ import annotations

from dataclasses import dataclass

from ndpc.ir.core import Module
from ndpc.ir.ops import AttentionOp, ExpertShardsOp, ExpertsOp, MlpOp, RouterOp, SharedExpertsOp


@dataclass
class LayerRow:
    """One decoder layer's line of the summary."""

    layer: int
    kind: str = "dense"
    experts: int = 0
    top_k: int = 0
    d_model: int = 0
    d_ff: int = 0
    shared_experts: int = 0
    shared_d_ff: int = 0
    routing: str = ""
    activation: str = ""
    attention: str = ""
    weight_bytes: int = 0
    source_node: str = ""


def layer_rows(module: Module) -> list[LayerRow]:
    """One row per decoder layer, in layer order."""
    rows: dict[int, LayerRow] = {}
    for op in module.walk():
        layer = getattr(op, "layer", None)
        if layer is None or layer < 0:
            continue
        row = rows.setdefault(layer, LayerRow(layer))
        if isinstance(op, AttentionOp):
            row.attention = f"{op.kind.value} {op.heads}/{op.kv_heads}x{op.head_dim}"
        elif isinstance(op, MlpOp):
            row.d_model, row.d_ff = op.ffn.d_model, op.ffn.d_ff
            row.activation = op.ffn.activation.value
            row.weight_bytes += op.ffn.weight_bytes
            row.source_node = str(op.loc)
        elif isinstance(op, RouterOp):
            row.kind, row.experts, row.top_k = "moe", op.experts, op.router.k
            row.routing = op.router.rule.value
            row.source_node = str(op.loc)
        elif isinstance(op, ExpertsOp | ExpertShardsOp):
            row.d_model, row.d_ff = op.ffn.d_model, op.ffn.d_ff
            row.activation = op.ffn.activation.value
            row.weight_bytes += op.experts * op.ffn.weight_bytes
            row.weight_bytes += int(op.experts * op.ffn.d_model * op.ffn.dtype.nbytes)  # gate
        elif isinstance(op, SharedExpertsOp):
            row.shared_experts, row.shared_d_ff = op.count, op.ffn.d_ff
            row.weight_bytes += op.count * op.ffn.weight_bytes
    return [rows[i] for i in sorted(rows)]


def summary_json(module: Module, source: str, notes: tuple[str, ...] = ()) -> dict:
    """The `--json` object: model facts, `layers` (one object per decoder layer) and totals."""
    rows = layer_rows(module)
    layers = [vars(r).copy() for r in rows]
    moe = [r for r in rows if r.kind == "moe"]
    return {
        "model": module.name,
        "source": source,
        "layers": layers,
        "moe_layers": len(moe),
        "dense_layers": [r.layer for r in rows if r.kind == "dense"],
        "total_weight_bytes": sum(r.weight_bytes for r in rows),
        "notes": list(notes),
    }


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def summary_text(module: Module, source: str, notes: tuple[str, ...] = ()) -> str:
    """A fixed-width per-layer table followed by totals and the importer's notes."""
    rows = layer_rows(module)
    head = (
        "layer",
        "kind",
        "experts",
        "k",
        "d_model",
        "d_ff",
        "shared",
        "routing",
        "attention",
        "weights",
    )
    table = [head]
    for r in rows:
        shared = f"{r.shared_experts}x{r.shared_d_ff}" if r.shared_experts else "-"
        table.append(
            (
                str(r.layer),
                r.kind,
                str(r.experts or "-"),
                str(r.top_k or "-"),
                str(r.d_model),
                str(r.d_ff),
                shared,
                r.routing or "-",
                r.attention or "-",
                _size(r.weight_bytes),
            )
        )
    widths = [max(len(row[c]) for row in table) for c in range(len(head))]
    lines = [
        f"model {module.name} ({source}): {len(rows)} layers, "
        f"{sum(r.kind == 'moe' for r in rows)} MoE"
    ]
    for row in table:
        lines.append(
            "  ".join(
                cell.rjust(w) if cell[:1].isdigit() else cell.ljust(w)
                for cell, w in zip(row, widths, strict=True)
            ).rstrip()
        )
    lines.append(f"total feed-forward weights: {_size(sum(r.weight_bytes for r in rows))}")
    lines.extend(f"note: {n}" for n in notes)
    return "\n".join(lines) + "\n"
