"""The backend: expand a compiled module over a routing trace into an executable schedule.

`emit_schedule(module, trace, target, cost)` walks the trace step by step. The prefill of each
request is ONE step with all its prompt tokens (each expert sees many tokens, so the GPU/NDP
trade-off differs from decode); every decode token is one step. Per step: embedding, then per
decoder layer the attention block (norm + projections + attention over the growing KV cache) on
the GPU, then either the dense MLP or the router, the run-time dispatch of the layer's activated
experts (`ndpc.backends.policies`), their kernels and transfers, and the combine; finally the LM head.
Steps are chained (the next token needs the previous one's output).

Causality is structural: the loop reads the trace one step at a time and hands policies only a
`LayerView` of the current (step, layer) plus counters of what was already dispatched; the
prefetcher and the policies' hooks run after the layer was emitted. `oracle` policies (ORACLE =
True) are the only ones given the trace. `tests/test_causality.py` checks the property.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ndpc.backends.cost import CostModel
from ndpc.backends.emit_dense import (
    AttentionShape,
    Work,
    batch_attention_work,
    expert_budget_bytes,
    kv_cache_bytes,
    lm_head_work,
    mlp_work,
    router_work,
    shared_work,
)
from ndpc.backends.emit_moe import GPU_KERNEL, SYNC, MoeLayerEmitter
from ndpc.backends.gpu_memory import GpuMemory, Residency
from ndpc.backends.iterations import Batch, count_steps, iter_steps, sequential_batches  # noqa: F401  (re-exported: their old home)
from ndpc.backends.policies import policy_class
from ndpc.backends.policies.base import (
    NO_ACTIONS,
    Counters,
    DispatchPolicy,
    LayerPlan,
    LayerView,
    Placement,
    PolicyContext,
    StepActions,
)
from ndpc.backends.policies.prefetcher import make_prefetcher
from ndpc.backends.schedule import Phase, Reason, Schedule, ScheduleBuilder
from ndpc.backends.serving import (
    IterationClock,
    RecordedScheduler,
    ServingConfig,
    ServingScheduler,
    trace_requests,
)
from ndpc.backends.target import Target, resource_names
from ndpc.ir.attrs import DispatchAttr, DispatchRule, FfnAttr, ReduceSite
from ndpc.ir.core import Module
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.ops import (
    AttentionOp,
    DispatchOp,
    EmbeddingOp,
    ExpertShardsOp,
    ExpertsOp,
    LmHeadOp,
    MlpOp,
    PrefetchPolicyOp,
    ReduceOp,
    ResidentOp,
    RouterOp,
    SharedExpertsOp,
)
from ndpc.traces.types import Trace

R_DENSE, R_ROUTER, PREFILL = int(Reason.DENSE), int(Reason.ROUTER), int(Phase.PREFILL)
PREFETCH_PER_UNIT_AND_LAYER = 1  # deferred prefetch shard copies issued per unit after a layer
DEFAULT_CONTEXT = 4096  # tokens of KV cache reserved when deriving the GPU expert budget


@dataclass
class DecoderLayer:
    """The ops of one decoder layer the emitter needs (None where absent)."""

    layer: int
    attention: AttentionOp | None = None
    mlp: MlpOp | None = None
    router: RouterOp | None = None
    shared: SharedExpertsOp | None = None
    ffn: FfnAttr | None = None  # the routed experts' shape (moe.experts or moe.expert_shards)
    moe_index: int = -1


def decoder_layers(
    module: Module,
) -> tuple[list[DecoderLayer], EmbeddingOp | None, LmHeadOp | None]:
    """The decoder layers (layer >= 0, in order) of a module's function, before or after the
    policy's passes, with its embedding and LM head. Shared by the emitter and the optimum."""
    layers: dict[int, DecoderLayer] = {}
    emb = head = None
    for op in module.funcs[0].ops if module.funcs else ():
        if isinstance(op, EmbeddingOp):
            emb = op
        elif isinstance(op, LmHeadOp):
            head = op
        layer = getattr(op, "layer", None)
        if not isinstance(layer, int) or layer < 0:
            continue
        entry = layers.setdefault(layer, DecoderLayer(layer))
        if isinstance(op, AttentionOp):
            entry.attention = op
        elif isinstance(op, MlpOp):
            entry.mlp = op
        elif isinstance(op, RouterOp):
            entry.router = op
        elif isinstance(op, SharedExpertsOp):
            entry.shared = op
        elif isinstance(op, ExpertsOp | ExpertShardsOp):
            entry.ffn = op.ffn
    return [layers[k] for k in sorted(layers)], emb, head


