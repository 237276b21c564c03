"""The serving loop: iterations, KV cache, metrics, causality, the trace format's arrivals."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from emit_fixtures import TARGET, qwen_like, trace_for  # noqa: E402
from harness import check_outcome, run_cli  # noqa: E402

from ndpc.backends.check import check_timeline  # noqa: E402
from ndpc.backends.emit import emit_schedule  # noqa: E402
from ndpc.backends.schedule import COLUMNS, Reason  # noqa: E402
from ndpc.backends.serving import ServingConfig  # noqa: E402
from ndpc.backends.simulator import simulate  # noqa: E402
from ndpc.compiler.passes.pipeline import make_context, parse_pipeline  # noqa: E402
from ndpc.ir.diagnostics import NdpcError  # noqa: E402
from ndpc.traces.format import load_trace, read_header, save_trace  # noqa: E402
from ndpc.traces.generate import arrival_times  # noqa: E402

PAPER = "tp-split,balance,prefetch"


def _with_arrivals(trace, arrivals):
    return dataclasses.replace(trace, meta=dataclasses.replace(trace.meta, arrivals=arrivals))


def _serve(pipeline, trace, config, overrides=()):
    ctx = make_context(TARGET, overrides)
    module = qwen_like(2, 32)
    for p in parse_pipeline(pipeline):
        module = p.run(module, ctx)
    s = emit_schedule(module, trace, ctx.target, ctx.cost, serving=config)
    return s, ctx


@pytest.fixture(scope="module")
def workload():
    """8 requests of 12 prompt + 8 decode tokens, arriving faster than they are served."""
    trace = trace_for(2, 32, 8, tokens=20, prompt=12, seed=3, requests=8)
    return _with_arrivals(trace, arrival_times(8, 2000.0, 0))


def test_every_row_is_emitted_once_and_batches_respect_max_batch(workload) -> None:
    s, ctx = _serve(PAPER, workload, ServingConfig(max_batch=4))
    rows = np.zeros(workload.tokens, dtype=int)
    for _, lo, hi, _kv, _cap, slices in s.meta["serving"]["batches"]:
        assert 0 <= lo < hi <= len(s) and len({sl[0] for sl in slices}) == len(slices) <= 4
        for _req, _phase, first, n in slices:
            rows[first : first + n] += 1
    assert np.all(rows == 1)
    res = simulate(s, ctx.target, ctx.cost)
    assert check_timeline(s, ctx.target, res.start, res.end, ctx.cost).ok
    reqs = res.serving["requests"]
    assert len(reqs) == 8 and all(r["output_tokens"] == 9 for r in reqs)
    for r in reqs:
        assert 0 <= r["queue_s"] <= r["ttft_s"] <= r["e2e_s"]


def test_batching_raises_throughput_and_cuts_queueing(workload) -> None:
    out = {}
    for b in (1, 8):
        s, ctx = _serve(PAPER, workload, ServingConfig(max_batch=b))
        out[b] = simulate(s, ctx.target, ctx.cost).serving
    assert out[8]["throughput_tok_s"] > out[1]["throughput_tok_s"]
    assert out[8]["ttft_p99_s"] < out[1]["ttft_p99_s"]
    assert out[8]["queue_p99_s"] < out[1]["queue_p99_s"]


def test_max_batch_1_without_arrivals_is_the_batch_1_schedule() -> None:
    trace = trace_for(2, 32, 8, tokens=20, prompt=12, seed=3, requests=3)
    a, _ = _serve(PAPER, trace, None)
    b, _ = _serve(PAPER, trace, ServingConfig(max_batch=1))
    for name, _, _ in COLUMNS:
        assert np.array_equal(a.column(name), b.column(name)), name
    assert np.array_equal(a.dep_idx, b.dep_idx) and "serving" in b.meta


def test_idle_gaps_wait_for_arrivals() -> None:
    trace = trace_for(2, 32, 8, tokens=6, prompt=4, seed=1, requests=3)
    trace = _with_arrivals(trace, (0.0, 5.0, 9.0))  # far apart: the system idles between them
    s, ctx = _serve(PAPER, trace, ServingConfig(max_batch=4))
    res = simulate(s, ctx.target, ctx.cost)
    reqs = res.serving["requests"]
    assert [r["queue_s"] for r in reqs] == [0.0, 0.0, 0.0]
    assert reqs[1]["finish_s"] > 5.0 and reqs[2]["finish_s"] > 9.0
    assert len(s.meta["serving"]["release"]) == 2
    assert check_timeline(s, ctx.target, res.start, res.end, ctx.cost).ok


def test_chunked_prefill_splits_prompts_to_the_token_budget(workload) -> None:
    s, _ = _serve(PAPER, workload, ServingConfig(max_batch=4, token_budget=8,
                                                 chunked_prefill=True))  # fmt: skip
    for *_, slices in s.meta["serving"]["batches"]:
        assert sum(n for *_, n in slices) <= 8
    chunks = [sl for *_, slices in s.meta["serving"]["batches"] for sl in slices if sl[1] == 0]
    assert max(n for *_, n in chunks) <= 8 and len(chunks) > 8


def test_kv_cache_shrinks_the_expert_budget() -> None:
    """A small GPU: the KV cache of 8 long requests takes memory from prefetched experts."""
    trace = trace_for(2, 32, 8, tokens=80, prompt=64, seed=2, requests=8)
    trace = _with_arrivals(trace, (0.0,) * 8)
    pipe = "tp-split,balance,prefetch{budget-gib=0.02}"
    s, _ = _serve(pipe, trace, ServingConfig(max_batch=8), ("gpu.memory_gib=0.8331",))
    table = s.meta["serving"]["batches"]
    kv = [row[3] for row in table]
    cap = [row[4] for row in table]
    assert max(kv) > 0 and min(cap) < max(cap)
    grew = [i for i in range(1, len(kv)) if kv[i] > kv[i - 1]]
    assert grew and all(cap[i] <= cap[i - 1] for i in grew)  # more KV never gives more room
    assert np.any(s.reason == Reason.EVICT)


def test_a_request_whose_kv_cannot_fit_is_an_error() -> None:
    trace = trace_for(2, 32, 8, tokens=20, prompt=12, seed=3, requests=1)
    with pytest.raises(NdpcError, match="KV cache"):
        _serve(PAPER, trace, ServingConfig(), ("gpu.memory_gib=0.55",))


def _prefix(a, b) -> int:
    """Ops before the first difference (columns or dependencies)."""
    n = min(len(a), len(b))
    diff = np.zeros(n, dtype=bool)
    for name, _, _ in COLUMNS:
        diff |= a.column(name)[:n] != b.column(name)[:n]
    bad = np.flatnonzero(diff)
    return int(bad[0]) if len(bad) else n


@pytest.mark.parametrize("policy", ["tp-split,balance,prefetch", "stripe,dispatch{rule=lru}",
                                    "tp-split{degree=1},dispatch{rule=monde}"])  # fmt: skip
def test_a_later_request_does_not_change_what_was_scheduled_before_it_arrived(workload,
                                                                               policy) -> None:  # fmt: skip
    last = 7
    rows = np.flatnonzero(workload.request == last)
    experts = workload.experts.copy()
    experts[rows] = (experts[rows] + 5) % 32  # other experts for the last request only
    rerouted = dataclasses.replace(workload, experts=experts)
    later = _with_arrivals(workload, (*workload.meta.arrivals[:last], 1.0))
    config = ServingConfig(max_batch=4)
    a, _ = _serve(policy, workload, config)
    admitted = next(row[1] for row in a.meta["serving"]["batches"]
                    if any(sl[0] == last for sl in row[5]))  # fmt: skip
    for changed in (rerouted, later):
        b, _ = _serve(policy, changed, config)
        n = _prefix(a, b)
        assert n >= admitted, f"{policy}: ops before request {last} was admitted changed"
        assert n < min(len(a), len(b)) or len(a) != len(b)  # the change is visible later


def test_trace_gen_writes_arrivals_and_run_reports_serving(tmp_path) -> None:
    out = tmp_path / "s.npz"
    gen = run_cli(["trace", "gen", "--layers", "2", "--experts", "32", "--k", "8", "--tokens",
                   "10", "--prompt", "6", "--requests", "4", "--arrival-rate", "100", "--seed",
                   "1", "-o", str(out)])  # fmt: skip
    assert gen.exit_code == 0, gen.stderr
    assert read_header(out)["version"] == 2 and len(load_trace(out).meta.arrivals) == 4
    plain = tmp_path / "p.npz"
    save_trace(trace_for(2, 32, 8, tokens=10, prompt=6), plain)
    assert read_header(plain)["version"] == 1  # no arrivals: still version 1


def test_bad_arrivals_are_one_clear_error(tmp_path) -> None:
    trace = trace_for(2, 32, 8, tokens=10, prompt=6, requests=2)
    path = tmp_path / "bad.jsonl"
    save_trace(_with_arrivals(trace, (0.0, 1.0)), path, jsonl=True)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    for value, why in (([0.0, -1.0], "arrival_s[1]"), ([0.0, 10**400], "arrival_s[1]"), ([0.0], "1 times for 2 requests"),
                       ("soon", "list of seconds")):  # fmt: skip
        header["requests"] = {"arrival_s": value}
        path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
        out = run_cli(["trace", "stats", str(path)])
        if why.startswith("1 times"):
            out = run_cli(["run", str(Path(__file__).parents[1] / "filecheck" / "passes" /
                                      "model2.ndpir"), "--target", TARGET, "--trace", str(path),
                           "--policy", "tp"])  # fmt: skip
        assert out.exit_code != 0
        check_outcome(out, [path.name], None, why)
        assert why in out.stderr, out.stderr


def test_timeline_shows_iterations_and_requests(workload) -> None:
    from ndpc.backends.timeline import build_trace

    s, ctx = _serve(PAPER, workload, ServingConfig(max_batch=4))
    res = simulate(s, ctx.target, ctx.cost)
    events = build_trace(s, res.start, res.end)["traceEvents"]
    iters = [e for e in events if e.get("cat") == "iteration"]
    running = [e for e in events if e.get("cat") == "request" and e["name"] == "running"]
    assert len(iters) == len(s.meta["serving"]["batches"])
    assert sorted(e["args"]["request"] for e in running) == list(range(8))


@pytest.mark.slow
def test_floor_mixtral_16_requests_batch_8_beats_batch_1(tmp_path) -> None:
    """Issue 13's floor: the same 16-request Mixtral-8x7B trace, arrivals fast enough to queue:
    --max-batch 8 gives higher throughput and lower p99 TTFT than --max-batch 1 (paper)."""
    path = tmp_path / "m16.npz"
    gen = run_cli(["trace", "gen", "--model", "mixtral-8x7b", "--requests", "16", "--arrival-rate",
                   "20", "--prompt", "64", "--tokens", "96", "--seed", "0", "-o", str(path)])  # fmt: skip
    assert gen.exit_code == 0, gen.stderr
    out = {}
    for b in ("1", "8"):
        run = run_cli(["run", "mixtral-8x7b", "--target", TARGET, "--trace", str(path), "--policy",
                       "paper", "--max-batch", b, "--json"], timeout=300)  # fmt: skip
        assert run.exit_code == 0, run.stderr
        out[b] = json.loads(run.stdout)
        assert len(out[b]["requests"]) == 16
    assert out["8"]["throughput_tok_s"] > out["1"]["throughput_tok_s"]
    assert out["8"]["ttft_p99_s"] < out["1"]["ttft_p99_s"]


def test_malformed_serving_meta_is_one_clear_error(workload, tmp_path) -> None:
    from ndpc.backends.schedule import load_schedule, save_schedule

    s, ctx = _serve(PAPER, workload, ServingConfig(max_batch=4))
    for field, value in (("batches", [[0, 5, 2, 0, 0, []]]), ("requests", [["x"]]),
                         ("release", [["a", 1.0]]), ("batches", "none")):  # fmt: skip
        meta = json.loads(json.dumps(s.meta))
        meta["serving"][field] = value
        bad = dataclasses.replace(s, meta=meta, _cache={})
        path = tmp_path / "bad.ndpsched"
        save_schedule(bad, path)
        out = run_cli(["simulate", str(path), "--target", TARGET])
        assert out.exit_code != 0, field
        check_outcome(out, ["meta.serving"], None, field)
    load_schedule(path)  # the file itself is well-formed: only the serving table is wrong


def test_trace_gen_draws_lengths_per_request(tmp_path) -> None:
    out = tmp_path / "v.npz"
    gen = run_cli(["trace", "gen", "--layers", "2", "--experts", "32", "--k", "8", "--requests",
                   "6", "--prompt", "4:12", "--tokens", "10:20", "--arrival-rate", "5", "--seed",
                   "2", "-o", str(out)])  # fmt: skip
    assert gen.exit_code == 0, gen.stderr
    t = load_trace(out)
    prompts = [int(np.sum((t.request == r) & (t.phase == 0))) for r in range(6)]
    totals = [int(np.sum(t.request == r)) for r in range(6)]
    assert all(4 <= p <= 12 for p in prompts) and len(set(prompts)) > 1
    assert all(max(10, p) <= n <= 20 for p, n in zip(prompts, totals, strict=True))
    bad = run_cli(["trace", "gen", "--layers", "2", "--experts", "32", "--k", "8", "--prompt",
                   "9:3", "-o", str(tmp_path / "x.npz")])  # fmt: skip
    assert bad.exit_code != 0 and "--prompt" in bad.stderr and not (tmp_path / "x.npz").exists()


def test_oracle_cache_sees_the_iterations_it_runs(workload, monkeypatch) -> None:
    """Under serving, oracle-cache's Belady foresight is the batched iteration sequence (from a
    previous pass of the same run): every layer's routed experts are the ones it foresaw."""
    from ndpc.backends.policies.oracle import OracleCachePolicy

    seen = []
    real = OracleCachePolicy.dispatch

    def dispatch(self, view):
        if self.caps is not None:  # the pass that runs with iteration foresight
            seen.append(set(view.experts.tolist()) == self.groups[view.step][view.plan.index])
        return real(self, view)

    monkeypatch.setattr(OracleCachePolicy, "dispatch", dispatch)
    s, ctx = _serve("tp-split,balance,dispatch{rule=oracle}", workload, ServingConfig(max_batch=4),
                    ("gpu.memory_gib=0.9",))  # fmt: skip
    assert s.meta["serving"]["oracle_foresight"]["exact"]
    assert seen and all(seen)
    res = simulate(s, ctx.target, ctx.cost)
    assert check_timeline(s, ctx.target, res.start, res.end, ctx.cost).ok


