"""The serving loop: iteration-level batching of many requests (Orca / vLLM style).

`ServingScheduler` forms each iteration's `Batch` at the iteration boundary: requests that have
arrived wait in a FCFS queue; running requests each contribute their next slice (one decode
token, or the next prefill chunk); waiting requests are admitted while the batch has fewer than
`max_batch` sequences, the iteration's token budget allows their prompt (or, with chunked
prefill, a chunk of it, Sarathi style) and their KV cache fits. Admission reserves a request's
whole KV cache (prompt + output tokens, as Orca reserves the maximum length), so a running
request never runs out of KV memory and nothing is preempted; a request that does not fit waits.
The KV cache actually held grows token by token and is freed when a request finishes; GPU memory
for experts (the prefetch budget) is what it leaves (`ndpc.backends.gpu_memory`).

The emitter needs the time of each iteration boundary to know which requests have arrived:
`IterationClock` replays each emitted iteration's ops with the simulator's list-scheduling rule
(`engine.run_fast`: ops in id order, each resource FIFO) on the cost model's durations. When
nothing runs and the next request has not arrived, the iteration starts with a release wait
(a SYNC op lasting until the arrival time, listed in `meta.serving.release`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ndpc.backends.bounds import use_compiled
from ndpc.backends.cost import CostModel
from ndpc.backends.iterations import Batch, SeqSlice
from ndpc.backends.schedule import OpKind, ScheduleBuilder
from ndpc.backends.target import Target, resource_specs
from ndpc.ir.diagnostics import NdpcError
from ndpc.traces.types import Trace


@dataclass(frozen=True)
class ServingConfig:
    """How iterations are formed (`ndpc run --max-batch/--token-budget/--chunked-prefill`)."""

    max_batch: int = 1  # sequences per iteration
    token_budget: int = 0  # tokens per iteration (0: no limit)
    chunked_prefill: bool = False  # split prompts to fill the token budget (needs a budget)
    # GPU memory split: "kv-first" (experts get what the KV cache leaves, evicted as it grows)
    # or "static" (the expert budget is reserved; the KV cache gets the rest, so a larger
    # prefetch budget admits fewer concurrent requests)
    memory: str = "kv-first"
    # "loop": form iterations (above); "recorded": replay the trace's recorded iterations
    # (an imported serving capture, `TraceMeta.iterations`) as they were batched; "auto":
    # recorded when the trace recorded them and no loop option (max_batch > 1, a token budget,
    # chunked prefill) is set, else loop
    batching: str = "auto"

    def resolve(self, recorded: bool) -> str:
        """The batching to run for a trace that does (`recorded`) or does not record iterations."""
        if self.batching != "auto":
            return self.batching
        plain = self.max_batch == 1 and not self.token_budget and not self.chunked_prefill
        return "recorded" if recorded and plain else "loop"

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise NdpcError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.token_budget < 0:
            raise NdpcError(f"--token-budget must be >= 0, got {self.token_budget}")
        if self.chunked_prefill and self.token_budget == 0:
            raise NdpcError("--chunked-prefill needs --token-budget N (the chunk size)")
        if self.memory not in ("kv-first", "static"):
            raise NdpcError(f"--kv-memory must be kv-first or static, got {self.memory!r}")
        if self.batching not in ("auto", "loop", "recorded"):
            raise NdpcError(f"--batching must be loop or recorded, got {self.batching!r}")
        if self.batching == "recorded" and (self.max_batch != 1 or self.token_budget
                                            or self.chunked_prefill):  # fmt: skip
            raise NdpcError("--batching recorded replays the trace's iterations as recorded: "
                            "--max-batch, --token-budget and --chunked-prefill do not apply")  # fmt: skip


@dataclass
class Request:
    """One request of the trace: its rows and its progress."""

    id: int
    arrival: float
    first: int  # trace row of its first token
    prompt: int  # prefill rows
    decode: int  # decode rows (output tokens after the first)
    done_prompt: int = 0
    done_decode: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.decode

    @property
    def finished(self) -> bool:
        return self.done_prompt == self.prompt and self.done_decode == self.decode


def trace_requests(trace: Trace, name: str = "trace") -> list[Request]:
    """The requests of `trace` in request-id order (rows of one request are contiguous)."""
    ids, starts, counts = np.unique(trace.request, return_index=True, return_counts=True)
    arrivals = trace.meta.arrivals
    if arrivals is not None and len(arrivals) != len(ids):
        raise NdpcError(f"{name}: {len(arrivals)} arrival times for {len(ids)} requests")
    out = []
    for i, (rid, first, count) in enumerate(zip(ids.tolist(), starts.tolist(), counts.tolist(),
                                                 strict=True)):  # fmt: skip
        prompt = int(np.count_nonzero(trace.phase[first : first + count] == 0))
        arrival = float(arrivals[i]) if arrivals is not None else 0.0
        out.append(Request(rid, arrival, first, prompt, count - prompt))
    return out


@dataclass
class ServingScheduler:
    """Forms iterations (see the module docstring); `kv_token_bytes` is the KV cache one token
    holds over all layers, `kv_pool` the GPU bytes KV and experts share."""

    requests: list[Request]
    config: ServingConfig
    kv_token_bytes: float
    kv_pool: float
    running: list[Request] = field(default_factory=list)
    index: int = 0  # iterations formed
    reserved: float = 0.0  # KV bytes reserved by running requests

    def __post_init__(self) -> None:
        order = sorted(self.requests, key=lambda r: (r.arrival, r.id))
        self.future = deque(order)  # not yet arrived, in arrival order
        self.waiting: deque[Request] = deque()  # arrived, not admitted (FCFS)
        for r in order:
            if r.total * self.kv_token_bytes > self.kv_pool:
                raise NdpcError(
                    f"request {r.id}: its KV cache ({r.total} tokens, "
                    f"{r.total * self.kv_token_bytes / 2**30:.2f} GiB) does not fit the GPU "
                    f"memory left for KV and experts ({self.kv_pool / 2**30:.2f} GiB)"
                )

    @property
    def done(self) -> bool:
        return not (self.future or self.waiting or self.running)

    def next_arrival(self) -> float:
        return self.future[0].arrival

    def kv_used(self) -> float:
        """KV bytes held now: each running request's tokens processed so far."""
        return self.kv_token_bytes * sum(r.done_prompt + r.done_decode for r in self.running)

    def form(self, now: float) -> Batch:
        """The next iteration at time `now` (the caller advanced `now` to an arrival when
        nothing runs)."""
        while self.future and self.future[0].arrival <= now:
            self.waiting.append(self.future.popleft())
        cfg = self.config
        budget = cfg.token_budget or (1 << 62)
        slices: list[SeqSlice] = []
        for r in self.running:  # running requests first, in admission order
            if r.done_prompt < r.prompt:  # a chunked prefill goes on
                n = min(r.prompt - r.done_prompt, budget)
                if n <= 0:
                    continue
                slices.append(SeqSlice(r.id, 0, r.first + r.done_prompt, n, r.done_prompt))
            else:
                if budget <= 0:
                    continue
                n = 1
                row = r.first + r.prompt + r.done_decode
                slices.append(SeqSlice(r.id, 1, row, 1, r.prompt + r.done_decode))
            budget -= n
        while self.waiting and len(self.running) < cfg.max_batch:
            r = self.waiting[0]
            if self.reserved + r.total * self.kv_token_bytes > self.kv_pool:
                break  # FCFS: the head waits for KV memory, and so do those behind it
            if r.prompt == 0:
                n, phase = (1 if r.decode else 0), 1
            elif cfg.chunked_prefill:
                n, phase = min(r.prompt, budget), 0
            else:
                n, phase = r.prompt, 0
            if n > budget and slices:
                break
            if n <= 0 and r.total > 0:
                break
            self.waiting.popleft()
            self.running.append(r)
            self.reserved += r.total * self.kv_token_bytes
            if n > 0:
                slices.append(SeqSlice(r.id, phase, r.first, n, 0, starts_request=True))
            budget -= n
        if not slices:
            raise NdpcError("serving: an iteration with nothing to run (scheduler bug)")
        batch = Batch(self.index, tuple(slices))
        self.index += 1
        return batch

    def finish(self, batch: Batch) -> list[Request]:
        """Record the batch's progress; returns the requests it finished (their KV is freed)."""
        by_id = {r.id: r for r in self.running}
        for s in batch.slices:
            r = by_id[s.request]
            if s.phase == 0:
                r.done_prompt += s.tokens
            else:
                r.done_decode += s.tokens
        done = [r for r in self.running if r.finished]
        if done:
            self.running = [r for r in self.running if not r.finished]
            self.reserved -= sum(r.total for r in done) * self.kv_token_bytes
        return done