@dataclass
class Program:
    """A compiled module, read for emission: decoder layers, MoE layer plans, extras."""

    layers: list[DecoderLayer]
    plans: tuple[LayerPlan, ...]
    embedding: EmbeddingOp | None
    lm_head: LmHeadOp | None
    prefetch: PrefetchPolicyOp | None
    resident: list[ResidentOp]
    act_bytes: float


def read_program(module: Module) -> Program:
    """Collect the per-layer ops; fail when a layer's experts were never placed on NDP units."""
    if not module.funcs:
        raise NdpcError(f"module @{module.name} has no function", module.loc)
    shards: dict[int, ExpertShardsOp] = {}
    reduces: dict[int, ReduceSite] = {}
    dispatch: dict[int, DispatchAttr] = {}
    for op in module.funcs[0].ops:
        if isinstance(op, ExpertsOp):
            raise NdpcError(
                f"layer {op.layer}: experts are not placed on NDP units; run tp-split first "
                "(e.g. --policy paper or -p tp-split)",
                op.loc,
                module.source or None,
            )
        if isinstance(op, ExpertShardsOp):
            shards[op.layer] = op
        elif isinstance(op, ReduceOp):
            reduces[op.layer] = op.site
        elif isinstance(op, DispatchOp):
            dispatch[op.layer] = op.dispatch
    ordered, emb, head = decoder_layers(module)
    plans = []
    for entry in ordered:
        if entry.router is None:
            continue
        if entry.layer not in shards:
            raise NdpcError(f"layer {entry.layer}: router without expert shards", entry.router.loc)
        entry.moe_index = len(plans)
        plans.append(_plan(entry, shards[entry.layer], reduces, dispatch))
    decls = module.decls
    prefetch = next((op for op in decls if isinstance(op, PrefetchPolicyOp)), None)
    resident = [op for op in decls if isinstance(op, ResidentOp)]
    act = next((op.dtype.nbytes for op in module.ops_of(AttentionOp)), 2.0)
    return Program(ordered, tuple(plans), emb, head, prefetch, resident, act)


def _plan(entry: DecoderLayer, op: ExpertShardsOp, reduces, dispatch) -> LayerPlan:
    assert entry.router is not None
    return LayerPlan(
        layer=entry.layer,
        index=entry.moe_index,
        experts=op.experts,
        k=entry.router.router.k,
        ffn=op.ffn,
        shard_units=tuple(spec.units for spec in op.shards.specs),
        reduce=reduces.get(entry.layer, ReduceSite.GPU),
        dispatch=dispatch.get(entry.layer, DispatchAttr(DispatchRule.NDP_ONLY)),
    )


def emit_schedule(
    module: Module,
    trace: Trace,
    target: Target,
    cost: CostModel,
    *,
    progress: Callable[[int], None] | None = None,
    meta: dict[str, Any] | None = None,
    trace_name: str = "trace",
    serving: ServingConfig | None = None,
) -> Schedule:
    """Expand `module` over `trace` on `target` into a `Schedule` (see the module docstring).
    `trace_name` (e.g. the file) prefixes errors about the trace. `serving` runs the trace's
    requests through the serving loop (`ndpc.backends.serving`); None: batch 1, one request
    after another."""
    program = read_program(module)
    _check_trace(program, trace, module, trace_name)
    _check_units(program, target)
    foresight = serving is not None and any(
        getattr(policy_class(plan.dispatch.rule), "ITERATION_FORESIGHT", False)
        for plan in program.plans
    )
    # The emitter creates no reference cycles; pausing the cyclic collector saves ~20 % at 1M ops.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if not foresight:
            emitter = _Emitter(program, module, trace, target, cost, meta or {})
            if serving is not None:
                emitter.serve(module, serving, trace_name)
            return emitter.run(progress)
        return _emit_with_foresight(program, module, trace, target, cost, meta or {}, serving,
                                    trace_name, progress)  # fmt: skip
    finally:
        if was_enabled:
            gc.enable()


FORESIGHT_PASSES = 4  # serving passes an oracle may take to see the iterations it will run


