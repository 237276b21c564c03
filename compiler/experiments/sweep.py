"""The sweep engine: run many cases once each, cached by the content hash of their inputs.

A `Job` is one `Case` (runner.py) plus, for a generated trace, the generator's parameters, and
its `key`: the SHA-256 of everything the result depends on (the model's IR text, the resolved
target values after `--set`, the trace's bytes or generator parameters, the calibration trace,
policy, pipeline, options, and the ndpc version with a digest of its source files). A finished
job is stored as `CACHE/<key[:2]>/<key>.json` the moment its result arrives, so a second run
recomputes nothing and a killed run resumes where it stopped. Jobs run on an executor: this
process (`workers=1`), a local process pool, or an existing Dask distributed cluster; a job's
result never depends on which (no paths or wall times inside the cached figures).

A failed job is recorded with its error and the others go on. Errors that follow from the
inputs (NdpcError and friends: the experts do not fit, ...) are cached like results; anything
else (a worker crashed, an internal error) is reported but not cached, so a re-run retries it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import click

import ndpc.backends
import ndpc.compiler
import ndpc.ir
import ndpc.traces
from ndpc.backends.target import EffTable, load_target
from ndpc.compiler import __version__
from ndpc.compiler.cliutil import output_file
from ndpc.compiler.experiments.optimum import attach_optimum
from ndpc.compiler.experiments.runner import Case, _preload, case_columns, compute_case
from ndpc.compiler.experiments.workload import generate_pair
from ndpc.compiler.frontend import load_model
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.printer import print_module

CACHE_VERSION = 1


@dataclass(frozen=True)
class TraceGen:
    """A generated evaluation trace + its calibration trace (experiments/workload.py)."""

    model: str
    prompt: int
    output: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "output": self.output,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Job:
    """One case to run; `key` names its result in the cache."""

    key: str
    case: Case
    gen: TraceGen | None = None
    inputs: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Outcome:
    """What running a list of jobs gave: one row per job, in job order, and the counts."""

    rows: list[dict[str, Any]]
    computed: int = 0
    cached: int = 0
    failed: int = 0
    wall_s: dict[str, float] = field(default_factory=dict)  # key -> seconds it took to compute


# ---------------------------------------------------------------- hashing


def sha256_json(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@cache
def code_digest() -> str:
    """The ndpc version and a digest of every source and data file of the installed package."""
    h = hashlib.sha256(__version__.encode())
    for pkg in (ndpc.ir, ndpc.compiler, ndpc.backends, ndpc.traces):
        root = Path(pkg.__file__).parent
        for path in sorted(root.rglob("*")):
            if (
                path.suffix in (".py", ".toml", ".lark", ".json")
                and "__pycache__" not in path.parts
            ):
                h.update(f"{pkg.__name__}/{path.relative_to(root).as_posix()}\0".encode())
                h.update(path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:16]}"


@cache
def model_digest(model: str) -> str:
    """SHA-256 of the model's IR text (a zoo name, an ONNX or an .ndpir file)."""
    return hashlib.sha256(print_module(load_model(model)).encode()).hexdigest()


@cache
def target_digest(target: str, overrides: tuple[str, ...]) -> str:
    """SHA-256 of the resolved target values (after overrides); raises NdpcError when invalid."""
    t = load_target(target, overrides)

    def plain(v: Any) -> Any:
        return [list(v.keys), list(v.fractions)] if isinstance(v, EffTable) else v

    return sha256_json({"name": t.name, "values": {k: plain(v) for k, v in t.values.items()}})


@cache
def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (a trace or a calibration file/folder)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(f.relative_to(p).as_posix().encode() if p.is_dir() else b"")
        h.update(f.read_bytes())
    return h.hexdigest()


