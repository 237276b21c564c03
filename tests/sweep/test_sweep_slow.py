"""Slow sweep checks, as a user would run them: a sweep killed midway and resumed, and a Dask
cluster started with the `dask scheduler` / `dask worker` commands (bound to 127.0.0.1 only)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SPEC = """
[trace]
prompt = 8
tokens = 16
[axes]
model = ["qwen3-30b-a3b", "deepseek-v2-lite"]
"set.ndp.units" = [2, 4]
policy = ["monde", "paper", "ndpc"]
"trace.seed" = [0, 1]
"""


def _ndpc(*args: str, timeout: float = 600) -> dict:
    res = subprocess.run([str(BIN / "ndpc"), *args, "--json", "--no-progress"],
                         capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _table(out: Path) -> list[list[str]]:
    return list(csv.reader((out / "results.csv").open()))


@pytest.mark.slow
def test_killed_sweep_resumes_computing_only_the_missing(tmp_path: Path):
    spec, out = tmp_path / "spec.toml", tmp_path / "out"
    spec.write_text(SPEC)
    proc = subprocess.Popen([str(BIN / "ndpc"), "sweep", str(spec), "--out", str(out),
                             "--workers", "2", "--no-progress"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("cache/*/*.json"))) < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(list(out.glob("cache/*/*.json")))
    assert 12 <= done < 24, done
    assert not (out / "results.csv").exists()
    resumed = _ndpc("sweep", str(spec), "--out", str(out), "--workers", "2")
    assert (resumed["points"], resumed["cached"], resumed["computed"]) == (24, done, 24 - done)
    assert _ndpc("sweep", str(spec), "--out", str(out))["computed"] == 0


@pytest.mark.slow
def test_cli_started_dask_cluster_gives_the_local_table(tmp_path: Path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    local = _ndpc("sweep", str(spec), "--out", str(tmp_path / "local"), "--workers", "2")
    assert local["computed"] == 24
    info = tmp_path / "scheduler.json"
    common = ["--no-dashboard"]
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                               "0", "--scheduler-file", str(info), *common],
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", "--scheduler-file",
                                       str(info), "--host", "127.0.0.1", "--nworkers", "2",
                                       "--nthreads", "1", *common], start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        remote = _ndpc("sweep", str(spec), "--out", str(tmp_path / "dask"), "--scheduler", address)
        assert remote["computed"] == 24 and remote["failed"] == local["failed"]
        assert _table(tmp_path / "local") == _table(tmp_path / "dask")
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.mark.slow
def test_reproduce_quick_is_cached(tmp_path: Path):
    out = tmp_path / "repro"

    def run() -> str:
        res = subprocess.run([str(BIN / "ndpc"), "reproduce", "paper", "--quick", "--out", str(out),
                              "--no-progress"], capture_output=True, text=True, timeout=600)  # fmt: skip
        assert res.returncode == 0, res.stderr
        return res.stderr

    first = run()
    doc = (out / "results.json").read_bytes()
    assert " 0 cached" in first
    second = run()
    assert " 0 computed" in second
    assert (out / "results.json").read_bytes() == doc
    rows = json.loads(doc)["rows"]
    assert all(r["energy_per_token_j"] > 0 for r in rows if "error" not in r)
