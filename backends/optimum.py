"""The optimum: a lower bound on the latency of EVERY schedule of a model on a target for a trace.

`bounds.py` bounds one schedule by its own ops. This module bounds the problem: whatever a policy
decides (GPU-resident, fetched over the host link, on the host CPU, on any NDP units with any TP
degree, any reduction site, any prefetch, perfect foresight), the emitter's structure and the cost
model (`CostModel`, the same unit costs the simulator uses) leave it no faster than the value of a
linear program, solved with HiGHS (`scipy.optimize.linprog(method="highs")`). docs/optimum.md
states the formulation and why each constraint holds for every schedule; in short:

- Every step is a chain (embedding, then per layer attention -> router -> expert window ->
  combine, then the LM head), so a step lasts at least its fixed GPU ops (exact op times: they
  are the same in every schedule; the combine at its cheapest part count) plus the expert
  windows X (router end to combine start) of its MoE layers.
- In one window, each activated expert's use runs resident, fetched, on the CPU or on NDP units
  (any TP degree: the least unit-time and the shortest kernel over degrees, separately); every
  resource's busy time in the window (GPU, host CPU, each PCIe direction, the NDP units on
  average) and every option's dependency chain bound X from below.
- Layer-steps with the same shape (decode: k experts of one token, same expert size) are merged:
  max is convex, so the windows' mean is at least the window of the mean use (Jensen). A group
  of one class (decode) is written as a mix of integer patterns (how many experts resident,
  fetched, on the CPU, on NDP; each pattern's least window from the same rows): the convex hull
  of the integer layer-steps, much tighter than fractions. Decode steps merge in blocks of 4.
- GPU memory couples the steps: in any window of consecutive steps, the experts used resident
  were resident at its start (at most the budget) or copied in during it (fetched or
  prefetched: link bytes that must fit in the steps' time next to their other traffic; on
  DIMMs with exclusive host access they also hold the units). The most resident uses q experts
  can give in a window is the sum of the q largest per-expert use counts there (a concave
  function written as a small knapsack LP). Dyadic windows of blocks (and each whole run) are
  used, skipping those whose experts all fit the budget.

`optimum_bound(...)` returns the bound on the end-to-end time (prefill steps + decode steps),
on the prefill (TTFT, mean over requests) and on the decode steps, each from its own LP.

`serving_bound(...)` bounds a serving run (docs/optimum.md §7): the steps are the iterations
its loop formed (`meta.serving.batches`), with start times that wait for arrivals, idle gaps,
per-iteration expert budgets shrunk by the KV cache, and coarse expert windows (token-count
buckets priced at their least cost, an iteration's layer-steps merged); it returns bounds on
the makespan, the mean e2e and the mean TTFT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ndpc.backends.emit import DEFAULT_CONTEXT, DecoderLayer, decoder_layers, iter_steps
from ndpc.backends.emit_dense import (
    Work,
    attention_work,
    batch_attention_work,
    expert_budget_bytes,
    kv_cache_bytes,
    lm_head_work,
    mlp_work,
    router_work,
    shared_work,
)
from ndpc.backends.target import resource_specs
from ndpc.ir.core import Module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import (
    AttentionOp,
    EmbeddingOp,
    LmHeadOp,
)

RES, FETCH, CPU, NDP = 0, 1, 2, 3  # where one expert use runs (NDP: any TP degree)
# sub-populations of merged layer-steps: (uses a fetch, uses the host CPU)
BLOCK = 4  # decode steps merged into one LP step
PATTERN_MAX_USES = 12  # a one-class group with at most this many uses is solved by patterns
SUBPOPS = ((False, False), (True, False), (False, True), (True, True))
SAFETY = 1e-6  # relative margin for the LP solver's tolerance
METHOD = "highs"
TIME_SCALE = 1e6  # the LP works in microseconds and whole experts (well-scaled coefficients)


@dataclass(frozen=True)
class ModelShape:
    """What the bound needs from a model's IR (before or after the policy's passes)."""

    layers: tuple[DecoderLayer, ...]
    moe: tuple[DecoderLayer, ...]
    embedding: EmbeddingOp | None
    lm_head: LmHeadOp | None
    act_bytes: float


def model_shape(module: Module) -> ModelShape:
    """Decoder layers (attention, dense MLP or router + experts + shared experts) in order."""
    layers, emb, head = decoder_layers(module)
    ordered = tuple(layers)
    moe = []
    for entry in ordered:
        if entry.router is not None and entry.mlp is None:
            if entry.ffn is None:
                raise NdpcError(f"layer {entry.layer}: router without experts")
            entry.moe_index = len(moe)
            moe.append(entry)
    act = next((op.dtype.nbytes for op in module.ops_of(AttentionOp)), 2.0)
    return ModelShape(ordered, tuple(moe), emb, head, float(act))


@dataclass
class OptimumBound:
    """The three bounds (seconds), the joint LP's decisions and how long it took."""

    bound_s: float
    ttft_s: float
    decode_s: float
    cold_start_s: float  # bound_s for schedules that start with no expert in GPU memory
    fixed_s: float  # the part every schedule pays in dense GPU ops (in every bound)
    budget_bytes: int
    solve_s: float
    variables: int
    constraints: int
    windows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "optimum_bound_s": self.bound_s,
            "optimum_ttft_s": self.ttft_s,
            "optimum_decode_s": self.decode_s,
            "optimum_cold_start_s": self.cold_start_s,
            "optimum_fixed_s": self.fixed_s,
            "optimum_budget_bytes": self.budget_bytes,
        }


