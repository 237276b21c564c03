"""An independent checker for finished timelines.

`check_timeline(schedule, target, start, end)` re-verifies, from scratch and without the engine's
code, that a timeline is physically possible:

1. times are finite, start >= 0 and end >= start;
2. every dependency ended before (or when) its user started;
3. no resource ever runs more ops at once than its slots (ops holding a second resource, i.e. host
   transfers to an exclusive NDP unit, count on both);
4. every op lasted at least its physical minimum (`CostModel.min_times`: peak numbers only);
5. the end-to-end time is at least the physical lower bound (`ndpc.backends.bounds`).

It returns a `CheckReport`; `ndpc simulate --check` prints it and fails on violations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ndpc.backends.bounds import lower_bound
from ndpc.backends.cost import CostModel
from ndpc.backends.schedule import OpKind, Schedule
from ndpc.backends.target import Target, resource_specs

# Relative slack for float round-off (times are sums of many floats).
REL_EPS = 1e-9


@dataclass
class CheckReport:
    """Violations found, by rule (each entry: a short message naming the op(s))."""

    violations: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no rule was violated."""
        return not any(self.counts.values())

    def add(self, rule: str, count: int, examples: list[str]) -> None:
        """Record `count` violations of `rule` (keeps the first five examples)."""
        self.counts[rule] = self.counts.get(rule, 0) + count
        self.violations.setdefault(rule, []).extend(
            examples[: 5 - len(self.violations.get(rule, []))]
        )

    def summary(self) -> str:
        """One line when ok, else the counts per rule with examples."""
        if self.ok:
            return "check: ok (dependencies, capacities, physical minima, lower bound)"
        lines = [f"check: FAILED ({sum(self.counts.values())} violations)"]
        for rule, count in self.counts.items():
            if count:
                lines.append(f"  {rule}: {count}")
                lines.extend(f"    {msg}" for msg in self.violations[rule])
        return "\n".join(lines)


def check_timeline(schedule: Schedule, target: Target, start: np.ndarray, end: np.ndarray,
                   cost: CostModel | None = None) -> CheckReport:  # fmt: skip
    """Verify a timeline against the schedule and target (see module docstring)."""
    cost = cost or CostModel(target)
    report = CheckReport()
    n = len(schedule)
    start = np.asarray(start, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    if start.shape != (n,) or end.shape != (n,):
        report.add("shape", 1, [f"timeline has {start.shape}/{end.shape} entries for {n} ops"])
        return report
    if n == 0:
        return report
    scale = max(float(np.abs(end).max()), 1e-12)
    eps = REL_EPS * scale
    bad = np.flatnonzero(
        ~np.isfinite(start) | ~np.isfinite(end) | (start < -eps) | (end < start - eps)
    )
    report.add("times", len(bad), [f"op {i}: start {start[i]!r} end {end[i]!r}" for i in bad[:5]])
    _check_deps(schedule, start, end, eps, report)
    _check_capacity(schedule, target, start, end, eps, report, cost.link_shares(schedule))
    minima = cost.min_times(schedule)
    short = np.flatnonzero(end - start < minima * (1 - 1e-9) - eps)
    report.add("physical-minimum", len(short), [
        f"op {i}: lasted {end[i] - start[i]:.6g} s < minimum {minima[i]:.6g} s" for i in short[:5]
    ])  # fmt: skip
    bound = lower_bound(schedule, target, cost)["bound_s"]
    total = float(end.max())
    if total < bound * (1 - 1e-9) - eps:
        report.add("lower-bound", 1, [f"end-to-end {total:.6g} s < lower bound {bound:.6g} s"])
    return report


def _check_deps(
    schedule: Schedule, start: np.ndarray, end: np.ndarray, eps: float, report: CheckReport
) -> None:
    if not len(schedule.dep_idx):
        return
    user = np.repeat(np.arange(len(schedule)), np.diff(schedule.dep_ptr))
    dep = schedule.dep_idx
    late = np.flatnonzero(end[dep] > start[user] + eps)
    report.add("dependency", len(late), [
        f"op {user[k]} starts at {start[user[k]]:.9g} s before its dependency op {dep[k]} ends at {end[dep[k]]:.9g} s"
        for k in late[:5]
    ])  # fmt: skip


def _check_capacity(schedule: Schedule, target: Target, start: np.ndarray, end: np.ndarray, eps: float,
                    report: CheckReport, shares: np.ndarray) -> None:  # fmt: skip
    specs = resource_specs(target)
    index = {s.name: i for i, s in enumerate(specs)}
    sres = np.array([index.get(name, -1) for name in schedule.resources], dtype=np.int64)
    res = sres[schedule.resource]
    occupying = (schedule.kind != OpKind.SYNC) & (end - start > eps)
    held = np.full(len(res), -1, dtype=np.int64)
    if target.exclusive_host_access:
        host = np.isin(res, [index["pcie.h2d"], index["pcie.d2h"]]) & (schedule.unit >= 0)
        held[host] = index["ndp0"] + schedule.unit[host]
    for r, spec in enumerate(specs):
        ops = np.flatnonzero(occupying & ((res == r) | (held == r)))
        if spec.kind == "link" and len(ops):
            # bandwidth: the link was active long enough to carry its bytes at full rate
            mine = ops[res[ops] == r]
            need = float(shares[mine].sum())
            order = np.argsort(start[mine], kind="stable")
            s0, e0 = start[mine][order], end[mine][order]
            prev = np.concatenate([[-np.inf], np.maximum.accumulate(e0)[:-1]])
            active = float(np.maximum(0.0, e0 - np.maximum(s0, prev)).sum())
            if active < need * (1 - 1e-9) - eps:
                report.add(
                    "bandwidth",
                    1,
                    [
                        f"link {spec.name} moved {need * spec.bandwidth_Bps:.6g} B in {active:.6g} s of activity (> {spec.bandwidth_Bps:.6g} B/s)"
                    ],
                )
        if len(ops) <= spec.slots:
            continue
        # sweep: +1 at each start, -1 at each end; ends sort before starts at equal (eps) times
        times = np.concatenate([start[ops] + eps, end[ops]])
        delta = np.concatenate([np.ones(len(ops), np.int64), -np.ones(len(ops), np.int64)])
        order = np.lexsort((delta, times))
        level = np.cumsum(delta[order])
        over = np.flatnonzero(level > spec.slots)
        if len(over):
            t = times[order][over[0]]
            running = ops[(start[ops] <= t) & (end[ops] > t)]
            report.add("capacity", len(over), [
                f"resource {spec.name} (slots {spec.slots}) runs ops {running[:6].tolist()} at once at {t:.9g} s"
            ])  # fmt: skip
