"""The problem-level lower bound (`ndpc.backends.optimum`) attached to experiment rows.

Every batch-1 row of one (model, target, overrides, trace) gets the same `optimum_bound_s`,
`optimum_ttft_s` and `optimum_decode_s` (computed once: the bound does not depend on the policy)
and its own `gap_to_optimum` = `e2e_s / optimum_bound_s` (docs/optimum.md, docs/results.md).
A serving row gets the bound of the iterations its own run formed (`serving_optimum`,
docs/optimum.md §7): `optimum_bound_s` bounds its makespan and `gap_to_optimum` =
`makespan_s / optimum_bound_s`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ndpc.backends.optimum import optimum_bound, serving_bound
from ndpc.compiler.frontend import load_model
from ndpc.compiler.passes.pipeline import make_context
from ndpc.traces.format import load_trace

KEYS = ("optimum_bound_s", "optimum_ttft_s", "optimum_decode_s", "optimum_cold_start_s")


@lru_cache(maxsize=32)
def optimum_for(model: str, target: str, trace: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    """The bound of one problem, as row keys (cached per process)."""
    ctx = make_context(target, overrides)
    bound = optimum_bound(load_model(model), load_trace(trace), ctx.target, ctx.cost)
    return {k: v for k, v in bound.to_json().items() if k in KEYS}


SERVING_KEYS = ("optimum_bound_s", "optimum_e2e_mean_s", "optimum_ttft_mean_s",
                "optimum_cold_start_s", "optimum_throughput_tok_s", "optimum_batching")  # fmt: skip


@lru_cache(maxsize=4)
def _problem(model: str, target: str, trace: str, overrides: tuple[str, ...]):
    return load_model(model), load_trace(trace), make_context(target, overrides)


def serving_optimum(model: str, target: str, trace: str, overrides: tuple[str, ...],
                    serving: dict[str, Any], makespan_s: float) -> dict[str, Any]:  # fmt: skip
    """The serving bound of one run (its `meta.serving`) and the run's gap to it."""
    module, loaded, ctx = _problem(model, target, trace, overrides)
    bound = serving_bound(module, loaded, ctx.target, ctx.cost, serving)
    out = {k: v for k, v in bound.to_json().items() if k in SERVING_KEYS}
    m = out["optimum_bound_s"]
    out["gap_to_optimum"] = makespan_s / m if m > 0 else None
    return out


def attach_optimum(rows: Sequence[dict[str, Any]], cases: Sequence[Any]) -> None:
    """Add the bound and each row's gap to it (rows that failed to run get neither; serving
    rows already carry their own, from `serving_optimum`)."""
    for row, case in zip(rows, cases, strict=True):
        if "e2e_s" not in row or "serving" in row:
            continue
        row.update(optimum_for(case.model, case.target, case.trace, tuple(case.overrides)))
        bound = row["optimum_bound_s"]
        row["gap_to_optimum"] = row["e2e_s"] / bound if bound > 0 else None
