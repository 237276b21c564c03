"""Turn a finished timeline into the report: latencies, utilisation, prefetch counts, bound."""

from __future__ import annotations

import numpy as np

from ndpc.backends.bounds import lower_bound
from ndpc.backends.cost import CostModel
from ndpc.backends.energy import energy_report
from ndpc.backends.schedule import OpKind, Phase, Reason, Schedule
from ndpc.backends.simulator.result import SimResult
from ndpc.backends.simulator.serving_metrics import request_figures, summary
from ndpc.backends.target import Target, resource_specs


def interval_union(start: np.ndarray, end: np.ndarray) -> float:
    """Total length covered by a set of intervals (in place on its own temporaries: a busy
    resource holds millions of them)."""
    if len(start) == 0:
        return 0.0
    if not (start[1:] >= start[:-1]).all():  # a FIFO resource's starts are sorted already
        order = np.argsort(start, kind="stable")
        start, end = start[order], end[order]
        del order
    reach = np.maximum.accumulate(end)
    gain = np.empty_like(reach)  # each interval's length beyond everything before it
    gain[0] = -np.inf
    gain[1:] = reach[:-1]
    del reach
    np.maximum(start, gain, out=gain)
    np.subtract(end, gain, out=gain)
    np.maximum(0.0, gain, out=gain)
    return float(gain.sum())


def busy_times(
    schedule: Schedule, target: Target, start: np.ndarray, end: np.ndarray
) -> dict[str, float]:
    """Seconds each target resource is occupied (union of its ops' intervals). One resource at a
    time, with one-byte masks over the ops: no per-op index arrays of the whole schedule."""
    specs = resource_specs(target)
    pos = {name: i for i, name in enumerate(schedule.resources)}
    occupying = schedule.kind != OpKind.SYNC
    held_ops = np.zeros(0, dtype=np.int64)
    held = np.zeros(0, dtype=np.int64)
    if target.exclusive_host_access and len(schedule):
        index = {s.name: i for i, s in enumerate(specs)}
        host = _on(schedule, pos, ("pcie.h2d", "pcie.d2h")) & (schedule.unit >= 0) & occupying
        held_ops = np.flatnonzero(host)
        held = index["ndp0"] + schedule.unit[held_ops].astype(np.int64)
        del host
    out = {}
    for r, spec in enumerate(specs):
        ids = np.flatnonzero(_on(schedule, pos, (spec.name,)) & occupying)  # in id order
        extra = held_ops[held == r]
        if len(extra):
            ids = np.sort(np.concatenate([ids, extra]))
        out[spec.name] = interval_union(start[ids], end[ids])
    return out


def _on(schedule: Schedule, pos: dict[str, int], names: tuple[str, ...]) -> np.ndarray:
    """Mask of the ops on any of the named resources (by the schedule's numbering)."""
    mask = np.zeros(len(schedule), dtype=bool)
    for name in names:
        if name in pos:
            mask |= schedule.resource == pos[name]
    return mask


def step_latencies(schedule: Schedule, end: np.ndarray):
    """(mean TTFT over requests, per-decode-token latencies, number of requests, per-step end
    times, per-step durations) with steps in `Schedule.step_runs()` order."""
    bounds, step, first = schedule.step_runs()
    if len(first) == 0:
        return 0.0, np.zeros(0), 0, np.zeros(0), np.zeros(0)
    tagged = step >= 0
    run_end = np.maximum.reduceat(end, bounds[:-1])[tagged]
    done = np.full(len(first), -np.inf)
    np.maximum.at(done, step[tagged], run_end)  # the latest end among a step's ops
    took = np.zeros(len(done))
    req = schedule.request[first]
    phase = schedule.phase[first]
    ttfts, tpots = [], []
    begin = 0.0
    for r in np.unique(req):
        mine = np.flatnonzero(req == r)  # steps sorted by token within the request
        took[mine] = np.diff(np.concatenate([[begin], done[mine]]))
        pre = mine[phase[mine] == Phase.PREFILL]
        dec = mine[phase[mine] == Phase.DECODE]
        prev = done[pre].max() if len(pre) else begin
        if len(pre):
            ttfts.append(prev - begin)
        if len(dec):
            times = done[dec]
            tpots.append(np.diff(np.concatenate([[prev], times])))
        begin = done[mine].max()  # requests run one after another (batch 1)
    tpot = np.concatenate(tpots) if tpots else np.zeros(0)
    ttft = float(np.mean(ttfts)) if ttfts else 0.0
    return ttft, tpot, len(np.unique(req)), done, took