def _emit_with_foresight(program, module, trace, target, cost, meta, serving, trace_name,
                         progress) -> Schedule:  # fmt: skip
    """Serving with an oracle that needs the iteration sequence (`oracle-cache`): emit, give
    the oracle the iterations (and expert budgets) that pass formed, emit again, until a pass
    forms the iterations it was given (or FORESIGHT_PASSES); `meta.serving.oracle_foresight`
    says whether the last pass's foresight was exact (docs/policies.md)."""
    seen = None
    for n in range(1, FORESIGHT_PASSES + 1):
        emitter = _Emitter(program, module, trace, target, cost, meta, seen)
        emitter.serve(module, serving, trace_name)
        last = n == FORESIGHT_PASSES
        schedule = emitter.run(progress if last else None)
        got = tuple((tuple((int(f), int(t)) for _, _, f, t in row[5]), int(row[4]))
                    for row in schedule.meta["serving"]["batches"])  # fmt: skip
        exact = got == seen
        if exact or last:
            schedule.meta["serving"]["oracle_foresight"] = {"passes": n, "exact": exact}
            if progress is not None and not last:
                progress(len(got))
            return schedule
        seen = got
    raise AssertionError("unreachable")


def _check_units(program: Program, target) -> None:
    units = int(target.ndp_units)
    for plan in program.plans:
        top = max(max(u) for u in plan.shard_units)
        if top >= units:
            raise NdpcError(
                f"layer {plan.layer}: expert shards use NDP unit {top} but target {target.name} "
                f"has {units} unit(s); compile for this target (or --set ndp.units={top + 1})"
            )


def _check_trace(program: Program, trace, module: Module, name: str) -> None:
    plans = program.plans
    meta = trace.meta
    if meta.layers != len(plans):
        raise NdpcError(
            f"{name}: the trace has {meta.layers} MoE layers but model @{module.name} has "
            f"{len(plans)}"
        )
    if plans and meta.experts != plans[0].experts:
        raise NdpcError(
            f"{name}: the trace routes over {meta.experts} experts, model @{module.name} has "
            f"{plans[0].experts}"
        )
    if plans and meta.k != plans[0].k:
        raise NdpcError(
            f"{name}: the trace has top-{meta.k} routing, model @{module.name} uses "
            f"top-{plans[0].k}"
        )