@dataclass
class RecordedScheduler(ServingScheduler):
    """Replays the iterations a serving capture recorded (`TraceMeta.iterations`), in order,
    instead of forming them: same interface as `ServingScheduler`. The KV cache still grows
    and shrinks with the replayed tokens (it sets the expert budget); admission does not wait
    for KV memory (the recorded system admitted them), so a request whose whole KV cache does
    not fit is still an error."""

    iterations: tuple[tuple[tuple[int, int], ...], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        self.by_row = {r.first: r for r in self.requests}
        self.row_owner = np.concatenate(
            [np.full(r.total, i) for i, r in enumerate(self.requests)]
        ) if self.requests else np.zeros(0, np.int64)  # fmt: skip
        self.started: set[int] = set()

    @property
    def done(self) -> bool:
        return self.index >= len(self.iterations)

    def next_arrival(self) -> float:
        """The latest arrival among the requests the next iteration starts."""
        new = [self.requests[self.row_owner[f]] for f, _ in self.iterations[self.index]]
        return max((r.arrival for r in new if r.id not in self.started), default=0.0)

    def form(self, now: float) -> Batch:
        slices = []
        for first, tokens in self.iterations[self.index]:
            r = self.requests[self.row_owner[first]]
            starts = r.id not in self.started
            if starts:
                self.started.add(r.id)
                self.running.append(r)
            context = first - r.first
            phase = 0 if context < r.prompt else 1
            slices.append(SeqSlice(r.id, phase, first, tokens, context, starts_request=starts))
        batch = Batch(self.index, tuple(slices))
        self.index += 1
        return batch


class IterationClock:
    """Replays emitted ops as `engine.run_fast` does (list scheduling in id order, FIFO per
    resource) to know when each iteration ends; used only to decide admission. Past
    `bounds.use_compiled`'s size the loop is `kernels.clock_kernel` (numba; the same arithmetic
    in the same order as the Python loop here, tested bit-identical)."""

    def __init__(self, ops: ScheduleBuilder, target: Target, cost: CostModel,
                 compiled: bool | None = None) -> None:  # fmt: skip
        self.ops, self.cost = ops, cost
        specs = resource_specs(target)
        index = {s.name: i for i, s in enumerate(specs)}
        self.remap = np.array([index[name] for name in ops.resources], dtype=np.int64)
        self.free = np.zeros(len(specs))
        self.end = np.zeros(1 << 12)  # per op (8 bytes each), grown by doubling
        self.n = 0
        self.host = (
            {index["pcie.h2d"], index["pcie.d2h"]} if target.exclusive_host_access else set()
        )
        self.host_mask = np.array([r in self.host for r in range(len(specs))], dtype=np.bool_)
        self.ndp0 = index.get("ndp0", -1)
        self.release: dict[int, float] = {}
        self.compiled = compiled

    def advance(self, lo: int) -> None:
        """Replay ops lo.. (everything emitted since the last call)."""
        rows = self.ops.rows_since(lo)
        kind, res, unit, flops, mem, link, ptr, deps = rows
        n = len(kind)
        if n == 0:
            return
        if lo + n > len(self.end):
            grown = np.zeros(max(2 * len(self.end), lo + n))
            grown[: self.n] = self.end[: self.n]
            self.end = grown
        self.n = lo + n
        dur = self.cost._per_resource(self.ops.resources, res, kind, flops, mem, link, unit, False)
        tres = self.remap[res]
        sync = kind == int(OpKind.SYNC)
        release = np.zeros(n)
        for op, t in self.release.items():
            if lo <= op < lo + n:
                release[op - lo] = t
        if use_compiled(self.n, self.compiled):
            from ndpc.backends.simulator.kernels import clock_kernel  # lazy: numba

            clock_kernel(self.end, lo, ptr, deps.astype(np.int64), tres, sync,
                         unit.astype(np.int64), dur, release, self.free, self.host_mask,
                         self.ndp0)  # fmt: skip
            return
        self._advance_python(lo, tres.tolist(), sync.tolist(), unit.tolist(), dur.tolist(),
                             release.tolist(), ptr.tolist(), deps.tolist())  # fmt: skip

    def _advance_python(self, lo, tres, sync, unit, dur, release, ptr, deps) -> None:
        """The reference loop (`clock_kernel` is the same arithmetic, compiled)."""
        end, free, host, ndp0 = self.end, self.free, self.host_mask, self.ndp0
        base = ptr[0]
        for j in range(len(tres)):
            t = 0.0
            for k in range(ptr[j] - base, ptr[j + 1] - base):
                u = float(end[deps[k]])
                if u > t:
                    t = u
            if sync[j]:
                end[lo + j] = t + release[j]
                continue
            r = tres[j]
            f = float(free[r])
            if f > t:
                t = f
            r2 = ndp0 + unit[j] if host[r] and unit[j] >= 0 else -1
            if r2 >= 0 and free[r2] > t:
                t = float(free[r2])
            e = t + dur[j]
            free[r] = e
            if r2 >= 0:
                free[r2] = e
            end[lo + j] = e

    def time_of(self, op: int) -> float:
        return float(self.end[op])
