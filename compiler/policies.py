"""Policies as pipelines: `--policy NAME` is shorthand for a pass pipeline string.

Each `PolicySpec` names a pipeline (plain comma-separated pass list, options in braces, e.g.
`tp-split{degree=1}`), a one-line description for `--help`/`ndpc passes`, and `oracle`: True for
policies that look at the future of the trace (`oracle-*`), which are reported as bounds only.
Pass options left out take their defaults from the target (e.g. `units` = its NDP unit count).
Baseline policies add their entries here (one line each).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ir.diagnostics import NdpcError


@dataclass(frozen=True)
class PolicySpec:
    """One named policy: the pipeline it stands for, a one-line doc, and whether it is an oracle."""

    pipeline: str
    doc: str
    oracle: bool = False


POLICIES: dict[str, PolicySpec] = {
    # --- the paper's method (arXiv 2601.03992) and its ablations ---
    "paper": PolicySpec(
        "tp-split,balance,prefetch",
        "The paper: TP over NDP units + GPU/NDP load balancing + dataset-free prefetch.",
    ),
    "tp-lb": PolicySpec(
        "tp-split,balance", "Ablation: TP over NDP units + GPU/NDP load balancing, no prefetch."
    ),
    "tp": PolicySpec("tp-split", "Ablation: every expert TP-split over all NDP units, NDP only."),
    "ep": PolicySpec(
        "tp-split{degree=1}",
        "Expert parallelism: each whole expert on one NDP unit (round-robin), NDP only.",
    ),
}


def get_policy(name: str) -> PolicySpec:
    """The policy called `name`; unknown names raise NdpcError with a did-you-mean."""
    spec = POLICIES.get(name)
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name, list(POLICIES), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise NdpcError(f"unknown policy '{name}'{hint} (known: {', '.join(sorted(POLICIES))})")
