"""Chrome trace-event JSON timelines (open in ui.perfetto.dev or chrome://tracing).

One process per device group (GPU, host CPU, NDP units, links) and one thread (track) per
resource; a resource that runs several ops at once (a shared link) gets one track per concurrent
lane so slices never partially overlap, as the viewers require. Dependencies between ops on
different tracks are drawn as flow arrows (`s`/`f` events), at most `max_flows` of them. Only the
`max_ops` earliest-starting ops are written (a prefix of the run) to keep files small; the header's
`otherData` counts them: `ops` = `ops_shown` + `ops_left_out` + `ops_sync` (zero-length SYNC
barriers, never drawn). Written with the standard library only.
"""

from __future__ import annotations

import gc
import json
from typing import Any

import numpy as np

from ndpc.backends.energy import has_energy_model, power_track, static_power_w
from ndpc.backends.schedule import OpKind, Phase, Reason, Schedule
from ndpc.backends.simulator.serving_metrics import request_figures

_GROUPS = (
    ("gpu", "GPU"),
    ("cpu", "Host CPU"),
    ("ndp", "NDP units"),
    ("pcie", "Host link (PCIe)"),
    ("ndplink", "NDP link"),
)


def _group(name: str) -> int:
    """The process of resource `name`: the group with the longest matching prefix ("ndplink" is
    the NDP link, not one of the NDP units "ndp0", "ndp1", ...)."""
    best, pid_best = -1, len(_GROUPS) + 1
    for pid, (prefix, _) in enumerate(_GROUPS, start=1):
        if name.startswith(prefix) and len(prefix) > best:
            best, pid_best = len(prefix), pid
    return pid_best


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