# --- unit costs (the cost model's functions, nothing re-derived) ----------------------------
class _Costs:
    def __init__(self, target, cost, shape: ModelShape) -> None:
        self.cost, self.target = cost, target
        self.units = int(target.ndp_units)
        self.exclusive = bool(target.exclusive_host_access)
        specs = {s.name: s for s in resource_specs(target)}
        self.specs = specs
        self.act = shape.act_bytes
        self.cap = cost.link_bandwidth("pcie.h2d", 0)  # a copy out of a DIMM, per flow
        h2d = specs["pcie.h2d"]
        # one flow at a time: each copy runs at most at the DIMM's cap; with several copy
        # engines flows from different DIMMs may add up to the link's bandwidth
        self.copy_rate = self.cap if h2d.slots == 1 else h2d.bandwidth_Bps

    def occ(self, link: str, nbytes: float, unit: int = -1) -> float:
        """Least time a transfer keeps `link` busy: its whole op time on a one-slot link, its
        bytes at full bandwidth on a shared one."""
        spec = self.specs[link]
        if spec.slots == 1:
            return self.cost.link_time(link, nbytes, unit)
        return nbytes / spec.bandwidth_Bps

    def dur(self, link: str, nbytes: float, unit: int = -1) -> float:
        """Least duration of one transfer (a shared flow is never faster than alone)."""
        return self.cost.link_time(link, nbytes, unit)

    def gpu(self, work) -> float:
        return self.cost.gpu_time(work.flops, work.mem_bytes)

    def combine(self, tokens: int, d: int, parts_max: int) -> float:
        """The combine kernel at its cheapest part count (a schedule has 1..parts_max parts)."""
        p = np.arange(0, parts_max + 1, dtype=np.float64)
        flops = np.maximum(p - 1, 0) * tokens * d
        mem = (p + 1) * tokens * d * self.act
        return float(self.cost.gpu.times(flops, mem).min())


@dataclass
class _Group:
    """Layer-steps of one step with the same expert-window LP, merged (averaged)."""

    step: int
    n: int  # layer-steps merged
    tokens: int
    classes: tuple[tuple[int, int], ...]  # (tokens per expert c, experts with c tokens)
    shared_t: float
    wbytes: float
    coef: dict[str, Any] = field(default_factory=dict)
    # serving (coarse) groups: layer-steps whose class counts differ; `classes` then holds
    # (bucket's least tokens, the largest count of one layer-step) and `totals` the uses of
    # each bucket over all merged layer-steps (docs/optimum.md §7)
    totals: list[int] | None = None


def _route_counts(rows: np.ndarray) -> tuple[tuple[int, int], ...]:
    """(tokens per expert, how many experts) of one layer-step's routing rows [tokens, k]."""
    flat = rows.ravel()
    flat = flat[flat >= 0]
    counts = np.bincount(flat)
    counts = counts[counts > 0]
    vals, mult = np.unique(counts, return_counts=True)
    return tuple(zip(vals.tolist(), mult.tolist(), strict=True))


def optimum_bound(
    module: Module, trace, target, cost, *, budget_bytes: int | None = None
) -> OptimumBound:
    """The problem-level lower bound (see the module docstring and docs/optimum.md)."""
    t0 = time.perf_counter()
    shape = model_shape(module)
    if trace.meta.layers != len(shape.moe):
        raise NdpcError(f"the trace has {trace.meta.layers} MoE layers, the model {len(shape.moe)}")
    if budget_bytes is None:
        budget_bytes = expert_budget_bytes(module, int(target.gpu_memory_bytes), DEFAULT_CONTEXT)
    c = _Costs(target, cost, shape)
    steps = _steps(shape, trace, c)
    problem = _Lp(shape, c, steps, trace, budget_bytes)
    prefill = [i for i, s in enumerate(steps) if s["phase"] == 0]
    decode = [i for i, s in enumerate(steps) if s["phase"] == 1]
    # Batch 1: the run is the prefill steps then, per request, its decode steps, one after
    # another, so a bound on the prefill steps plus one on the decode steps bounds the whole
    # (solving them jointly gave the same value to 1e-9 on the demo and on 512+512 Qwen3).
    ttft = [problem.solve([i]) for i in prefill]
    dec = problem.solve(decode) if decode else 0.0
    # The bound lets any static residency be in GPU memory at t=0 for free (as the emitter
    # loads a policy's ResidentOps). A schedule that starts empty (every dataset-free policy)
    # has budget 0 in the first step's windows; only the first step of the run is affected.
    cold = 0.0
    if prefill and prefill[0] == 0:
        cold = problem.solve([0], cold=True) - ttft[0]
    elif decode and decode[0] == 0:
        cold = problem.solve(decode, cold=True) - dec
    bound = float(sum(ttft)) + dec
    return OptimumBound(
        bound_s=bound,
        ttft_s=float(np.mean(ttft)) if ttft else 0.0,
        decode_s=dec,
        cold_start_s=bound + max(0.0, cold),
        fixed_s=float(sum(s["fixed"] for s in steps)),
        budget_bytes=int(budget_bytes),
        solve_s=time.perf_counter() - t0,
        variables=problem.last_size[0],
        constraints=problem.last_size[1],
        windows=problem.last_size[2],
    )


@dataclass(frozen=True)
class _Serve:
    """What the serving LP adds to the batch-1 one (per step = per iteration)."""

    budget: list[float]  # expert bytes GPU memory may hold when the iteration starts
    arrive: dict[int, float]  # step -> latest arrival (s after the first) of a request it starts
    last: list[tuple[int, float]]  # per request: (step of its last token, arrival)
    first_token: list[tuple[int, float]]  # per request: (step of its first token, arrival)
    breaks: frozenset[int]  # steps that must start an LP block
    objectives: tuple[str, ...] = ("makespan", "e2e", "ttft")


@dataclass
class ServingBound:
    """Lower bounds on a serving run's figures for the iterations its loop formed (seconds)."""

    makespan_s: float  # last token - first arrival (the report's makespan_s)
    e2e_mean_s: float
    ttft_mean_s: float
    cold_start_s: float  # makespan_s for schedules that start with no expert in GPU memory
    output_tokens: int
    iterations: int
    solve_s: float
    reduced: bool  # one request at batch 1: the batch-1 bound (`optimum_bound`), as is

    def to_json(self) -> dict[str, Any]:
        m = self.makespan_s
        return {
            "optimum_bound_s": m,
            "optimum_e2e_mean_s": self.e2e_mean_s,
            "optimum_ttft_mean_s": self.ttft_mean_s,
            "optimum_cold_start_s": self.cold_start_s,
            "optimum_throughput_tok_s": self.output_tokens / m if m > 0 else None,
            "optimum_batching": "as-run",
        }