class _Emitter:
    """One emission run (all mutable state lives here, none in module globals)."""

    def __init__(self, program: Program, module: Module, trace: Trace, target: Target,
                 cost: CostModel, meta: dict[str, Any], foresight=None) -> None:  # fmt: skip
        self.p, self.trace, self.target, self.cost = program, trace, target, cost
        self.units = int(target.ndp_units)
        self.ops = ScheduleBuilder(resource_names(target))
        plans = program.plans
        experts = plans[0].experts if plans else 1
        budget = self._budget(module)
        self.foresight = foresight  # serving oracles: the iterations of a previous pass
        self.counters = Counters(len(plans), experts)
        self.placement = Placement(plans)
        self.residency = Residency(len(plans), experts, [p.expert_bytes for p in plans], budget)
        self.memory = GpuMemory(
            self.residency, self.ops, self.placement, self.ops.index["pcie.h2d"]
        )
        self.moe = MoeLayerEmitter(self.ops, self.memory, self.placement, self.units,
                                   bool(target.has_ndp_link), program.act_bytes, cost)  # fmt: skip
        self.policies = self._policies(budget)
        self.prefetcher = (
            make_prefetcher(program.prefetch.policy, plans, cost, program.act_bytes)
            if program.prefetch
            else None
        )
        self.stats = {"prefetches": 0, "evictions": 0, "steps": 0}
        self.warmup_copies = 0  # queued prefetch copies issued at the end of warm-up steps
        # On targets whose NDP units exclude host access during compute, prefetch shard copies
        # are queued and issued one per unit behind each later MoE layer's NDP kernels (in the
        # gap before the next layer's), or at once when a hit needs them (docs/passes.md).
        self.defer = PREFETCH_PER_UNIT_AND_LAYER if target.exclusive_host_access else 0
        self.meta = dict(meta)
        self.meta.update(self._header(module, budget))
        self._distinct_policies = list(dict.fromkeys(self.policies))
        # the policies with an `after_layer` hook (the base class's does nothing)
        self._after_layer = {
            p for p in self._distinct_policies
            if type(p).after_layer is not DispatchPolicy.after_layer
        }  # fmt: skip
        # per MoE layer: its read-only view of the resident mask (a view follows the mask)
        self._resident = [_readonly(row) for row in self.residency.mask]
        self._attention: dict[int, AttentionShape] = {}
        self._routes_block: tuple[int, list[list[tuple]]] = (0, [])  # `_row_routes`'s rows
        self._step_attention: dict[tuple, tuple[float, float]] = {}  # this step's, per shape
        self._works: dict[tuple[int, str, int], Work] = {}
        self._load_static_residency()

    def _budget(self, module: Module) -> int:
        if self.p.prefetch is not None:
            return int(self.p.prefetch.policy.budget_bytes)
        return expert_budget_bytes(module, int(self.target.gpu_memory_bytes), DEFAULT_CONTEXT)

    def _policies(self, budget: int) -> list[DispatchPolicy]:
        cache: dict[DispatchRule, DispatchPolicy] = {}
        for plan in self.p.plans:
            rule = plan.dispatch.rule
            if rule not in cache:
                cls = policy_class(rule)
                ctx = PolicyContext(self.target, self.cost, self.p.plans, self.units, budget,
                                    self.p.act_bytes, self.counters, self.placement,
                                    self.trace if cls.ORACLE else None,
                                    self.foresight if cls.ORACLE else None)  # fmt: skip
                cache[rule] = cls(ctx)
        return [cache[plan.dispatch.rule] for plan in self.p.plans]

    def _header(self, module: Module, budget: int) -> dict[str, Any]:
        names = [p.NAME for p in self.policies]
        pf = ""
        if self.prefetcher is not None and self.prefetcher.active:
            pf = "dataset-free"
        pf = pf or next((p.PREFETCHER for p in self.policies if p.PREFETCHER), "")
        return {
            "model": module.name,
            "target": self.target.name,
            "dispatch": sorted(set(names)),
            "prefetcher": pf or "none",
            "gpu_expert_budget_bytes": budget,
            "trace_model": self.trace.meta.model,
        }

    def _load_static_residency(self) -> None:
        """Static residency (`moe.resident`) is in GPU memory before the first step, as a
        runtime loads it with the model; it is not timed, but its bytes and what copying them
        over the host link would take are recorded (`static_load_s`, docs/simulator.md §4)."""
        index_of = {plan.layer: plan.index for plan in self.p.plans}
        self.static_bytes, self.static_load_s = 0, 0.0
        for op in self.p.resident:
            plan = self.p.plans[index_of[op.layer]]
            for e in op.experts:
                self.residency.add(plan.index, e, -1)
                units = len(self.placement.units(plan.index, e))
                self.static_bytes += plan.expert_bytes
                self.static_load_s += self.cost.copy_time("pcie.h2d", plan.expert_bytes, units)

    # --- the iteration loop -----------------------------------------------------------------
    def serve(self, module: Module, config: ServingConfig, trace_name: str) -> None:
        """Run the serving loop instead of batch 1 (see `ndpc.backends.serving`)."""
        kv_token = kv_cache_bytes(module, 1)
        pool = expert_budget_bytes(module, int(self.target.gpu_memory_bytes), 0)
        requests = trace_requests(self.trace, trace_name)
        kv_pool = pool if config.memory == "kv-first" else max(0, pool - self.residency.budget)
        batching = config.resolve(self.trace.meta.iterations is not None)
        if batching == "recorded":
            if self.trace.meta.iterations is None:
                raise NdpcError(f"{trace_name}: --batching recorded needs a trace that recorded "
                                "its iterations (`ndpc trace import` of a batch-jsonl capture; "
                                "docs/traces.md)")  # fmt: skip
            sched = RecordedScheduler(requests, config, kv_token, kv_pool,
                                      iterations=self.trace.meta.iterations)  # fmt: skip
        else:
            sched = ServingScheduler(requests, config, kv_token, kv_pool)
        self.serving = (config, sched, pool)
        self.residency.strict = False

    def run(self, progress: Callable[[int], None] | None) -> Schedule:
        """Emit every batch (batch 1, requests one after another, or the serving loop) and
        build the schedule."""
        if getattr(self, "serving", None) is not None:
            self._serve_loop(progress)
        else:
            last = -1
            for batch in sequential_batches(self.trace):
                self._start_requests(batch)
                last = self._batch(batch, last)
                self.ops.compact()
                self.stats["steps"] += 1
                if progress is not None:
                    progress(1)
        self.meta["emit"] = {**self.stats, **self.moe.stats}
        if self.memory.reused:
            self.meta["emit"]["prefetch_reused"] = self.memory.reused
        if self.warmup_copies:
            self.meta["emit"]["warmup_flushed"] = self.warmup_copies
        if self.static_bytes:
            self.meta["emit"]["static_resident_bytes"] = self.static_bytes
            self.meta["emit"]["static_load_s"] = self.static_load_s
        if self.prefetcher is not None:
            self.meta["emit"]["prefetch_swaps"] = self.prefetcher.swaps
        # the run's look-up tables are not needed to build the schedule (peak memory)
        self._routes_block = (0, [])
        self.moe.clear_caches()
        return self.ops.build(self.meta)

    def _start_requests(self, batch: Batch) -> None:
        for sl in batch.slices:
            if sl.starts_request:
                self.counters.start_request()
                for pol in self._distinct_policies:
                    pol.start_request(sl.request, sl.tokens if sl.phase == 0 else 0)

    def _serve_loop(self, progress: Callable[[int], None] | None) -> None:
        """Iterations formed at each boundary by the scheduler, timed by the clock; the KV cache
        held after each iteration sets the expert budget (`GpuMemory.shrink_to`)."""
        config, sched, pool = self.serving
        clock = IterationClock(self.ops, self.target, self.cost)
        configured = self.residency.budget
        last, now = -1, 0.0
        table: list[list[Any]] = []
        release: list[list[float]] = []
        arrival = {r.id: r.arrival for r in sched.requests}
        while not sched.done:
            idle = not sched.running and not sched.waiting
            if idle and sched.next_arrival() > now:
                now = sched.next_arrival()
            batch = sched.form(now)
            first = batch.slices[0]
            lo = len(self.ops)
            # An iteration that admits a request waits for its arrival: when nothing runs (the
            # loop advanced `now` to it) and also when the clock, which replays multi-slot
            # links as one FIFO, ran behind the simulator (docs/optimum.md §7 relies on it)
            at = max((arrival[s.request] for s in batch.slices if s.starts_request), default=0.0)
            if at > 0.0:
                bg = self.ops.tag(first.phase, first.request, -1)
                rel = self.ops.append(bg, SYNC, self.moe.gpu, 0.0, 0.0, 0.0, [], -1, -1, -1, -1,
                                      int(Reason.NONE))  # fmt: skip
                clock.release[rel] = at
                release.append([rel, at])
                deps = [rel] if last < 0 else [last, rel]
                last = self.ops.append(bg, SYNC, self.moe.gpu, 0.0, 0.0, 0.0, deps, -1, -1, -1,
                                       -1, int(Reason.NONE))  # fmt: skip
            self._start_requests(batch)
            last = self._batch(batch, last)
            sched.finish(batch)
            kv = sched.kv_used()
            cap = configured
            if config.memory == "kv-first":
                cap = int(min(configured, max(0.0, pool - kv)))
            bg = self.ops.tag(first.phase, first.request, -1)
            for index, e in self.memory.shrink_to(cap):
                self.ops.append(bg, SYNC, self.moe.gpu, 0.0, 0.0, 0.0, [last],
                                self.p.plans[index].layer, e, -1, -1, int(Reason.EVICT))  # fmt: skip
                self.stats["evictions"] += 1
            clock.advance(lo)
            now = clock.time_of(last)
            table.append([batch.index, lo, len(self.ops), int(kv), cap,
                          [[s.request, s.phase, s.first, s.tokens] for s in batch.slices]])  # fmt: skip
            self.ops.compact()
            self.stats["steps"] += 1
            if progress is not None:
                progress(1)
        self.meta["serving"] = {
            **({"batching": "recorded"} if isinstance(sched, RecordedScheduler) else {}),
            "max_batch": config.max_batch,
            "token_budget": config.token_budget,
            "chunked_prefill": config.chunked_prefill,
            "memory": config.memory,
            "kv_token_bytes": sched.kv_token_bytes,
            "kv_pool_bytes": pool,
            "requests": [[r.id, r.arrival, r.prompt, r.decode] for r in sched.requests],
            "release": release,
            "batches": table,
        }

    def _batch(self, batch: Batch, last: int) -> int:
        """Emit one iteration after op `last` (the previous iteration's output); returns its
        output op. Its ops carry the tag of its first slice, background copies the same tag
        with token -1 (they may run on behind the iteration: TTFT and TPOT do not wait).

        Warm-up rule: in an iteration of prefills only, the copies the policies ask for (the
        prefetch set built from the prompt) are part of the iteration, issued at once (on
        targets that defer prefetch copies: queued ones go out at the iteration's end), so
        TTFT includes them instead of the first decode steps (docs/simulator.md §4)."""
        first = batch.slices[0]
        phase, request, token, tokens = first.phase, first.request, first.first, batch.tokens
        tag = self.ops.tag(phase, request, token)
        warmup = all(s.phase == int(Phase.PREFILL) for s in batch.slices)
        bg = tag if warmup else self.ops.tag(phase, request, -1)
        if self.prefetcher is not None:
            self.prefetcher.start_step(warmup)
        if not self.p.plans:
            routes = []
        elif tokens == 1 and getattr(self, "serving", None) is None:  # a decode step, batch 1
            routes = self._row_routes(token)
        else:
            if len(batch.slices) == 1:  # this step's rows only
                experts = self.trace.experts[token : token + tokens]
                weights = self.trace.weights[token : token + tokens]
            else:
                rows = np.concatenate(
                    [np.arange(s.first, s.first + s.tokens) for s in batch.slices]
                )
                experts, weights = self.trace.experts[rows], self.trace.weights[rows]
            routes = _route_layers(experts, weights, self.p.plans[0].experts)
        step = self.stats["steps"]
        phase_all = _batch_phase(batch)
        # what every layer's view shares: (step, phase, request, token, tokens, context)
        shared = (step, phase_all, request, token, tokens, first.context)
        h = last  # the next token needs the previous one's output
        self._step_attention.clear()
        if self.p.embedding is not None:
            h = self._dense(tag, self._embed_work(tokens), [h], -1, Reason.DENSE)
        for dl in self.p.layers:
            h = self._layer(dl, batch, tag, bg, routes, shared, h)
        out = h
        if self.p.lm_head is not None:
            out = self._dense(tag, lm_head_work(self.p.lm_head), [h], -1, Reason.DENSE)
        for pol in self._distinct_policies:
            self._apply(pol.end_step(step, phase, request), out, bg)
        if warmup:
            self.warmup_copies += self.memory.flush_all(out, tag)
        return out

    def _row_routes(self, row: int) -> list[tuple]:
        """`_route_layers` of trace row `row` alone; batch-1 decode reads the rows in order, so
        they are routed ROUTE_ROWS at a time (a few numpy calls per block, not per step)."""
        lo, block = self._routes_block
        if not lo <= row < lo + len(block):
            hi = min(row + ROUTE_ROWS, len(self.trace.experts))
            block = _route_rows(self.trace.experts[row:hi], self.trace.weights[row:hi],
                                self.p.plans[0].experts)  # fmt: skip
            lo, self._routes_block = row, (row, block)
        return block[row - lo]

    def _embed_work(self, tokens: int) -> Work:
        emb = self.p.embedding
        assert emb is not None
        return Work(0.0, tokens * emb.d_model * emb.dtype.nbytes)

    def _dense(self, tag: int, work: Work, deps: list[int], layer: int, reason: Reason) -> int:
        """A GPU kernel after `deps` (negative ids = nothing before it)."""
        deps = [d for d in deps if d >= 0]
        return self.ops.append(tag, GPU_KERNEL, self.moe.gpu, work.flops, work.mem_bytes, 0.0,
                               deps, layer, -1, -1, -1, int(reason))  # fmt: skip

    def _work(self, dl: DecoderLayer, what: str, tokens: int) -> Work:
        """The work of a layer's router, shared experts or dense MLP over `tokens` tokens,
        memoised (it depends on nothing else)."""
        key = (dl.layer, what, tokens)
        work = self._works.get(key)
        if work is None:
            if what == "router":
                assert dl.router is not None
                d = self.p.plans[dl.moe_index].ffn.d_model
                work = router_work(dl.router, d, self.p.act_bytes, tokens)
            elif what == "shared":
                assert dl.shared is not None
                work = shared_work(dl.shared, tokens)
            else:
                assert dl.mlp is not None
                work = mlp_work(dl.mlp, tokens)
            self._works[key] = work
        return work

    def _layer(self, dl: DecoderLayer, batch: Batch, tag: int, bg: int, routes: list[tuple],
               shared: tuple, h: int) -> int:  # fmt: skip
        tokens = shared[4]
        append, gpu, layer = self.ops.append, self.moe.gpu, dl.layer
        deps = [h] if h >= 0 else []
        if dl.attention is not None:  # each sequence attends over its own KV cache
            if len(batch.slices) == 1:
                shape = self._attention.get(layer)
                if shape is None:
                    shape = self._attention[layer] = AttentionShape(dl.attention)
                # layers of one shape cost the same in a step: priced once per step
                work = self._step_attention.get(shape.key)
                if work is None:
                    work = self._step_attention[shape.key] = shape.work(tokens, shared[5])
                flops, mem = work
            else:
                work = batch_attention_work(
                    dl.attention, [(s.tokens, s.context) for s in batch.slices]
                )
                flops, mem = work.flops, work.mem_bytes
            h = append(tag, GPU_KERNEL, gpu, flops, mem, 0.0, deps, layer, -1, -1, -1, R_DENSE)
            deps = [h]
        if dl.mlp is not None:
            work = self._work(dl, "mlp", tokens)
            return append(tag, GPU_KERNEL, gpu, work.flops, work.mem_bytes, 0.0, deps, layer, -1,
                          -1, -1, R_DENSE)  # fmt: skip
        if dl.router is None:
            return h
        plan = self.p.plans[dl.moe_index]
        work = self._work(dl, "router", tokens)
        router = append(tag, GPU_KERNEL, gpu, work.flops, work.mem_bytes, 0.0, deps, layer, -1,
                        -1, -1, R_ROUTER)  # fmt: skip
        extra = []
        if dl.shared is not None:
            work = self._work(dl, "shared", tokens)
            extra.append(append(tag, GPU_KERNEL, gpu, work.flops, work.mem_bytes, 0.0, deps, layer,
                                -1, -1, -1, R_DENSE))  # fmt: skip
        index = plan.index
        ids, counts, wsum, lists = routes[index]
        view = _new_view(LayerView)
        step, phase, request, token, tokens, context = shared
        _set_fields(view, "__dict__", {
            "step": step, "phase": phase, "request": request, "token": token, "tokens": tokens,
            "context": context, "plan": plan, "experts": ids, "counts": counts, "weights": wsum,
            "resident": self._resident[index], "counters": self.counters,
            "placement": self.placement})  # fmt: skip
        policy = self.policies[index]
        out = self.moe.emit(view, policy.dispatch(view), router, extra, tag, lists)
        self.counters.record(index, ids, counts, shared[1] == PREFILL, lists)
        if policy in self._after_layer:
            self._apply(policy.after_layer(view), router, bg)
        if self.prefetcher is not None:
            self._apply(self.prefetcher.after_layer(view), router, bg)
        if self.defer > 0 and self.memory.pending:
            self.memory.drain(self.defer, router, bg)
        return out

    def _apply(self, actions: StepActions, after: int, bg: int) -> None:
        """Evictions (SYNC markers) then prefetch copies (PREFETCH on pcie.h2d) after op `after`.

        These are background work: they carry the background tag `bg` (token -1), so a step
        (TTFT, TPOT) ends with its own work, not with copies that run on behind it (they still
        occupy the link they use)."""
        if actions is NO_ACTIONS or actions is None or (not actions.evict and not actions.prefetch):
            return
        after_deps = [after] if after >= 0 else []
        for index, e in actions.evict:
            if self.memory.evict(index, e):
                self.ops.append(bg, SYNC, self.moe.gpu, 0.0, 0.0, 0.0, after_deps,
                                self.p.plans[index].layer, e, -1, -1, int(Reason.EVICT))  # fmt: skip
                self.stats["evictions"] += 1
        for index, e in actions.prefetch:
            if self.residency.mask[index, e]:
                continue
            plan = self.p.plans[index]
            if not self.residency.add(index, e, -1):
                continue  # serving: the KV cache left no room
            if self.memory.prefetch(index, e, plan.layer, float(plan.expert_bytes), after_deps,
                                    self.defer > 0, bg):  # fmt: skip
                self.stats["prefetches"] += 1