def _capture(path, plan, layers=2, experts=32, k=8, seed=0):
    """A batch-jsonl serving capture: `plan` = {request: (first iteration, prompt, decode)}; the
    prompt is one iteration, then one decode token per iteration (as vLLM's loop records)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for r, (start, prompt, dec) in plan.items():
            for p in range(prompt + dec):
                it = start if p < prompt else start + p - prompt + 1
                for layer in range(layers):
                    ex = rng.choice(experts, k, replace=False).tolist()
                    w = sorted(rng.random(k).tolist(), reverse=True)
                    f.write(json.dumps({"iteration": it, "request": r, "position": p,
                                        "layer": layer, "experts": ex, "weights": w,
                                        "arrival_s": 1e-4 * start}) + "\n")  # fmt: skip


def test_recorded_batching_replays_the_captured_iterations(tmp_path) -> None:
    """An imported capture keeps its decode batches; `--batching recorded` (the default for such
    a trace) runs exactly those iterations, and the serving bound holds for them."""
    from ndpc.backends.optimum import serving_bound
    from ndpc.traces.importers import import_source

    src = tmp_path / "cap.jsonl"
    _capture(src, {0: (0, 6, 5), 1: (1, 4, 6), 2: (3, 5, 2), 3: (3, 3, 4)})
    trace, report = import_source(src)
    assert report.format == "batch-jsonl" and trace.meta.iterations is not None
    save_trace(trace, tmp_path / "cap.npz")
    again = load_trace(tmp_path / "cap.npz")
    assert again.meta.iterations == trace.meta.iterations
    s, ctx = _serve(PAPER, again, ServingConfig())
    meta = s.meta["serving"]
    assert meta["batching"] == "recorded"
    got = [tuple((f, n) for _r, _p, f, n in row[5]) for row in meta["batches"]]
    assert tuple(got) == trace.meta.iterations
    assert max(len(it) for it in got) == 4  # requests 0-3 decoded together in iteration 4
    res = simulate(s, ctx.target, ctx.cost)
    assert check_timeline(s, ctx.target, res.start, res.end, ctx.cost).ok
    bound = serving_bound(qwen_like(2, 32), again, ctx.target, ctx.cost, meta)
    assert res.serving["makespan_s"] >= bound.makespan_s
    # the loop re-batches the same requests instead
    loop, _ = _serve(PAPER, again, ServingConfig(batching="loop", max_batch=2))
    assert "batching" not in loop.meta["serving"]
    assert max(len(row[5]) for row in loop.meta["serving"]["batches"]) == 2


def test_recorded_batching_errors(tmp_path) -> None:
    with pytest.raises(NdpcError, match="recorded iterations|recorded its iterations"):
        _serve(PAPER, trace_for(2, 32, 8, tokens=6, prompt=2, seed=1, requests=2),
               ServingConfig(batching="recorded"))  # fmt: skip
    with pytest.raises(NdpcError, match="do not apply"):
        ServingConfig(max_batch=4, batching="recorded")


def test_gsm8k_routing_as_two_requests_decoded_together(tmp_path) -> None:
    """The shared Mixtral GSM8K routing (2 sequences, decode only) rewritten as a capture of
    the two decoded together (iteration = token index): 2 requests, batches of 2."""
    src = Path(__file__).resolve().parents[2] / "../shared/data/traces/mixtral-8x7b-gsm8k"
    routing = src / "gsm8k_2_routing.jsonl"
    if not routing.exists():
        pytest.skip("../shared is not beside the checkout")
    from ndpc.traces.importers import import_source

    recs: dict = {}
    with open(routing) as f:
        for line in f:
            rec = json.loads(line)
            recs.setdefault((rec["problem_id"], rec["layer"]), []).append(rec)
    # as topk-jsonl's rule: every layer of a problem cut to its shortest, in token_idx order
    short = {p: min(len(v) for (q, _), v in recs.items() if q == p) for p, _ in recs}
    out = tmp_path / "cap.jsonl"
    with open(out, "w") as g:
        for (p, layer), group in sorted(recs.items()):
            group.sort(key=lambda r: r["token_idx"])
            for pos, rec in enumerate(group[: short[p]]):
                g.write(json.dumps({"iteration": pos, "request": p, "position": pos,
                                    "layer": layer, "experts": rec["experts"],
                                    "weights": rec["gating_probs"], "phase": "decode"}) + "\n")  # fmt: skip
    trace, report = import_source(out)
    its = trace.meta.iterations
    assert trace.meta.layers == 32 and trace.meta.k == 2 and report.format == "batch-jsonl"
    assert len(np.unique(trace.request)) == 2 and np.all(trace.phase == 1)
    # both decode together until the shorter one ends, then the longer one alone
    assert [len(it) for it in its] == [2] * min(short.values()) + [1] * (
        max(short.values()) - min(short.values()))  # fmt: skip


@pytest.mark.parametrize("target", [TARGET, "rtx4060ti-ndp"])
def test_compiled_iteration_clock_is_bit_identical_to_the_python_loop(target) -> None:
    # Random ops (kernels, host copies tagged with units, release-wait SYNCs, deps across
    # iterations) advanced in chunks: both clocks must give every op the same end time.
    from ndpc.backends.schedule import OpKind, ScheduleBuilder
    from ndpc.backends.serving import IterationClock
    from ndpc.backends.target import resource_names

    ctx = make_context(target, ())
    rng = np.random.default_rng(5)
    names = resource_names(ctx.target)
    b = ScheduleBuilder(names)
    clocks = [IterationClock(b, ctx.target, ctx.cost, compiled=c) for c in (False, True)]
    kinds = {"gpu": OpKind.GPU_KERNEL, "pcie.h2d": OpKind.TRANSFER, "pcie.d2h": OpKind.TRANSFER}
    tag = b.tag(1, 0, 0)
    for _ in range(30):
        lo = len(b)
        for _ in range(int(rng.integers(1, 300))):
            n = len(b)
            deps = (
                sorted({int(d) for d in rng.integers(0, n, size=rng.integers(0, 3))}) if n else []
            )
            if rng.random() < 0.05:
                op = b.append(tag, int(OpKind.SYNC), 0, 0.0, 0.0, 0.0, [], -1, -1, -1, -1, 0)
                wait = float(rng.uniform(0, 1e-3))
                for c in clocks:
                    c.release[op] = wait
                continue
            name = str(rng.choice([r for r in names if r in kinds or r.startswith("ndp")]))
            kind = kinds.get(name, OpKind.NDP_KERNEL)
            unit = int(rng.integers(-1, ctx.target.ndp_units)) if name.startswith("pcie") else -1
            b.append(tag, int(kind), b.index[name], float(rng.uniform(0, 1e9)),
                     float(rng.uniform(0, 1e8)), float(rng.uniform(0, 1e7)), deps, 0, 0, -1,
                     unit, 0)  # fmt: skip
        for c in clocks:
            c.advance(lo)
        b.compact()
    py, jit = clocks
    assert py.n == jit.n == len(b)
    assert np.array_equal(py.end[: py.n], jit.end[: jit.n])
    assert np.array_equal(py.free, jit.free)
