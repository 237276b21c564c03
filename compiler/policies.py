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

from ndpc.ir.diagnostics import NdpcError


@dataclass(frozen=True)
class PolicySpec:
    """One named policy: the pipeline it stands for, a one-line doc, and whether it is an oracle."""

    pipeline: str
    doc: str
    oracle: bool = False


EP = "tp-split{degree=1}"  # expert parallelism: whole expert e on NDP unit e mod N

POLICIES: dict[str, PolicySpec] = {
    # --- the paper's method (arXiv 2601.03992) and its ablations ---
    "paper": PolicySpec(
        "tp-split,balance,prefetch",
        "The paper: TP over NDP units + GPU/NDP load balancing + dataset-free prefetch.",
    ),
    # --- ours: the paper's method plus measured, causal improvements (docs/policies.md) ---
    "ndpc": PolicySpec(
        "tp-split,balance{offload-resident=true host-cpu=true},"
        "prefetch{allocation=global hysteresis=16 payback=true scope=all}",
        "ndpc: the paper + a global prefetch pool of copies that pay for themselves, ranked by"
        " every request's counts, stricter swaps, resident experts offloaded to NDP, NDP experts"
        " moved to the host CPU.",
    ),
    "tp-lb": PolicySpec(
        "tp-split,balance", "Ablation: TP over NDP units + GPU/NDP load balancing, no prefetch."
    ),
    "tp": PolicySpec("tp-split", "Ablation: every expert TP-split over all NDP units, NDP only."),
    "ep": PolicySpec(
        "tp-split{degree=1}",
        "Expert parallelism: each whole expert on one NDP unit (round-robin), NDP only.",
    ),
    # --- baselines (docs/policies.md: rule, source and guesses of each) ---
    "monde": PolicySpec(
        EP + ",dispatch{rule=monde}",
        "MoNDE: EP over NDP units, hot experts to the GPU, both concurrently.",
    ),
    "monde-lb": PolicySpec(
        EP + ",dispatch{rule=monde_lb}",
        "MoNDE variant: cost-model GPU/NDP balancing in decode too (no unconditional copy).",
    ),
    "ondemand": PolicySpec(
        "stripe,dispatch{rule=ondemand}",
        "MoE-OnDemand: copy each activated expert to the GPU after the router, serially.",
    ),
    "lru": PolicySpec(
        "stripe,dispatch{rule=lru}", "On-demand copies with an LRU expert cache in GPU memory."
    ),
    "fiddler": PolicySpec(
        "stripe,fiddler-profile,dispatch{rule=fiddler}",
        "Fiddler: calibration-profiled experts resident; else min(host CPU, copy+GPU).",
    ),
    "duplex": PolicySpec(
        EP + ",dispatch{rule=duplex}",
        "Duplex: few-token experts on NDP, many-token experts on the GPU (Op/B).",
    ),
    "ctxaware": PolicySpec(
        EP + ",dispatch{rule=ctxaware}",
        "Context-aware: pin each layer's top-K prefill experts on the GPU, rest NDP.",
    ),
    "eplb": PolicySpec(
        EP + ",dispatch{rule=eplb}",
        "DeepSeek EPLB on NDP units: replicate + pack, least-loaded replica, re-plan.",
    ),
    "trimoe": PolicySpec(
        EP + ",trimoe",
        "TriMoE: hot experts to the GPU, warm to the host CPU (AMX), cold to NDP; greedy makespan.",
    ),
    "oracle-cache": PolicySpec(
        "tp-split,balance,dispatch{rule=oracle}",
        "Bound: paper's TP + balance with a Belady GPU cache filled by next-layer foresight.",
        oracle=True,
    ),
    "oracle-profile": PolicySpec(
        "tp-split,balance,fiddler-profile{calib=@trace}",
        "Bound: paper's TP + balance with the evaluated trace's most-used experts resident.",
        oracle=True,
    ),
    "oracle-opt": PolicySpec(
        "tp-split,fiddler-profile{calib=@trace},dispatch{rule=oracle_opt}",
        "Bound: the optimum LP rounded: evaluated trace's hot experts resident, GPU/NDP/CPU split.",
        oracle=True,
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
