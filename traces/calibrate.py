"""Check a generator preset against its calibration targets (used by tests and `trace gen --check`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ndpc.traces.generate import PRESETS, Preset, Target, iter_generate
from ndpc.traces.stats import StatsAccumulator


@dataclass(frozen=True)
class TargetCheck:
    """One target, the value the generator produced, and whether it is within tolerance."""

    target: Target
    got: float

    @property
    def ok(self) -> bool:
        """Whether the value is within the target's tolerance."""
        return abs(self.got - self.target.value) <= self.target.tol


def stat_value(report: dict[str, Any], stat: str) -> float:
    """Look up a target's statistic in a `trace stats` report.

    `a.b` = report["summary"][a][b]; `layer<i>.key` = report["layers"][i][key] (i may be negative);
    `top16_share` = mean over layers of the share of selections going to the 16 most used experts.
    """
    if stat == "top16_share":
        counts = np.array([entry["counts"] for entry in report["layers"]], dtype=np.float64)
        top = -np.sort(-counts, axis=1)[:, :16].sum(axis=1)
        return float((top / counts.sum(axis=1)).mean())
    head, key = stat.split(".", 1)
    if head.startswith("layer"):
        return float(report["layers"][int(head[5:])][key])
    return float(report["summary"][head][key])


def check_preset(preset: str | Preset, seed: int = 0) -> list[TargetCheck]:
    """Generate the preset's reference trace and compare its statistics with every target."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    ref = p.reference
    chunks = iter_generate(
        ref["layers"],
        ref["experts"],
        ref["k"],
        ref["tokens"],
        ref["prompt"],
        seed,
        ref["requests"],
        p,
    )
    acc: StatsAccumulator | None = None
    for chunk in chunks:
        if acc is None:
            acc = StatsAccumulator(chunk.meta, ref["tokens"] * ref["requests"])
        acc.update(chunk)
    assert acc is not None
    report = acc.result()
    return [TargetCheck(t, stat_value(report, t.stat)) for t in p.targets]
