"""The run-time policy interface: what a dispatch policy sees at each MoE layer and what it returns.

The emitter (`ndpc.backends.emit`) expands a compiled module over a routing trace. At every step (the
prefill of a request is ONE step with many tokens; each decode token is one step) and every MoE
layer, after the router, it builds a `LayerView` and asks the layer's `DispatchPolicy` for a
`LayerDecision`: where each activated expert runs (`Where`), plus copies, evictions and weight moves
to issue. One policy object serves the whole trace, so it may keep state across steps.

Causality is structural: a `LayerView` holds only the current layer's router output of the current
step; `Counters` hold only what was dispatched before (earlier steps, earlier layers of this step).
Policies never see the trace itself. The one exception is a policy class with `ORACLE = True`
(names `oracle-*`), which receives the whole trace in `PolicyContext.oracle_trace` and is reported
as a bound, not as an online method.

Ownership of GPU memory: the emitter keeps the GPU-resident set (`Residency`) and enforces the
budget; policies change it only through the decision's `evict`, `keep` and `prefetch` fields
(processed in that order). Static residency (`moe.resident` in the IR) is loaded before step 0.

Policy classes live one per module, `backends/policies/<rule>.py` for each `ndpc.ir.attrs.DispatchRule`
(module name = the rule's value), each exposing `POLICY: type[DispatchPolicy]`;
`ndpc.backends.policies.policy_class(rule)` finds it, so adding a policy edits no shared registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

import numpy as np

from ndpc.backends.cost import CostModel
from ndpc.backends.target import Target
from ndpc.ir.attrs import DispatchAttr, FfnAttr, ReduceSite
from ndpc.traces.types import Trace


class Where(IntEnum):
    """Where one activated expert runs in one step (values index `LayerDecision.where`)."""

    GPU_RESIDENT = 0  # weights already in GPU memory: compute on the GPU, no transfer
    GPU_FETCH = 1  # copy the weights over the host link (pcie.h2d), then compute on the GPU
    NDP = 2  # compute on its NDP shard units (activation broadcast, partial sums, reduce)
    CPU = 3  # compute on the host CPU from host DRAM (Fiddler); activations cross the host link


@dataclass(frozen=True)
class LayerPlan:
    """Static facts of one MoE layer taken from the compiled IR (read-only for policies).

    `shard_units[e]` lists the NDP units holding expert `e`'s shards (len = its TP degree) at
    compile time; the live placement (after re-plans) is `Placement`.
    """

    layer: int  # decoder-layer index (schedule tag `layer`)
    index: int  # MoE-layer index = trace layer axis
    experts: int
    k: int
    ffn: FfnAttr
    shard_units: tuple[tuple[int, ...], ...]
    reduce: ReduceSite
    dispatch: DispatchAttr

    @property
    def expert_bytes(self) -> int:
        """Weight bytes of one whole expert (what a GPU fetch or prefetch copies)."""
        return self.ffn.weight_bytes


class Placement:
    """Live NDP placement: for each MoE layer and expert, the units that hold its shards.

    Starts from the compiled shard tables; `apply(move)` is called by the emitter when a policy's
    `ShardMove` is issued. Degrees never change at run time, only which units hold the shards.
    """

    def __init__(self, plans: tuple[LayerPlan, ...]) -> None:
        # tuples, replaced on a move: `units` hands them out without a copy (asked per op)
        self._units = [[tuple(u) for u in plan.shard_units] for plan in plans]
        self._alike: list[tuple[int, ...] | None | bool] = [False] * len(plans)  # False: unknown

    def units(self, index: int, expert: int) -> tuple[int, ...]:
        """Units holding `expert` of MoE layer `index`, in shard order."""
        return self._units[index][expert]

    def alike(self, index: int) -> tuple[int, ...] | None:
        """The units of every expert of MoE layer `index` when all hold theirs on the same
        units in the same shard order (full TP), else None."""
        got = self._alike[index]
        if got is False:
            layer = self._units[index]
            got = self._alike[index] = (
                layer[0] if layer and layer.count(layer[0]) == len(layer) else None
            )
        return got

    def apply(self, move: ShardMove) -> None:
        """Record that `move` was issued (the emitter calls this; policies must not)."""
        shards = list(self._units[move.index][move.expert])
        if shards[move.shard] != move.src or move.dst in shards:
            raise ValueError(f"invalid shard move {move}: expert holds units {shards}")
        shards[move.shard] = move.dst
        self._units[move.index][move.expert] = tuple(shards)
        self._alike[move.index] = False


@dataclass(frozen=True)
class ShardMove:
    """Move one expert shard's weights from NDP unit `src` to `dst` (a re-plan); charged in the
    schedule as a transfer of `nbytes` over the inter-unit link, tagged `Reason.REPLAN`."""

    index: int  # MoE-layer index
    expert: int
    shard: int
    src: int
    dst: int
    nbytes: int


class Counters:
    """Expert-use counters the emitter keeps up to date; policies read them, never write them.

    `request[L, E]`: tokens routed to each expert in the current request so far (prefill +
    decode), reset at each request start. `total[L, E]`: the same over every earlier request too.
    `prefill[L, E]`: the current request's prefill only. Everything counted was dispatched before
    the current (step, layer): causal by construction.

    `record` is called for every (step, MoE layer): it updates `request_row` (Python ints, what
    the hot readers use) at once and queues the layer for the arrays, which take the queue in a
    few numpy calls when they are read (or the queue is long), not three per layer.
    """

    FLUSH = 1024  # queued layers that trigger a flush into the arrays

    def __init__(self, layers: int, experts: int) -> None:
        self._request = np.zeros((layers, experts), dtype=np.int64)
        self._prefill = np.zeros((layers, experts), dtype=np.int64)
        self._total = np.zeros((layers, experts), dtype=np.int64)
        # read-only views made once (they follow the arrays; policies read them every layer)
        self._views = tuple(_readonly(a) for a in (self._request, self._prefill, self._total))
        self._rows = [[0] * experts for _ in range(layers)]
        self._queue: list[tuple[int, np.ndarray, np.ndarray, bool]] = []
        self.epoch = 0  # counts only grow between two request starts (each one adds 1)
        self._total_rows: list[list[int]] | None = None  # `total_row`'s, once asked for

    @property
    def request(self) -> np.ndarray:
        """[L, E] tokens per expert in the current request so far (read-only)."""
        if self._queue:
            self._flush()
        return self._views[0]

    @property
    def prefill(self) -> np.ndarray:
        """[L, E] tokens per expert in the current request's prefill (read-only)."""
        if self._queue:
            self._flush()
        return self._views[1]

    @property
    def total(self) -> np.ndarray:
        """[L, E] tokens per expert over every request so far (read-only)."""
        if self._queue:
            self._flush()
        return self._views[2]

    def request_row(self, index: int) -> list[int]:
        """`request[index]` as a list of Python ints, kept current (read it, never write it)."""
        return self._rows[index]

    def total_row(self, index: int) -> list[int]:
        """`total[index]` as a list of Python ints, kept current from the first call on (read
        it, never write it)."""
        if self._total_rows is None:
            self._total_rows = self.total.tolist()
        return self._total_rows[index]

    # --- emitter side -------------------------------------------------------------------
    def start_request(self) -> None:
        """Reset the per-request counters (emitter side)."""
        if self._queue:
            self._flush()
        self._request[:] = 0
        self._prefill[:] = 0
        self.epoch += 1
        width = self._request.shape[1]
        self._rows = [[0] * width for _ in self._rows]

    def record(self, index: int, experts: np.ndarray, counts: np.ndarray, prefill: bool,
               lists: tuple[list[int], list[int]] | None = None) -> None:  # fmt: skip
        """Add one (step, layer)'s routing (after it was dispatched); `experts` are unique.
        `lists`: the same two arrays as Python lists, when the caller has them."""
        ids, cnt = lists if lists is not None else (experts.tolist(), counts.tolist())
        rows = (self._rows[index],)
        if self._total_rows is not None:
            rows += (self._total_rows[index],)
        for row in rows:
            if cnt.count(1) == len(cnt):  # one token each (decode)
                for e in ids:
                    row[e] += 1
            else:
                for e, c in zip(ids, cnt, strict=True):
                    row[e] += c
        self._queue.append((index, experts, counts, prefill))
        if len(self._queue) >= self.FLUSH:
            self._flush()

    def _flush(self) -> None:
        """Add the queued layers to the arrays (integer adds: the order does not matter)."""
        queue, self._queue = self._queue, []
        if len(queue) <= 4:
            for index, experts, counts, prefill in queue:
                # a 1-D add on the layer's row is several times faster than [index, experts]
                self._request[index][experts] += counts
                self._total[index][experts] += counts
                if prefill:
                    self._prefill[index][experts] += counts
            return
        layers, width = self._request.shape
        sizes = [len(q[1]) for q in queue]
        flat = np.concatenate([q[1] for q in queue]).astype(np.int64)
        flat += np.repeat(np.array([q[0] for q in queue], dtype=np.int64) * width, sizes)
        counts = np.concatenate([q[2] for q in queue]).astype(np.int64)
        add = _scatter(flat, counts, layers * width).reshape(layers, width)
        self._request += add
        self._total += add
        pre = np.repeat(np.array([q[3] for q in queue], dtype=bool), sizes)
        if pre.any():
            self._prefill += _scatter(flat[pre], counts[pre], layers * width).reshape(layers, width)