def make_job(case: Case, gen: TraceGen | None = None) -> Job:
    """A job for `case` with its content key (NdpcError when the model or target is invalid)."""
    try:
        target = target_digest(case.target, tuple(case.overrides))
    except (
        NdpcError,
        OSError,
        ValueError,
    ):  # e.g. ndp.units out of range: the point fails (and records why) when run
        target = sha256_json({"invalid": case.target, "overrides": list(case.overrides)})
    inputs = {
        "model": model_digest(case.model),
        "target": target,
        "trace": sha256_json(gen.to_json()) if gen else file_digest(case.trace),
    }
    if case.calib and not gen:
        inputs["calib"] = file_digest(case.calib)
    if case.serving is not None:  # batched iterations: the same trace served differently
        inputs["serving"] = sha256_json({**asdict(case.serving), "slo": case.slo})
    key = sha256_json({
        "cache": CACHE_VERSION, "ndpc": code_digest(), **inputs, "policy": case.policy,
        "pipeline": case.pipeline, "check": case.check,
    })  # fmt: skip
    return Job(key, case, gen, inputs)


# ---------------------------------------------------------------- running one job


def ensure_traces(gen: TraceGen, folder: str) -> tuple[str, str]:
    """The generated evaluation and calibration traces of `gen` under `folder` (made once;
    concurrent workers each write a private copy and rename it into place)."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError:  # a Dask worker on another machine may not be able to write there
        out = Path(tempfile.gettempdir()) / "ndpc-sweep-traces"
        out.mkdir(parents=True, exist_ok=True)
    stem = f"{gen.model}-{gen.prompt}+{gen.output}-s{gen.seed}"
    ev, cal = out / f"{stem}.npz", out / f"{stem}.calib.npz"
    if not (ev.is_file() and cal.is_file()):
        with tempfile.TemporaryDirectory(dir=out, prefix=".gen-") as tmp:
            a, b = generate_pair(gen.model, gen.prompt, gen.output, gen.seed, Path(tmp))
            os.replace(a, ev)
            os.replace(b, cal)
    return str(ev), str(cal)


def run_job(job: Job, trace_dir: str) -> dict[str, Any]:
    """Compute one job (in a worker): its figures or `error`, plus `wall_s` and `transient`
    (True for an unexpected failure, which is not cached)."""
    t0 = time.perf_counter()
    case = job.case
    try:
        if job.gen is not None:
            ev, cal = ensure_traces(job.gen, trace_dir)
            case = replace(case, trace=ev, calib=case.calib or cal)
        result = compute_case(case)
        attach_optimum([result], [case])  # the problem's lower bound and the gap to it
        transient = False
    except Exception as err:  # noqa: BLE001 - recorded as the job's error, the sweep goes on
        message = err.render() if isinstance(err, NdpcError) else f"{type(err).__name__}: {err}"
        result, transient = {"error": message.splitlines()[0] if message else repr(err)}, True
    if isinstance(result.get("pipeline"), str):  # no machine paths in results
        for path, name in ((case.trace, "<trace>"), (case.calib, "<calib>")):
            if path:
                result["pipeline"] = result["pipeline"].replace(path, name)
    return {"key": job.key, "result": result, "wall_s": time.perf_counter() - t0,
            "transient": transient}  # fmt: skip


# ---------------------------------------------------------------- executors


def local_results(jobs: Sequence[Job], trace_dir: str, workers: int) -> Iterator[dict[str, Any]]:
    """Run `jobs` in this process (workers <= 1) or a forked process pool, yielding results as
    they finish."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield run_job(job, trace_dir)
        return
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor, as_completed

    _preload()
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    # concurrent.futures, not multiprocessing.Pool: a worker killed by the OS (out of memory)
    # fails the jobs it had instead of hanging the sweep
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = {pool.submit(run_job, job, trace_dir): job for job in jobs}
        try:
            for fut in as_completed(futures):
                try:
                    yield fut.result()
                except Exception as err:  # noqa: BLE001 - BrokenProcessPool and the like
                    yield {"key": futures[fut].key, "transient": True, "wall_s": 0.0,
                           "result": {"error": f"worker: {type(err).__name__}: {err}"}}  # fmt: skip
        finally:
            for fut in futures:
                fut.cancel()


