"""The simulator's report type (`SimResult`), shared by the entry point and `metrics`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SIM_VERSION = 1


@dataclass
class SimResult:
    """The simulator's report. Times in seconds; `busy` values are fractions of `e2e_s`."""

    ttft_s: float
    tpot_mean_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    e2e_s: float
    busy: dict[str, float]
    busy_s: dict[str, float]
    ndp_busy_s: list[float]
    ndp_busy_std: float
    link_bytes: dict[str, float]
    prefetch_hits: int
    prefetch_misses: int
    prefetch_wasted_bytes: float
    bound_s: float
    efficiency: float
    bound: dict[str, Any]
    ops: int
    engine: str
    target: str
    decode_tokens: int
    requests: int
    start: np.ndarray = field(repr=False)
    end: np.ndarray = field(repr=False)
    energy: dict[str, Any] | None = None  # backends/energy.py; None when the target has no model
    # serving schedules only: per-request figures and aggregates (simulator/serving_metrics.py)
    serving: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON types (deterministic: no wall-clock figures)."""
        out: dict[str, Any] = {"sim_version": SIM_VERSION}
        for key, value in self.__dict__.items():
            if key in ("start", "end") or (key == "serving" and value is None):
                continue
            out[key] = value
        return out