def _batch_phase(batch: Batch) -> int:
    """PREFILL when any slice of the batch is prefill (policies treat it as a many-token step)."""
    return min(s.phase for s in batch.slices)


def _route(experts: np.ndarray, weights: np.ndarray, n_experts: int):
    """Unique activated experts of one step at one layer, tokens per expert and weight sums."""
    flat = experts.ravel()
    if experts.shape[0] == 1:  # decode: k distinct experts (sorted for a canonical order)
        order = np.argsort(flat, kind="stable")
        ids = flat[order].astype(np.int64)
        if len(ids) < 2 or np.all(ids[1:] != ids[:-1]):
            return ids, np.ones(len(ids), dtype=np.int64), weights.ravel()[order].astype(np.float64)
    counts = np.bincount(flat, minlength=n_experts)
    wsum = np.bincount(flat, weights=weights.ravel().astype(np.float64), minlength=n_experts)
    ids = np.flatnonzero(counts)
    return ids, counts[ids].astype(np.int64), wsum[ids]


def _route_layers(experts: np.ndarray, weights: np.ndarray, n_experts: int) -> list[tuple]:
    """`_route` of every MoE layer of one iteration ([rows, L, k] in), with a few numpy calls for
    all layers together instead of several per layer; the same arrays, value for value (the
    weight sums add up in the same order). Ids outside [0, n_experts): `_route` per layer."""
    rows, layers, k = experts.shape
    if rows == 0 or layers == 0 or experts.min() < 0 or experts.max() >= n_experts:
        return [
            _with_lists(*_route(experts[:, i], weights[:, i], n_experts)) for i in range(layers)
        ]
    if rows == 1:
        flat = experts[0]
        order = np.argsort(flat, axis=1, kind="stable")
        ids = np.take_along_axis(flat, order, 1).astype(np.int64)
        if k >= 2 and (ids[:, 1:] == ids[:, :-1]).any():  # a repeated expert: rare, per layer
            return [_with_lists(*_route(experts[:, i], weights[:, i], n_experts))
                    for i in range(layers)]  # fmt: skip
        wsum = np.take_along_axis(weights[0], order, 1).astype(np.float64)
        ones = np.ones((layers, k), dtype=np.int64)
        lists = zip(ids.tolist(), ones.tolist(), strict=True)
        return list(zip(ids, ones, wsum, lists, strict=True))
    flat = (experts.astype(np.int64) + np.arange(0, layers * n_experts, n_experts)[:, None]).ravel()
    size = layers * n_experts
    counts = np.bincount(flat, minlength=size)
    wsum = np.bincount(flat, weights=weights.astype(np.float64).ravel(), minlength=size)
    hit = np.flatnonzero(counts)
    layer_of, ids = np.divmod(hit, n_experts)
    cut = np.searchsorted(layer_of, np.arange(layers + 1)).tolist()
    counts, wsum = counts[hit], wsum[hit]
    return [_with_lists(ids[a:b], counts[a:b], wsum[a:b])
            for a, b in zip(cut[:-1], cut[1:], strict=True)]  # fmt: skip