def build_trace(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The trace as a JSON-ready dict (times converted to microseconds); see `_build`."""
    # hundreds of thousands of small dicts: the cyclic GC would rescan them over and over
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(*args, **kwargs)
    finally:
        if enabled:
            gc.enable()


def _build(schedule: Schedule, start: np.ndarray, end: np.ndarray, *, target_name: str = "",
                max_ops: int = 200_000, max_flows: int = 20_000, target=None) -> dict[str, Any]:  # fmt: skip
    """Build the trace (see the module docstring for its layout); with a `target` that has an
    energy model, a power track (counter events, backends/energy.py) too."""
    s = schedule
    n = len(s)
    drawable = np.flatnonzero(s.kind != OpKind.SYNC)  # SYNC barriers take no time: not drawn
    shown = drawable[np.argsort(start[drawable], kind="stable")[:max_ops]]
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
        ops = shown[s.resource[shown] == r]
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
    ops = sorted(track)
    sel = np.asarray(ops, dtype=np.int64)
    kinds = [OpKind(k).name.lower() for k in range(len(OpKind))]
    reasons = [Reason(k).name.lower() for k in range(len(Reason))]
    phases = [Phase(k).name.lower() for k in range(len(Phase))]
    cols = {
        c: s.column(c)[sel].tolist()
        for c in ("kind", "reason", "phase", "token", "layer", "expert", "shard", "unit")
    }
    work = {c: s.column(c)[sel].tolist() for c in ("flops", "mem_bytes", "link_bytes")}
    ts = (start[sel] * 1e6).tolist()
    dur = ((end[sel] - start[sel]) * 1e6).tolist()
    for j, i in enumerate(ops):
        pid, tid = track[i]
        label = [kinds[cols["kind"][j]]]
        for key, prefix in (("layer", "L"), ("expert", "e"), ("shard", "s")):
            if cols[key][j] >= 0:
                label.append(f"{prefix}{cols[key][j]}")
        args = {"op": i, "phase": phases[cols["phase"][j]], "token": cols["token"][j]}
        for c, values in work.items():
            if values[j]:
                args[c] = values[j]
        if cols["unit"][j] >= 0:
            args["unit"] = cols["unit"][j]
        events.append({"ph": "X", "name": " ".join(label), "cat": reasons[cols["reason"][j]], "ts": ts[j],
                       "dur": dur[j], "pid": pid, "tid": tid, "args": args})  # fmt: skip
    flows = 0
    ptr, dep = s.dep_lists()
    for i in ops:
        if flows >= max_flows:
            break
        for d in dep[ptr[i] : ptr[i + 1]]:
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
                    "ts": float(start[d] + end[d]) * 0.5e6,  # inside the slice: binds to it
                    "pid": pd,
                    "tid": td,
                }
            )
            events.append({"ph": "f", "name": "dep", "cat": "dep", "id": flows, "bp": "e", "ts": float(start[i]) * 1e6, "pid": pu, "tid": tu})  # fmt: skip
    if target is not None:
        events.extend(_power_events(schedule, target, start, end))
    if "serving" in s.meta:
        events.extend(_request_events(s, start, end))
    return {
        "displayTimeUnit": "ns",
        "otherData": {
            "generator": "ndpc simulate",
            "target": target_name,
            "ops": n,
            "ops_shown": int(len(track)),
            "ops_left_out": int(len(drawable) - len(track)),
            "ops_sync": int(n - len(drawable)),
            "flows": flows,
        },  # fmt: skip
        "traceEvents": events,
    }


def _request_events(s: Schedule, start: np.ndarray, end: np.ndarray) -> list[dict[str, Any]]:
    """A serving schedule's "Requests" process: an "iterations" track (one slice per iteration,
    its sequences and tokens in args), then one track per request with its queueing (arrival to
    admission) and running (admission to last token) slices."""
    pid = len(_GROUPS) + 3  # after the devices and the power process (len + 2)
    figures = request_figures(s, start, end)
    out: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "Requests"}},
        {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
         "args": {"sort_index": 0}},
        {"ph": "M", "name": "thread_name", "pid": pid, "tid": 1, "args": {"name": "iterations"}},
    ]  # fmt: skip
    fg = s.token >= 0
    for index, lo, hi, kv, cap, slices in s.meta["serving"]["batches"]:
        mine = np.flatnonzero(fg[lo:hi]) + lo
        if not len(mine):
            continue
        t0, t1 = float(start[mine].min()), float(end[mine].max())
        args = {"sequences": len(slices), "tokens": sum(sl[3] for sl in slices),
                "kv_bytes": kv, "expert_budget_bytes": cap}  # fmt: skip
        out.append({"ph": "X", "name": f"iteration {index}", "cat": "iteration", "ts": t0 * 1e6,
                    "dur": (t1 - t0) * 1e6, "pid": pid, "tid": 1, "args": args})  # fmt: skip
    for k, r in enumerate(figures["requests"]):
        tid = k + 2
        out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                    "args": {"name": f"request {r['request']}"}})  # fmt: skip
        admitted = r["arrival_s"] + r["queue_s"]
        for name, t0, t1 in (("queued", r["arrival_s"], admitted),
                             ("running", admitted, r["finish_s"])):  # fmt: skip
            if t1 > t0:
                out.append({"ph": "X", "name": name, "cat": "request", "ts": t0 * 1e6,
                            "dur": (t1 - t0) * 1e6, "pid": pid, "tid": tid, "args": r})  # fmt: skip
    return out


def write_timeline(
    path, schedule: Schedule, start: np.ndarray, end: np.ndarray, **kwargs: Any
) -> dict[str, Any]:
    """Write `build_trace(...)` as compact JSON to `path`; return its `otherData` counts."""
    trace = build_trace(schedule, start, end, **kwargs)
    # dumps uses the C encoder, dump does not; times are finite (the checker's first rule)
    text = json.dumps(trace, separators=(",", ":"), allow_nan=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return trace["otherData"]


def truncation_note(info: dict[str, Any], path: str) -> str | None:
    """A line for stderr when the timeline at `path` leaves ops out (None when it has them all)."""
    left = info["ops_left_out"]
    if not left:
        return None
    return (f"note: timeline {path} shows the first {info['ops_shown']:,} of "
            f"{info['ops_shown'] + left:,} ops ({left:,} left out; raise --timeline-ops)")  # fmt: skip


def _power_events(schedule: Schedule, target, start: np.ndarray, end: np.ndarray) -> list[dict]:
    """A "Power" process with one counter track: static and mean dynamic power (W) per bin."""
    if not has_energy_model(target) or len(end) == 0:
        return []
    pid = len(_GROUPS) + 2
    edges, dynamic = power_track(schedule, target, start, end)
    static = static_power_w(target)
    out: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "Power"}},
        {
            "ph": "M",
            "name": "process_sort_index",
            "pid": pid,
            "tid": 0,
            "args": {"sort_index": pid},
        },
    ]
    for t, w in zip((edges[:-1] * 1e6).tolist(), dynamic.tolist(), strict=True):
        out.append({"ph": "C", "name": "power (W)", "pid": pid, "tid": 0, "ts": t,
                    "args": {"static": static, "dynamic": w}})  # fmt: skip
    out.append({"ph": "C", "name": "power (W)", "pid": pid, "tid": 0, "ts": float(edges[-1]) * 1e6,
                "args": {"static": 0.0, "dynamic": 0.0}})  # fmt: skip
    return out