def serving_bound(module: Module, trace, target, cost, serving: dict[str, Any],
                  *, budget_bytes: int | None = None) -> ServingBound:  # fmt: skip
    """Lower bounds on the makespan, mean e2e and mean TTFT of every schedule of the iterations
    a serving run formed (`serving` = the schedule's `meta.serving`: its `requests` and
    `batches`), whatever each iteration's experts do (docs/optimum.md §7)."""
    t0 = time.perf_counter()
    shape = model_shape(module)
    if trace.meta.layers != len(shape.moe):
        raise NdpcError(f"the trace has {trace.meta.layers} MoE layers, the model {len(shape.moe)}")
    gpu = int(target.gpu_memory_bytes)
    if budget_bytes is None:
        budget_bytes = expert_budget_bytes(module, gpu, DEFAULT_CONTEXT)
    pool = expert_budget_bytes(module, gpu, 0)  # experts and KV share it
    kv_token = kv_cache_bytes(module, 1)
    requests = {int(r[0]): (float(r[1]), int(r[2])) for r in serving["requests"]}
    total = {int(r[0]): int(r[2]) + int(r[3]) for r in serving["requests"]}
    a0 = min((a for a, _ in requests.values()), default=0.0)
    batches, budget, arrive = [], [], {}
    done: dict[int, int] = {}  # tokens of each request processed so far
    first_step: dict[int, int] = {}
    last_step: dict[int, int] = {}
    prefill_end: dict[int, int] = {}
    decode_steps: dict[int, list[int]] = {}
    finished: set[int] = set()
    for step, row in enumerate(serving["batches"]):
        # KV held when the iteration starts: every admitted, unfinished request's tokens
        held = sum(n for r, n in done.items() if r not in finished)
        budget.append(float(min(budget_bytes, max(0.0, pool - kv_token * held))))
        slices = []
        for req, phase, first, tokens in row[5]:
            req = int(req)
            if req not in first_step:
                first_step[req] = step
                late = requests[req][0] - a0
                arrive[step] = max(arrive.get(step, 0.0), late)
            slices.append((int(first), int(tokens), done.get(req, 0)))
            done[req] = done.get(req, 0) + int(tokens)
            last_step[req] = step
            if int(phase) == 0:
                prefill_end[req] = step
            else:
                decode_steps.setdefault(req, []).append(step)
        phase = min(int(sl[1]) for sl in row[5])
        batches.append((phase, int(row[5][0][0]), slices))
        finished.update(r for r, n in done.items() if n >= total[r])
    last = [(last_step[r], requests[r][0] - a0) for r in sorted(last_step)]
    first_token = []
    for r in sorted(first_step):
        step = prefill_end[r] if requests[r][1] > 0 else decode_steps[r][0]
        first_token.append((step, requests[r][0] - a0))
    tokens_out = sum(1 + len(decode_steps.get(r, [])) - (requests[r][1] == 0) for r in first_step)
    single = len(requests) == 1 and all(len(row[5]) == 1 for row in serving["batches"])
    if single and all(b == budget_bytes for b in budget) and _sequential_like(serving, trace):
        # one request at batch 1: the batch-1 bound, as is (the serving LP would only add
        # windows across its prefill and decode, a tighter but different number)
        one = optimum_bound(module, trace, target, cost, budget_bytes=budget_bytes)
        return ServingBound(one.bound_s, one.bound_s, one.ttft_s, one.cold_start_s, tokens_out,
                            len(batches), time.perf_counter() - t0, True)  # fmt: skip
    c = _Costs(target, cost, shape)
    steps = _steps(shape, trace, c, batches, coarse=True)
    breaks = set(first_step.values())
    breaks |= {s + 1 for s, _ in last} | {s + 1 for s, _ in first_token}
    serve = _Serve(budget, arrive, last, first_token, frozenset(breaks))
    problem = _Lp(shape, c, steps, trace, int(budget_bytes))
    every = list(range(len(steps)))
    got = problem.solve(every, serve=serve)
    cold_serve = _Serve(budget, arrive, last, first_token, frozenset(breaks), ("makespan",))
    cold = problem.solve(every, cold=True, serve=cold_serve)["makespan"]
    return ServingBound(got["makespan"], got["e2e"], got["ttft"], max(cold, got["makespan"]),
                        tokens_out, len(batches), time.perf_counter() - t0, False)  # fmt: skip


def _sequential_like(serving: dict[str, Any], trace) -> bool:
    """The iterations are the batch-1 steps of the trace (`iter_steps`), in order."""
    got = [(int(p), int(f), int(n)) for row in serving["batches"] for _, p, f, n in row[5]]
    want = [(p, f, n) for p, _, f, n in iter_steps(trace)]
    return got == want