def dask_results(jobs: Sequence[Job], trace_dir: str, scheduler: str) -> Iterator[dict[str, Any]]:
    """Run `jobs` on the Dask distributed cluster at `scheduler` (its workers need ndpc)."""
    try:
        from distributed import Client, as_completed
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise NdpcError(f"--scheduler needs dask[distributed]: {err}") from None
    _check_reachable(scheduler)
    try:
        client = Client(scheduler, timeout="30s")
    except (OSError, TimeoutError, ValueError) as err:
        raise NdpcError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    with client:
        futures = client.map(run_job, list(jobs), trace_dir=trace_dir, pure=False,
                             key=[f"ndpc-{j.key}" for j in jobs])  # fmt: skip
        by_key = {f.key: j for f, j in zip(futures, jobs, strict=True)}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as err:  # noqa: BLE001 - a lost worker fails only this job
                job = by_key[fut.key]
                yield {"key": job.key, "result": {"error": f"dask: {type(err).__name__}: {err}"},
                       "wall_s": 0.0, "transient": True}  # fmt: skip


def _check_reachable(scheduler: str) -> None:
    """Fail fast (not after the client's time-out) when nothing listens at a tcp:// address."""
    import socket
    from urllib.parse import urlsplit

    if not scheduler.startswith("tcp://"):
        return
    try:
        parts = urlsplit(scheduler)
        with socket.create_connection((parts.hostname, parts.port), timeout=10):
            pass
    except (OSError, ValueError, TypeError) as err:
        raise NdpcError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None


# ---------------------------------------------------------------- cache + driver


def cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.json"


def load_cached(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """A cached result (None when absent or unreadable: it is recomputed)."""
    path = cache_path(cache_dir, key)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("key") == key and "result" in doc else None


def store(cache_dir: Path, job: Job, done: dict[str, Any]) -> None:
    """Write one result atomically (a killed run never leaves half a file)."""
    doc = {"key": job.key, "inputs": job.inputs, "case": case_columns(job.case),
           "result": done["result"], "wall_s": done["wall_s"]}  # fmt: skip
    with output_file(cache_path(cache_dir, job.key)) as tmp:
        tmp.write_text(json.dumps(doc, sort_keys=True, indent=1), encoding="utf-8")


def run_jobs(
    jobs: Sequence[Job],
    cache_dir: str | Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    trace_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Outcome:
    """Run every job not in the cache (each distinct key once), store results as they arrive,
    and return one row per job: `case_columns` + its figures (or `error`)."""
    cache_dir = Path(cache_dir)
    trace_dir = str(Path(trace_dir or cache_dir / "traces").resolve())
    results: dict[str, dict[str, Any]] = {}
    wall: dict[str, float] = {}
    todo: dict[str, Job] = {}
    for job in jobs:
        hit = results.get(job.key) or load_cached(cache_dir, job.key)
        if hit is not None:
            results[job.key] = hit["result"]
            wall[job.key] = float(hit.get("wall_s", 0.0))
        else:
            todo.setdefault(job.key, job)
    cached_keys = set(results)
    if on_start:
        on_start(len(todo))
    pending = list(todo.values())
    stream = (dask_results(pending, trace_dir, scheduler) if scheduler
              else local_results(pending, trace_dir, workers))  # fmt: skip
    for done in stream:
        job = todo[done["key"]]
        if not done["transient"]:
            store(cache_dir, job, done)
        results[job.key] = done["result"]
        wall[job.key] = done["wall_s"]
        if progress:
            progress(1)
    rows = [{**case_columns(j.case), **results[j.key]} for j in jobs]
    out = Outcome(rows, wall_s=wall)
    out.computed = len(todo)
    out.cached = sum(1 for j in jobs if j.key in cached_keys)
    out.failed = sum(1 for r in rows if "error" in r)
    return out


def run_jobs_with_progress(jobs, cache_dir, label: str, progress: bool | None, **options):
    """`run_jobs` with a progress bar on stderr (default: when stderr is a terminal) that opens
    once the cached points are known and counts the points still to compute."""
    show = sys.stderr.isatty() if progress is None else progress
    bar = None

    def start(n: int) -> None:
        nonlocal bar
        if show and n:
            bar = click.progressbar(length=n, label=f"{label} ({len(jobs) - n} cached)",
                                    show_eta=True, show_pos=True, file=sys.stderr)  # fmt: skip
            bar.__enter__()

    try:
        return run_jobs(jobs, cache_dir, progress=lambda n: bar.update(n) if bar else None,
                        on_start=start, **options)  # fmt: skip
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