def _scatter(flat: np.ndarray, counts: np.ndarray, size: int) -> np.ndarray:
    """Integer sums of `counts` per index of `flat` (exact)."""
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, flat, counts)
    return out


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class LayerView:
    """What a policy sees at one MoE layer of one step, right after the router.

    `experts` are the activated experts (unique, ascending), `counts[i]` the tokens routed to
    `experts[i]` in this step, `weights[i]` the sum of their routing weights. `resident[e]` is
    True when expert `e` of this layer is in GPU memory now; `placement` gives live NDP units.
    """

    step: int  # 0-based step counter over the trace (prefill of a request = one step)
    phase: int  # backends.schedule.Phase value: 0 prefill, 1 decode
    request: int
    token: int  # global index of the step's first token
    tokens: int  # tokens processed in this step (prompt length for prefill, 1 for decode)
    context: int  # tokens of this request already in the KV cache before this step
    plan: LayerPlan
    experts: np.ndarray
    counts: np.ndarray
    weights: np.ndarray
    resident: np.ndarray
    counters: Counters
    placement: Placement


@dataclass
class LayerDecision:
    """A policy's answer for one (step, MoE layer).

    `where[i]` (a `Where` value, uint8) is the placement of `view.experts[i]`. `unit[i]`, when
    given and >= 0, runs a degree-1 expert on that NDP unit instead of its placed unit (replicas,
    EPLB); the weights must be there (no transfer is charged). Residency changes, in order:
    `evict` (experts of this layer dropped from GPU memory), `keep[i]` (a GPU_FETCH expert stays
    resident after its copy, e.g. an LRU cache), `prefetch` ((MoE-layer index, expert) copies to
    GPU memory issued after this layer's router and overlapped with compute). `moves` are NDP
    shard moves (re-plans), issued before this layer's NDP kernels, which wait for them.
    `serial`: GPU_FETCH experts copy and compute one after another, with no overlap (copy e1,
    compute e1, copy e2, ...), as on-demand offloading does; CPU experts of the layer start after
    the last copy (one host thread issues the copies, then runs them, as Fiddler's loop does).
    """

    where: np.ndarray
    unit: np.ndarray | None = None
    keep: np.ndarray | None = None
    evict: tuple[int, ...] = ()
    prefetch: tuple[tuple[int, int], ...] = ()
    moves: tuple[ShardMove, ...] = ()
    serial: bool = False