def _steps(shape: ModelShape, trace, c: _Costs, batches=None,
           coarse: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Per step: phase, fixed chain time, merged expert-window groups, used expert keys.
    `batches`: the steps as (phase, request, [(first row, tokens, context)]) (an iteration of
    the serving loop has one slice per sequence); None: batch 1 (`iter_steps`).

    Dense ops are costed once per distinct (shape, tokens, context) and decode routing is read
    for all layers at once: 512+512 Qwen3 steps take well under a second."""
    out = []
    experts_all = np.asarray(trace.experts)
    E = trace.meta.experts
    memo: dict[tuple, float] = {}

    def gpu_once(key, work_fn, *args):
        t = memo.get(key)
        if t is None:
            t = memo[key] = c.gpu(work_fn(*args))
        return t

    att_sig = [_attention_sig(dl.attention) if dl.attention is not None else None
               for dl in shape.layers]  # fmt: skip
    moe_index = np.array([dl.moe_index for dl in shape.moe], dtype=np.int64)
    coef_memo: dict[tuple, dict] = {}
    for phase, request, slices in batches if batches is not None else _sequential(trace):
        tokens = sum(n for _, n, _ in slices)
        fixed = 0.0
        if shape.embedding is not None:
            emb = shape.embedding
            fixed += gpu_once(("emb", tokens), Work, 0.0, tokens * emb.d_model * emb.dtype.nbytes)
        if len(slices) == 1:
            token, _, context = slices[0]
            rows = experts_all[token : token + tokens]  # [tokens, layers, k]
        else:  # an iteration of several sequences: their rows, attention per sequence
            rows = experts_all[np.concatenate([np.arange(f, f + n) for f, n, _ in slices])]
            pairs = tuple((n, ctx) for _, n, ctx in slices)
        classes_of = _classes(rows)
        groups: dict[tuple, _Group] = {}
        for li, dl in enumerate(shape.layers):
            if dl.attention is not None:
                op = dl.attention
                if len(slices) == 1:
                    fixed += gpu_once(("att", att_sig[li], tokens, context), attention_work, op,
                                      tokens, context)  # fmt: skip
                else:
                    fixed += gpu_once(("batt", att_sig[li], pairs), batch_attention_work, op,
                                      list(pairs))  # fmt: skip
            if dl.mlp is not None:
                fixed += gpu_once(("mlp", dl.mlp.ffn, tokens), mlp_work, dl.mlp, tokens)
                continue
            if dl.router is None:
                continue
            ffn, r = dl.ffn, dl.router
            fixed += gpu_once(("router", r.experts, ffn.d_model, tokens), router_work, r,
                              ffn.d_model, c.act, tokens)  # fmt: skip
            classes = classes_of[dl.moe_index]
            active = sum(m for _, m in classes)
            parts_max = active + c.units + (1 if dl.shared is not None else 0)
            ckey = ("combine", tokens, ffn.d_model, parts_max)
            if ckey not in memo:
                memo[ckey] = c.combine(tokens, ffn.d_model, parts_max)
            fixed += memo[ckey]
            shared_t = 0.0
            if dl.shared is not None:
                sh = dl.shared
                shared_t = gpu_once(("shared", sh.count, sh.ffn, tokens), shared_work, sh, tokens)
            if coarse:
                _coarse_group(groups, coef_memo, len(out), ffn, tokens, classes, shared_t, c)
                continue
            key = (ffn, tokens, classes, shared_t)
            g = groups.get(key)
            if g is None:
                coef = coef_memo.get(key[:3])
                if coef is None:
                    coef = coef_memo[key[:3]] = _coefficients(ffn, tokens, classes, c)
                groups[key] = _Group(len(out), 1, tokens, classes, shared_t,
                                     float(ffn.weight_bytes), coef)  # fmt: skip
            else:
                g.n += 1
        if shape.lm_head is not None:
            fixed += gpu_once(("head",), lm_head_work, shape.lm_head)
        out.append({"phase": phase, "request": request, "fixed": fixed,
                    "groups": list(groups.values()), "keys": _keys(rows, moe_index, E)})  # fmt: skip
    return out


def _buckets(tokens: int) -> list[tuple[int, int]]:
    """Token-count ranges [lo, hi] of the serving LP's classes: 1, 2-3, 4-7, ... up to `tokens`."""
    out, lo = [], 1
    while lo <= tokens:
        out.append((lo, min(tokens, 2 * lo - 1)))
        lo *= 2
    return out


def _coarse_group(groups, coef_memo, step, ffn, tokens, classes, shared_t, c) -> None:
    """Add one layer-step to its iteration's coarse group: its classes fall into token-count
    buckets, each priced at the least cost of any count in the bucket (elementwise), so the
    layer-steps of an iteration merge whatever their exact counts (docs/optimum.md §7)."""
    ranges = _buckets(tokens)
    counts = [0] * len(ranges)
    for tok, m in classes:
        counts[(int(tok)).bit_length() - 1] += m
    used = tuple(i for i, n in enumerate(counts) if n)
    if not used:
        return
    key = ("coarse", ffn, tokens, used, shared_t)
    g = groups.get(key)
    if g is None:
        ckey = ("coarse", ffn, tokens, used)
        coef = coef_memo.get(ckey)
        if coef is None:
            coef = coef_memo[ckey] = _bucket_coefficients(ffn, tokens, [ranges[i] for i in used],
                                                          c, coef_memo)  # fmt: skip
        g = groups[key] = _Group(step, 0, tokens, tuple((ranges[i][0], 0) for i in used),
                                 shared_t, float(ffn.weight_bytes), coef, [0] * len(used))  # fmt: skip
    g.n += 1
    assert g.totals is not None
    g.classes = tuple((lo, max(m, counts[i])) for (lo, m), i in zip(g.classes, used, strict=True))
    for j, i in enumerate(used):
        g.totals[j] += counts[i]


def _bucket_coefficients(ffn, tokens: int, ranges, c: _Costs, memo) -> dict[str, Any]:
    """`_coefficients` with one class per bucket: each per-use cost is the least over the
    bucket's token counts (valid for every count in it, whether or not costs grow with it)."""
    every = tuple((t, 1) for lo, hi in ranges for t in range(lo, hi + 1))
    key = ("all", ffn, tokens, every)
    full = memo.get(key)
    if full is None:
        full = memo[key] = _coefficients(ffn, tokens, every, c)
    per, i = [], 0
    for lo, hi in ranges:
        part = full["per"][i : i + hi - lo + 1]
        i += hi - lo + 1
        per.append({name: min(q[name] for q in part) for name in part[0]})
    return {**full, "per": per}


def _sequential(trace):
    """Batch 1: (phase, request, [(first row, tokens, context)]) per step, in trace order."""
    current, context = None, 0
    for phase, request, token, tokens in iter_steps(trace):
        if request != current:
            current, context = request, 0
        yield phase, request, [(token, tokens, context)]
        context += tokens


def _attention_sig(op: AttentionOp) -> tuple:
    return (op.kind, op.d_model, op.heads, op.kv_heads, op.head_dim, op.dtype, op.kv_lora_rank)


def _classes(rows: np.ndarray) -> list[tuple[tuple[int, int], ...]]:
    """Per MoE layer of one step: (tokens per expert, experts with that many tokens)."""
    layers = rows.shape[1]
    if rows.shape[0] == 1:  # decode: k experts of one token each, unless the row repeats one
        srt = np.sort(rows[0], axis=1)
        valid = srt >= 0
        dup = (srt[:, 1:] == srt[:, :-1]) & valid[:, 1:]
        if not dup.any():
            n = valid.sum(axis=1)
            return [((1, int(n[li])),) if n[li] else () for li in range(layers)]
    return [_route_counts(rows[:, li, :]) for li in range(layers)]


def _keys(rows: np.ndarray, moe_index: np.ndarray, E: int) -> np.ndarray:
    """Distinct (MoE layer, expert) keys one step activates, as layer * E + expert."""
    flat = (np.arange(rows.shape[1])[None, :, None] * E + rows).ravel()
    flat = flat[rows.ravel() >= 0]
    return np.unique(flat)


def _coefficients(ffn, tokens: int, classes, c: _Costs) -> dict[str, Any]:
    """Unit costs (seconds) of one expert-window LP: per token class and option."""
    cost, act = c.cost, ffn.d_model * c.act
    w, fpt = float(ffn.weight_bytes), float(ffn.flops_per_token())
    N = c.units
    copy_occ = c.occ("pcie.h2d", w, 0)  # d shards on a one-slot link: d setups >= one setup
    copy_dur = c.dur("pcie.h2d", w, 0) if c.specs["pcie.h2d"].slots == 1 else (
        cost.link_setup("pcie.h2d") + w / c.specs["pcie.h2d"].bandwidth_Bps)  # fmt: skip
    hold = c.dur("pcie.h2d", w, 0)  # unit-time the shard copies hold DIMMs (d >= 1 setups)
    # The activations a unit receives are at least those of the tokens routed to it, at most
    # all (the emitter may send every unit all tokens, or only its own): a unit running an expert
    # of c tokens gets at least min(tokens, c) rows, so the smallest class bounds every schedule.
    least = min((min(tokens, tok) for tok, _ in classes), default=tokens) * act
    bcast_occ = c.occ("pcie.d2h", least)
    bcast = c.dur("pcie.d2h", least)
    per = []
    for tok, _ in classes:
        g = cost.gpu_time(fpt * tok, w + 2.0 * tok * act)
        psum_bytes = min(tokens, tok) * act
        ndp = [cost.ndp_time(fpt * tok / d, w / d + 2.0 * tok * act) for d in range(1, N + 1)]
        per.append({
            "gpu": g,
            "fetch_chain": copy_dur + g,
            # NDP with any TP degree d: d kernels on d units. The LP takes, per use, the least
            # unit-time (min over d of d * t_d) and separately the least chain (min over d of
            # t_d): a relaxation every real degree satisfies.
            "ndp_load": min(d * t for d, t in enumerate(ndp, start=1)),
            "ndp_chain": min(ndp),
            "bcast": c.dur("pcie.d2h", min(tokens, tok) * act),
            "psum": c.dur("pcie.h2d", psum_bytes, 0),
            "psum_occ": c.occ("pcie.h2d", psum_bytes, 0),
            "cpu": cost.cpu_time(fpt * tok, w + 2.0 * tok * act),
            "down": c.dur("pcie.d2h", tok * act),
            "up": c.dur("pcie.h2d", tok * act),
            "down_occ": c.occ("pcie.d2h", tok * act),
            "up_occ": c.occ("pcie.h2d", tok * act),
        })  # fmt: skip
    return {"copy_occ": copy_occ, "hold": hold, "bcast": bcast, "bcast_occ": bcast_occ,
            "per": per, "psum_min": min(p["psum"] for p in per),
            "psum_occ_min": min(p["psum_occ"] for p in per)}  # fmt: skip


class _Lp:
    """Builds and solves the LP over a subset of steps (see docs/optimum.md for each row)."""

    def __init__(self, shape: ModelShape, c: _Costs, steps, trace, budget: int) -> None:
        self.shape, self.c, self.steps, self.budget = shape, c, steps, budget
        self.unit_bytes = max((float(dl.ffn.weight_bytes) for dl in shape.moe), default=1.0)
        E = trace.meta.experts
        self.key_bytes = np.repeat([float(dl.ffn.weight_bytes) for dl in shape.moe], E)
        self.last_size = (0, 0, 0)
        self._pattern_memo: dict[tuple, list] = {}

    def solve(self, subset, cold: bool = False, serve: _Serve | None = None):
        """The LP's value over `subset` (steps); `cold`: GPU memory holds no expert when the
        subset's first step starts (windows starting there get budget 0). `serve`: the steps are
        the iterations of a serving run (arrivals, idle gaps, per-step budgets; docs/optimum.md
        §7); returns its objectives' values (seconds) instead of one value."""
        from scipy.optimize import linprog
        from scipy.sparse import coo_matrix

        subset = list(subset)
        if not subset:
            return 0.0
        S, N, c = TIME_SCALE, self.c.units, self.c
        B = self.unit_bytes
        cols: list[tuple[float, float, float]] = []  # (objective, lower, upper)
        rows_i: list[int] = []
        rows_j: list[int] = []
        vals: list[float] = []
        rhs: list[float] = []
        eq_i: list[int] = []
        eq_j: list[int] = []
        eq_v: list[float] = []
        eq_b: list[float] = []

        def var(obj=0.0, lo=0.0, hi=None):
            cols.append((obj, lo, hi))
            return len(cols) - 1

        def row(terms, b):
            r = len(rhs)
            for j, v in terms:
                if v != 0.0:
                    rows_i.append(r)
                    rows_j.append(j)
                    vals.append(v)
            rhs.append(b)

        fixed = 0.0
        layout: list[tuple] = []  # (step, group, class index, option variables)
        step_terms: dict[int, dict] = {}
        blocks = self._blocks(subset, serve)
        # serving: T[b] = start of block b (microseconds after the first arrival), T[-1] = the
        # end of the run; T[b+1] - T[b] is block b's span including the idle gap after it
        T = [var() for _ in range(len(blocks) + 1)] if serve is not None else []
        spans: list[list[tuple[int, float]]] = []
        for s, st in enumerate(blocks):
            fixed += st["fixed"]
            span = []  # (var, coefficient) of the step's variable time
            spans.append(span)
            link_terms, ndp_terms, res_terms, fetch_terms, fetchn = [], [], [], [], []
            for g in st["groups"]:
                # merged layer-steps split into sub-populations by whether they fetch and
                # whether they use the host CPU (the convex hull of the disjunction: a CPU or
                # fetch path is a long chain that cannot be spread thinly over many windows)
                # a coarse group whose layer-steps all had the same counts is an exact one
                uniform = g.totals is None or all(
                    t == cnt * g.n for t, (_, cnt) in zip(g.totals, g.classes, strict=True)
                )
                if uniform and len(g.classes) == 1 and g.classes[0][1] <= PATTERN_MAX_USES:
                    t = self._patterns(g, var, row, eq_i, eq_j, eq_v, eq_b)
                    span.append((t["X"], 1.0))
                    link_terms += t["h2d"]
                    ndp_terms += t["units"]
                    res_terms += t["res"]
                    fetch_terms += t["fetch"]
                    fetchn += t["fetchn"]
                    continue
                # (coarse groups: one population; its class counts differ per layer-step)
                kinds = SUBPOPS if g.n > 1 and uniform else ((None, None),)
                pis = []
                for kind in kinds:
                    pi = var(0.0, 0.0, float(g.n)) if len(kinds) > 1 else None
                    pis.append(pi)
                    t = self._subpop(g, kind, pi, var, row, eq_i, eq_j, eq_v, eq_b)
                    span.append((t["X"], 1.0))
                    layout.append((s, g, t["a"]))
                    link_terms += t["h2d"]
                    ndp_terms += t["units"]
                    res_terms += t["res"]
                    fetch_terms += t["fetch"]
                    fetchn += t["fetchn"]
                if len(kinds) > 1:  # the sub-populations partition the group
                    eq_i.extend([len(eq_b)] * len(pis))
                    eq_j.extend(pis)
                    eq_v.extend([1.0] * len(pis))
                    eq_b.append(float(g.n))
            # prefetch copies during this step (whole experts): link and DIMM time in its span
            P = var()
            per_expert = S * B / c.copy_rate
            if serve is None:
                row([*link_terms, (P, per_expert), *[(j, -v) for j, v in span]], S * st["fixed"])
                if c.exclusive:
                    row([*[(j, v * N) for j, v in ndp_terms], (P, S * B / c.cap),
                         *[(j, -N * v) for j, v in span]], N * S * st["fixed"])  # fmt: skip
            else:  # the chain, then link and DIMM time within the span (gap included)
                row([(T[s], 1.0), *span, (T[s + 1], -1.0)], -S * st["fixed"])
                row([*link_terms, (P, per_expert), (T[s], 1.0), (T[s + 1], -1.0)], 0.0)
                if c.exclusive:
                    row([*[(j, v * N) for j, v in ndp_terms], (P, S * B / c.cap),
                         (T[s], float(N)), (T[s + 1], -float(N))], 0.0)  # fmt: skip
                arrive = serve.arrive.get(st["first"])
                if arrive is not None:  # no request of the iteration starts before it arrives
                    row([(T[s], -1.0)], -S * arrive)
            step_terms[s] = {"P": P, "res": res_terms, "fetch": fetch_terms, "fetchn": fetchn}
        windows = self._windows(blocks, cold)
        for win in windows:
            # resident uses + fetch uses <= the uses of the experts that can be in GPU memory:
            # a fetched-and-kept expert's first use in W is the fetch itself
            res = [t for s in win["steps"] for t in step_terms[s]["res"] + step_terms[s]["fetchn"]]
            rho = [var(0.0, 0.0, float(m)) for m in win["mult"]]
            row(res + [(j, -float(v)) for j, v in zip(rho, win["count"], strict=True)], 0.0)
            loads = [t for s in win["steps"] for t in step_terms[s]["fetch"]]
            loads += [(step_terms[s]["P"], 1.0) for s in win["steps"]]
            row([(j, b / B) for j, b in zip(rho, win["bytes"], strict=True)]
                + [(j, -v) for j, v in loads], win["budget"] / B)  # fmt: skip
        n = len(cols)
        obj = np.array([o for o, _, _ in cols])
        bounds = [(lo, hi) for _, lo, hi in cols]
        A = coo_matrix((vals, (rows_i, rows_j)), shape=(len(rhs), n)).tocsr()
        Aeq = coo_matrix((eq_v, (eq_i, eq_j)), shape=(len(eq_b), n)).tocsr()
        self.last_size = (n, len(rhs) + len(eq_b), len(windows))
        if serve is not None:
            return self._serve_objectives(serve, blocks, T, spans, n, A, np.array(rhs), Aeq,
                                          np.array(eq_b), bounds)  # fmt: skip
        res = linprog(obj, A_ub=A, b_ub=np.array(rhs), A_eq=Aeq, b_eq=np.array(eq_b),
                      bounds=bounds, method=METHOD)  # fmt: skip
        if res.status != 0:
            raise RuntimeError(f"optimum LP not solved: {res.message}")
        self.last_x, self.last_layout, self.last_terms = res.x, layout, step_terms
        # HiGHS solves to a relative tolerance of ~1e-7: shave 1e-6 so round-off never lifts
        # the bound above the true LP value
        value = (fixed + max(0.0, float(res.fun)) / S) * (1.0 - SAFETY)
        return value

    def _serve_objectives(self, serve: _Serve, blocks, T, spans, n, A, b, Aeq, beq,
                          bounds) -> dict[str, float]:  # fmt: skip
        """Minimise, over the one serving LP, the run's end (makespan) and the sums of the
        requests' last-token and first-token times (mean e2e and TTFT); each is a bound alone."""
        from scipy.optimize import linprog

        S = TIME_SCALE
        block_of = {blk["last"]: i for i, blk in enumerate(blocks)}
        out = {}
        for name, ends in (("makespan", None), ("e2e", serve.last), ("ttft", serve.first_token)):
            if name not in serve.objectives:
                continue
            obj = np.zeros(n)
            const = 0.0
            if ends is None:
                obj[T[-1]] = 1.0
            else:  # a request's token is out when the block ending at its iteration ends
                for step, arrival in ends:
                    i = block_of[step]
                    obj[T[i]] += 1.0
                    for j, v in spans[i]:
                        obj[j] += v
                    const += S * (blocks[i]["fixed"] - arrival)
            if ends is not None and not ends:
                out[name] = 0.0
                continue
            res = linprog(obj, A_ub=A, b_ub=b, A_eq=Aeq, b_eq=beq, bounds=bounds, method=METHOD)
            if res.status != 0:
                raise RuntimeError(f"serving optimum LP not solved: {res.message}")
            value = max(0.0, (float(res.fun) + const) / S) * (1.0 - SAFETY)
            out[name] = value / (len(ends) if ends else 1)
        return out

    def _patterns(self, g: _Group, var, row, eq_i, eq_j, eq_v, eq_b) -> dict:
        """A group whose layer-steps each run `cnt` experts of one class, as a mix of integer
        patterns (r resident, f fetched, p on the CPU, n on NDP units; r+f+p+n = cnt): each
        pattern's least window time is the largest of the per-layer-step rows at those integer
        counts, and the group is any mix of patterns over its g.n layer-steps (the convex hull
        of the integer layer-steps). Dominated patterns are dropped."""
        table = self._pattern_table(g)
        S = TIME_SCALE
        lam = [var(0.0, 0.0, float(g.n)) for _ in range(len(table))]
        eq_i.extend([len(eq_b)] * len(lam))
        eq_j.extend(lam)
        eq_v.extend([1.0] * len(lam))
        eq_b.append(float(g.n))
        X = var(1.0)
        row([(j, S * t[0]) for j, t in zip(lam, table, strict=True)] + [(X, -1.0)], 0.0)
        col = list(zip(lam, table, strict=True))
        return {"X": X,
                "h2d": [(j, S * t[3]) for j, t in col if t[3]],
                "units": [(j, S * t[4] / self.c.units) for j, t in col if t[4]],
                "res": [(j, float(t[1])) for j, t in col if t[1]],
                "fetch": [(j, t[2] * g.wbytes / self.unit_bytes) for j, t in col if t[2]],
                "fetchn": [(j, float(t[2])) for j, t in col if t[2]]}  # fmt: skip

    def _pattern_table(self, g: _Group) -> list[tuple[float, int, int, float, float]]:
        """(least window time, r, f, h2d busy, DIMM unit-time) of every undominated pattern."""
        key = (id(g.coef), g.classes, g.shared_t)
        got = self._pattern_memo.get(key)
        if got is not None:
            return got
        c, k = self.c, g.coef
        q = k["per"][0]
        cnt = g.classes[0][1]
        N = c.units
        rows = []
        for r in range(cnt + 1):
            for f in range(cnt + 1 - r):
                for p in range(cnt + 1 - r - f):
                    n = cnt - r - f - p
                    h2d = f * k["copy_occ"] + p * q["up_occ"] + (q["psum_occ"] if n else 0.0)
                    d2h = p * q["down_occ"] + (k["bcast_occ"] if n else 0.0)
                    load = n * q["ndp_load"]
                    units = load + (
                        f * k["hold"] + (q["psum"] if n else 0.0) if c.exclusive else 0.0
                    )
                    x = max(
                        g.shared_t + (r + f) * q["gpu"],
                        h2d,
                        d2h,
                        units / N,
                        (f * k["copy_occ"] + q["gpu"]) if f else 0.0,
                        (q["fetch_chain"]) if f else 0.0,
                        (q["down"] + p * q["cpu"] + q["up"]) if p else 0.0,
                        (k["bcast"] + q["psum"] + max(load / N, q["ndp_chain"])) if n else 0.0,
                    )
                    rows.append((x, r, f, h2d, units))
        arr = np.array([(x, r, -f, h, u) for x, r, f, h, u in rows])
        keep = [i for i in range(len(rows))
                if not np.any(np.all(arr <= arr[i], axis=1) & np.any(arr < arr[i], axis=1))]  # fmt: skip
        got = self._pattern_memo[key] = [rows[i] for i in keep]
        return got

    def _subpop(self, g: _Group, kind, pi, var, row, eq_i, eq_j, eq_v, eq_b) -> dict:
        """Variables and rows of one (sub-)population of a group's layer-steps, as totals over
        its layer-steps: `pi` is its size (a variable; None: the whole group, g.n). Every row
        is a per-layer-step row summed over the population, so constants scale with its size.
        `kind` = (fetch used, CPU used): True forces at least one such use per layer-step,
        False none, None leaves it free."""
        S, N, c, k = TIME_SCALE, self.c.units, self.c, g.coef
        per, cls = k["per"], range(len(g.classes))
        fetch_kind, cpu_kind = kind

        def hrow(terms, const):  # sum(terms) + const * size <= 0
            if pi is None:
                row(terms, -const * g.n)
            else:
                row([*terms, (pi, const)], 0.0)

        X = var(1.0)
        z = var()  # layer-steps of the population that use NDP units
        hrow([(z, 1.0)], -1.0)
        a = []
        for ci, (_tok, cnt) in enumerate(g.classes):
            hi = [None] * 4
            if fetch_kind is False:
                hi[FETCH] = 0.0
            if cpu_kind is False:
                hi[CPU] = 0.0
            vs = [var(0.0, 0.0, hi[o]) for o in range(4)]
            a.append(vs)
            if pi is None:
                eq_i.extend([len(eq_b)] * 4)
                eq_j.extend(vs)
                eq_v.extend([1.0] * 4)
                eq_b.append(float(cnt * g.n if g.totals is None else g.totals[ci]))
            else:
                eq_i.extend([len(eq_b)] * 5)
                eq_j.extend([*vs, pi])
                eq_v.extend([1.0, 1.0, 1.0, 1.0, -float(cnt)])
                eq_b.append(0.0)
            p = per[ci]
            # chains: a layer-step using an option waits for that option's whole chain; the
            # layer-steps using it are at least its uses / cnt
            row([(vs[FETCH], S * p["fetch_chain"] / cnt), (X, -1.0)], 0.0)
            row([(vs[CPU], S * (p["down"] + p["cpu"] + p["up"]) / cnt), (X, -1.0)], 0.0)
            row([(vs[NDP], S * (p["bcast"] + p["ndp_chain"] + p["psum"]) / cnt), (X, -1.0)], 0.0)
            row([(vs[NDP], 1.0 / cnt), (z, -1.0)], 0.0)
        if fetch_kind:  # every layer-step fetches at least one expert: copy, then compute
            hrow([(a[i][FETCH], -1.0) for i in cls], 1.0)
            hrow([(X, -1.0)], S * min(q["fetch_chain"] for q in per))
        if cpu_kind:  # every layer-step runs at least one expert on the CPU, one at a time
            hrow([(a[i][CPU], -1.0) for i in cls], 1.0)
            hrow([(a[i][CPU], S * per[i]["cpu"]) for i in cls] + [(X, -1.0)],
                 S * (min(q["down"] for q in per) + min(q["up"] for q in per)))  # fmt: skip
        # GPU: shared experts + resident and fetched experts
        hrow([(a[i][o], S * per[i]["gpu"]) for i in cls for o in (RES, FETCH)] + [(X, -1.0)],
             S * g.shared_t)  # fmt: skip
        # host CPU
        row([(a[i][CPU], S * per[i]["cpu"]) for i in cls] + [(X, -1.0)], 0.0)
        # pcie.h2d: weight copies, partial sums, CPU results
        h2d = ([(a[i][FETCH], S * k["copy_occ"]) for i in cls]
               + [(a[i][CPU], S * per[i]["up_occ"]) for i in cls]
               + [(z, S * k["psum_occ_min"])])  # fmt: skip
        row([*h2d, (X, -1.0)], 0.0)
        # pcie.d2h: activation broadcast, CPU inputs
        row([(a[i][CPU], S * per[i]["down_occ"]) for i in cls]
            + [(z, S * k["bcast_occ"]), (X, -1.0)], 0.0)  # fmt: skip
        # NDP units on average: kernels after the broadcast, partial sums after them
        load = [(a[i][NDP], S * per[i]["ndp_load"] / N) for i in cls]
        row([*load, (z, S * (k["bcast"] + k["psum_min"])), (X, -1.0)], 0.0)
        units = list(load)
        if c.exclusive:  # copies out of a DIMM hold it (as do partial-sum reads)
            units += [(a[i][FETCH], S * k["hold"] / N) for i in cls]
            units += [(z, S * k["psum_min"] / N)]
            row([*units, (X, -1.0)], 0.0)
        return {"X": X, "a": a, "h2d": h2d, "units": units,
                "res": [(a[i][RES], 1.0) for i in cls],
                "fetch": [(a[i][FETCH], g.wbytes / self.unit_bytes) for i in cls],
                "fetchn": [(a[i][FETCH], 1.0) for i in cls]}  # fmt: skip

    def _blocks(self, subset: list[int], serve: _Serve | None = None) -> list[dict]:
        """Consecutive steps of one phase, up to BLOCK of them, merged into one LP step: their
        groups with equal coefficients merge (the same Jensen argument as within a step), the
        per-step link and DIMM rows hold for the blocks' summed spans, and windows are built
        from whole blocks (a subset of the valid windows). Serving: a block also starts at
        every iteration where a request starts and after every one where a request's token
        that an objective reads is out, and carries the expert budget at its start."""
        out: list[dict] = []
        breaks = serve.breaks if serve is not None else frozenset()
        for s in subset:
            st = self.steps[s]
            last = out[-1] if out else None
            if (last is None or last["last"] + 1 != s or last["phase"] != st["phase"]
                    or last["size"] >= BLOCK or st["phase"] == 0 or s in breaks):  # fmt: skip
                budget = self.budget if serve is None else serve.budget[s]
                out.append({"first": s, "last": s, "phase": st["phase"], "size": 1,
                            "fixed": st["fixed"], "keys": [st["keys"]], "budget": budget,
                            "merge": {}, "groups": []})  # fmt: skip
                last = out[-1]
            else:
                last["last"], last["size"] = s, last["size"] + 1
                last["fixed"] += st["fixed"]
                last["keys"].append(st["keys"])
            for g in st["groups"]:
                if g.totals is not None:  # coarse: counts add up, the largest count stays
                    key = (id(g.coef), g.shared_t, g.wbytes)
                    have = last["merge"].get(key)
                    if have is None:
                        have = last["merge"][key] = _Group(s, 0, g.tokens, g.classes,
                                                           g.shared_t, g.wbytes, g.coef,
                                                           [0] * len(g.classes))  # fmt: skip
                        last["groups"].append(have)
                    have.n += g.n
                    have.classes = tuple((lo, max(a, b)) for (lo, a), (_, b)
                                         in zip(have.classes, g.classes, strict=True))  # fmt: skip
                    have.totals = [a + b for a, b in zip(have.totals, g.totals, strict=True)]
                    continue
                key = (id(g.coef), g.classes, g.shared_t, g.wbytes)
                have = last["merge"].get(key)
                if have is None:
                    have = last["merge"][key] = _Group(s, 0, g.tokens, g.classes, g.shared_t,
                                                       g.wbytes, g.coef)  # fmt: skip
                    last["groups"].append(have)
                have.n += g.n
        for b in out:
            b["keys"] = np.concatenate(b["keys"]) if b["keys"] else np.zeros(0, np.int64)
        return out

    def _windows(self, blocks: list[dict], cold: bool = False) -> list[dict]:
        """Dyadic windows of consecutive blocks (and each whole run) whose used experts do not
        all fit the budget: per window the histogram of per-expert use counts and the budget
        at its start (0 for windows starting at the first block when `cold`)."""
        out: list[dict] = []
        runs: list[list[int]] = []
        for i, b in enumerate(blocks):  # a window must be consecutive in time: split at gaps
            if runs and b["first"] == blocks[runs[-1][-1]]["last"] + 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        for r, run in enumerate(runs):
            out += self._run_windows(run, blocks, cold and r == 0)
        return out

    def _run_windows(self, subset: list[int], blocks: list[dict], cold: bool) -> list[dict]:
        out: list[dict] = []
        n = len(subset)
        pos = np.concatenate([np.full(len(blocks[s]["keys"]), i)
                              for i, s in enumerate(subset)])  # fmt: skip
        keys = np.concatenate([blocks[s]["keys"] for s in subset])
        K = len(self.key_bytes)
        size = 1
        seen = set()
        while True:
            size = min(size, n)
            win = pos // size
            uniq, cnt = np.unique(win * K + keys, return_counts=True)
            wid, key = uniq // K, uniq % K
            for w in np.unique(wid):
                sel = wid == w
                kb = self.key_bytes[key[sel]]
                lo, hi = int(w) * size, min(n, (int(w) + 1) * size)
                budget = 0 if cold and lo == 0 else blocks[subset[lo]]["budget"]
                if kb.sum() <= budget or (lo, hi) in seen:
                    continue
                seen.add((lo, hi))
                pair, mult = np.unique(np.stack([cnt[sel], kb]), axis=1, return_counts=True)
                out.append({"steps": subset[lo:hi], "count": pair[0].tolist(),
                            "bytes": pair[1].tolist(), "mult": mult.tolist(),
                            "budget": budget})  # fmt: skip
            if size >= n:
                break
            size *= 2
        return out