ROUTE_ROWS = 16  # trace rows routed together for batch-1 decode


def _route_rows(experts: np.ndarray, weights: np.ndarray, n_experts: int) -> list[list[tuple]]:
    """`_route_layers(experts[r:r+1], weights[r:r+1], n_experts)` for every row r ([rows, L, k]
    in): the same arrays, value for value, from a few numpy calls for all rows."""
    rows, layers, k = experts.shape
    if layers == 0:
        return [[] for _ in range(rows)]
    order = np.argsort(experts, axis=2, kind="stable")
    ids = np.take_along_axis(experts, order, 2).astype(np.int64)
    odd = (experts.min(axis=(1, 2)) < 0) | (experts.max(axis=(1, 2)) >= n_experts)
    if k >= 2:  # a repeated expert: rare, routed per layer
        odd |= (ids[:, :, 1:] == ids[:, :, :-1]).any(axis=(1, 2))
    wsum = np.take_along_axis(weights, order, 2).astype(np.float64)
    ones = np.ones((rows, layers, k), dtype=np.int64)
    id_lists, one_lists = ids.tolist(), ones.tolist()
    out = []
    for r in range(rows):
        if odd[r]:
            out.append(_route_layers(experts[r : r + 1], weights[r : r + 1], n_experts))
        else:
            lists = zip(id_lists[r], one_lists[r], strict=True)
            out.append(list(zip(ids[r], ones[r], wsum[r], lists, strict=True)))
    return out


def _with_lists(ids: np.ndarray, counts: np.ndarray, wsum: np.ndarray) -> tuple:
    """A layer's route plus its ids and counts as Python lists (the emitter reads those)."""
    return ids, counts, wsum, (ids.tolist(), counts.tolist())


# A LayerView is made per MoE layer and step: filling its __dict__ at once costs a fraction of
# the frozen dataclass's __init__ (one object.__setattr__ per field); the object is the same.
_new_view, _set_fields = object.__new__, object.__setattr__


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view