@dataclass(frozen=True)
class StepActions:
    """Residency changes a policy or prefetcher asks for at the end of a step or after a layer:
    `evict` then `prefetch`, both as (MoE-layer index, expert) pairs."""

    evict: tuple[tuple[int, int], ...] = ()
    prefetch: tuple[tuple[int, int], ...] = ()


NO_ACTIONS = StepActions()


@dataclass(frozen=True)
class PolicyContext:
    """Everything static a policy may use: the target, the cost model, the compiled layers and
    the GPU memory available to expert weights. Per-layer cost tables are
    `ndpc.backends.expert_cost.ExpertTimes(plan.ffn, cost, act_bytes)`."""

    target: Target
    cost: CostModel
    plans: tuple[LayerPlan, ...]
    units: int
    gpu_expert_budget_bytes: int  # GPU memory for expert weights (prefetch + caches), all layers
    act_bytes: float  # bytes per activation element (the model's dtype)
    counters: Counters | None = None  # live, read-only: the same object every LayerView holds
    placement: Placement | None = None  # live NDP placement (read-only for policies)
    oracle_trace: Trace | None = None  # only for ORACLE policies
    # serving, ORACLE policies with ITERATION_FORESIGHT: the iterations the loop will form, as
    # per iteration the (first row, tokens) of its slices and the expert budget after it
    # (`ndpc.backends.emit` gets them from a previous pass of the same run)
    oracle_iterations: tuple[tuple[tuple[tuple[int, int], ...], int], ...] | None = None


class DispatchPolicy:
    """Base class of run-time dispatch policies (one subclass per `DispatchRule`).

    Subclasses implement `dispatch`; `start_request`, `after_layer` and `end_step` are optional
    hooks. `ORACLE` policies see the whole trace (reported as bounds only).
    """

    NAME: ClassVar[str] = ""
    ORACLE: ClassVar[bool] = False
    PREFETCHER: ClassVar[str] = ""  # non-empty: the schedule header names this prefetcher

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx

    def start_request(self, request: int, prompt_tokens: int) -> None:
        """Called before the prefill of each request."""

    def dispatch(self, view: LayerView) -> LayerDecision:
        """Decide where each activated expert of `view` runs."""
        raise NotImplementedError

    def after_layer(self, view: LayerView) -> StepActions:
        """Called after the layer was dispatched and counted (counters now include it)."""
        return NO_ACTIONS

    def end_step(self, step: int, phase: int, request: int) -> StepActions:
        """Called after the last layer of a step (the LM head follows)."""
        return NO_ACTIONS


def all_on(view: LayerView, where: Where) -> LayerDecision:
    """A decision that sends every activated expert to `where` (resident ones to the GPU if
    `where` is GPU_FETCH, since they need no copy)."""
    out = np.full(len(view.experts), int(where), dtype=np.uint8)
    if where == Where.GPU_FETCH:
        out[view.resident[view.experts]] = Where.GPU_RESIDENT
    return LayerDecision(where=out)
