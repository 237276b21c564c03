"""Chrome trace-event JSON timelines (open in ui.perfetto.dev or chrome://tracing).

One process per device group (GPU, host CPU, NDP units, links) and one thread (track) per
resource; a resource that runs several ops at once (a shared link) gets one track per concurrent
lane so slices never partially overlap, as the viewers require. Dependencies between ops on
different tracks are drawn as flow arrows (`s`/`f` events), at most `max_flows` of them. Only the
`max_ops` earliest-starting ops are written (a prefix of the run) to keep files small; the header's
`otherData` says how many were left out. Written with the standard library only.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from backends.schedule import OpKind, Phase, Reason, Schedule

_GROUPS = (
    ("gpu", "GPU"),
    ("cpu", "Host CPU"),
    ("ndp", "NDP units"),
    ("pcie", "Host link (PCIe)"),
    ("ndplink", "NDP link"),
)


def _group(name: str) -> int:
    for pid, (prefix, _) in enumerate(_GROUPS, start=1):
        if name.startswith(prefix):
            return pid
    return len(_GROUPS) + 1


def _lanes(start: np.ndarray, end: np.ndarray) -> list[int]:
    """Greedy lane per op (ops given in start order) so ops in one lane never overlap."""
    lane_end: list[float] = []
    out = []
    for s, e in zip(start.tolist(), end.tolist(), strict=True):
        for k, last in enumerate(lane_end):
            if last <= s:
                lane_end[k] = e
                out.append(k)
                break
        else:
            lane_end.append(e)
            out.append(len(lane_end) - 1)
    return out


def _label(s: Schedule, i: int) -> str:
    parts = [OpKind(int(s.kind[i])).name.lower()]
    if s.layer[i] >= 0:
        parts.append(f"L{int(s.layer[i])}")
    if s.expert[i] >= 0:
        parts.append(f"e{int(s.expert[i])}")
    if s.shard[i] >= 0:
        parts.append(f"s{int(s.shard[i])}")
    return " ".join(parts)


def build_trace(schedule: Schedule, start: np.ndarray, end: np.ndarray, *, target_name: str = "",
                max_ops: int = 200_000, max_flows: int = 20_000) -> dict[str, Any]:  # fmt: skip
    """The trace as a JSON-ready dict (times converted to microseconds)."""
    s = schedule
    n = len(s)
    shown = np.argsort(start, kind="stable")[:max_ops]
    keep = np.zeros(n, dtype=bool)
    keep[shown] = True
    events: list[dict[str, Any]] = []
    track: dict[int, tuple[int, int]] = {}  # op -> (pid, tid)
    named: set[tuple[int, int]] = set()
    for pid, (_, title) in enumerate(_GROUPS, start=1):
        events.append(
            {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": title}}
        )
        events.append(
            {
                "ph": "M",
                "name": "process_sort_index",
                "pid": pid,
                "tid": 0,
                "args": {"sort_index": pid},
            }
        )
    for r, name in enumerate(s.resources):
        ops = shown[(s.resource[shown] == r) & (s.kind[shown] != OpKind.SYNC)]
        if len(ops) == 0:
            continue
        pid = _group(name)
        for op, lane in zip(ops.tolist(), _lanes(start[ops], end[ops]), strict=True):
            tid = r * 1000 + lane + 1
            track[op] = (pid, tid)
            if (pid, tid) not in named:
                named.add((pid, tid))
                label = name if lane == 0 else f"{name} #{lane}"
                events.append(
                    {
                        "ph": "M",
                        "name": "thread_name",
                        "pid": pid,
                        "tid": tid,
                        "args": {"name": label},
                    }
                )
                events.append(
                    {
                        "ph": "M",
                        "name": "thread_sort_index",
                        "pid": pid,
                        "tid": tid,
                        "args": {"sort_index": tid},
                    }
                )
    for i in sorted(track):
        pid, tid = track[i]
        args = {"op": i, "phase": Phase(int(s.phase[i])).name.lower(), "token": int(s.token[i])}
        for col in ("flops", "mem_bytes", "link_bytes"):
            if s.column(col)[i]:
                args[col] = float(s.column(col)[i])
        if s.unit[i] >= 0:
            args["unit"] = int(s.unit[i])
        events.append({
            "ph": "X", "name": _label(s, i), "cat": Reason(int(s.reason[i])).name.lower(),
            "ts": float(start[i]) * 1e6, "dur": float(end[i] - start[i]) * 1e6, "pid": pid, "tid": tid,
            "args": args,
        })  # fmt: skip
    flows = 0
    for i in sorted(track):
        if flows >= max_flows:
            break
        for d in s.deps(i).tolist():
            if d not in track or track[d] == track[i] or flows >= max_flows:
                continue
            flows += 1
            (pd, td), (pu, tu) = track[d], track[i]
            events.append(
                {
                    "ph": "s",
                    "name": "dep",
                    "cat": "dep",
                    "id": flows,
                    "ts": float(end[d]) * 1e6,
                    "pid": pd,
                    "tid": td,
                }
            )
            events.append({"ph": "f", "name": "dep", "cat": "dep", "id": flows, "bp": "e", "ts": float(start[i]) * 1e6, "pid": pu, "tid": tu})  # fmt: skip
    return {
        "displayTimeUnit": "ns",
        "otherData": {
            "generator": "ndpc simulate",
            "target": target_name,
            "ops": n,
            "ops_shown": int(len(track)),
            "ops_left_out": int(n - keep.sum()),
            "flows": flows,
        },  # fmt: skip
        "traceEvents": events,
    }


def write_timeline(
    path, schedule: Schedule, start: np.ndarray, end: np.ndarray, **kwargs: Any
) -> None:
    """Write `build_trace(...)` as compact JSON to `path`."""
    trace = build_trace(schedule, start, end, **kwargs)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(trace, f, separators=(",", ":"))