def prefetch_stats(schedule: Schedule) -> tuple[int, int, float]:
    """(hits, misses, wasted bytes) by the rules of contracts.md / docs/simulator.md."""
    s = schedule
    kernel = (
        (s.kind == OpKind.GPU_KERNEL)
        | (s.kind == OpKind.NDP_KERNEL)
        | (s.kind == OpKind.CPU_KERNEL)
    )
    tagged = kernel & (s.expert >= 0) & (s.phase == Phase.DECODE)
    resident = tagged & (s.reason == Reason.GPU_RESIDENT)
    missing = tagged & np.isin(s.reason, [Reason.GPU_FETCH, Reason.NDP, Reason.CPU])

    widths = (15, 24, 10, 14)  # bits; 63 in all
    names = ("request", "token", "layer", "expert")

    # Pack (request, token, layer, expert) into one int64 when every tag of both sets fits (tags
    # may be -1 = none); otherwise compare rows. Both sets must use the same key form. One
    # field of one set is gathered at a time (the missing set can be most of the ops).
    def fits(f: np.ndarray, w: int) -> bool:
        return len(f) == 0 or (f.min() >= 0 and int(f.max()) < (1 << w))

    packed = all(
        fits(s.column(name)[mask], w)
        for mask in (resident, missing)
        for name, w in zip(names, widths, strict=True)
    )

    def triples(mask: np.ndarray) -> np.ndarray:
        if packed:
            key = np.zeros(np.count_nonzero(mask), dtype=np.int64)
            for name, w in zip(names, widths, strict=True):
                key <<= w
                np.bitwise_or(key, s.column(name)[mask], out=key)
            key.sort()
            return key[np.concatenate([[True], key[1:] != key[:-1]])] if len(key) else key
        rows = np.stack([s.column(name)[mask] for name in names], axis=1).astype(np.int64)
        return np.unique(rows, axis=0).view([("", np.int64)] * 4).ravel()

    hit_keys = triples(resident)
    hits = len(hit_keys)
    misses = 0
    prefetcher = str(s.meta.get("prefetcher") or "none").lower()
    if prefetcher not in ("none", "false", "0"):
        miss_keys = triples(missing)
        misses = int(len(miss_keys) - np.isin(miss_keys, hit_keys, assume_unique=True).sum())
    # wasted: PREFETCH bytes of (layer, expert) not used by a GPU_RESIDENT kernel before the next
    # PREFETCH/EVICT of that expert (in schedule order) or the end. One copy may be several
    # PREFETCH ops (one per shard, docs/passes.md): PREFETCHes of an expert with nothing else of
    # that expert between them form one copy.
    is_pf = (s.kind == OpKind.PREFETCH) & (s.expert >= 0)
    is_ev = (s.reason == Reason.EVICT) & (s.expert >= 0) & ~is_pf
    is_use = kernel & (s.reason == Reason.GPU_RESIDENT) & (s.expert >= 0)
    events = np.flatnonzero(is_pf | is_ev | is_use)
    if not is_pf.any():
        return hits, misses, 0.0
    group = (s.layer[events].astype(np.int64) << 32) | s.expert[events].astype(np.int64)
    order = np.lexsort((events, group))
    ev, grp = events[order], group[order]
    new_group = np.concatenate([[True], grp[1:] != grp[:-1]])
    pf_ev = is_pf[ev]
    same_copy = np.concatenate([[False], pf_ev[:-1]]) & ~new_group  # follows a PREFETCH
    opens = (pf_ev & ~same_copy) | is_ev[ev]
    segment = np.cumsum(opens | new_group)
    used = np.zeros(segment[-1] + 1, dtype=bool)
    used[segment[is_use[ev]]] = True
    pf_pos = np.flatnonzero(is_pf[ev])
    wasted = ~used[segment[pf_pos]]
    return hits, misses, float(s.link_bytes[ev[pf_pos][wasted]].sum())


def compute_result(schedule: Schedule, target: Target, cost: CostModel, start: np.ndarray,
                   end: np.ndarray, engine: str) -> SimResult:  # fmt: skip
    """Assemble a `SimResult` from a timeline."""
    e2e = float(end.max()) if len(end) else 0.0
    busy_s = busy_times(schedule, target, start, end)
    busy = {k: (v / e2e if e2e > 0 else 0.0) for k, v in busy_s.items()}
    ndp = [busy_s[f"ndp{u}"] for u in range(target.ndp_units)]
    ndp_frac = np.array([busy[f"ndp{u}"] for u in range(target.ndp_units)])
    specs = resource_specs(target)
    sidx = {name: i for i, name in enumerate(schedule.resources)}
    link_bytes = {}
    for spec in specs:
        if spec.kind == "link":
            r = sidx.get(spec.name)
            link_bytes[spec.name] = (
                float(schedule.link_bytes[schedule.resource == r].sum()) if r is not None else 0.0
            )
    ttft, tpot, requests, step_end, step_time = step_latencies(schedule, end)
    serving = None
    if "serving" in schedule.meta:  # requests overlap: figures per request from the iterations
        figures = request_figures(schedule, start, end)
        serving = {"requests": figures["requests"], **summary(figures)}
        ttft = serving["ttft_mean_s"]
        tpot = np.asarray(figures["itl"], dtype=np.float64)
        requests = len(figures["requests"])
    hits, misses, wasted = prefetch_stats(schedule)
    bound = lower_bound(schedule, target, cost)
    bound["steps"]["end_s"] = step_end.tolist()
    bound["steps"]["time_s"] = step_time.tolist()
    return SimResult(
        ttft_s=ttft,
        tpot_mean_s=float(tpot.mean()) if len(tpot) else 0.0,
        tpot_p50_s=float(np.percentile(tpot, 50)) if len(tpot) else 0.0,
        tpot_p99_s=float(np.percentile(tpot, 99)) if len(tpot) else 0.0,
        e2e_s=e2e,
        busy=busy,
        busy_s=busy_s,
        ndp_busy_s=ndp,
        ndp_busy_std=float(ndp_frac.std()) if len(ndp_frac) else 0.0,
        link_bytes=link_bytes,
        prefetch_hits=hits,
        prefetch_misses=misses,
        prefetch_wasted_bytes=wasted,
        bound_s=bound["bound_s"],
        efficiency=bound["bound_s"] / e2e if e2e > 0 else 1.0,
        bound=bound,
        ops=len(schedule),
        engine=engine,
        target=target.name,
        decode_tokens=int(len(tpot)),
        requests=requests,
        start=start,
        end=end,
        energy=energy_report(schedule, target, e2e, len(tpot) or requests),
        serving=serving,
    )
