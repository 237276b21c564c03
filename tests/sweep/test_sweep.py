"""`ndpc sweep`: spec parsing, the per-point cache (re-run, resume, failures), the executors
(local pool and a real Dask LocalCluster give the same table), plots."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from harness import run_cli

from ndpc.compiler.experiments.sweep_spec import load_spec
from ndpc.ir.diagnostics import NdpcError

TINY = """
model = "tiny-mixtral"
[trace]
prompt = 4
tokens = 8
[axes]
policy = ["monde", "ndpc"]
"set.ndp.units" = [2, 4]
"trace.seed" = [0, 1]
"""


def _spec(tmp_path: Path, text: str = TINY, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _sweep(spec: Path, out: Path, *extra: str) -> dict:
    res = run_cli(["sweep", str(spec), "--out", str(out), "--json", "--no-progress", *extra], 120)
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def _table(out: Path) -> list[list[str]]:
    return list(csv.reader((out / "results.csv").open()))


def test_product_zip_and_defaults(tmp_path: Path):
    spec = load_spec(_spec(tmp_path))
    assert len(spec.points()) == 8
    assert spec.points()[0] == {"policy": "monde", "set.ndp.units": 2, "trace.seed": 0}
    text = TINY.replace("[trace]", 'zip = [["set.ndp.units", "trace.seed"]]\n[trace]')
    zipped = load_spec(_spec(tmp_path, text))
    assert [(p["set.ndp.units"], p["trace.seed"]) for p in zipped.points()] == [(2, 0), (4, 1)] * 2
    whole = load_spec(_spec(tmp_path, TINY.replace("[trace]", 'combine = "zip"\n[trace]')))
    assert [tuple(p.values()) for p in whole.points()] == [("monde", 2, 0), ("ndpc", 4, 1)]


@pytest.mark.parametrize(
    "text, words",
    [
        ("bogus = 1\n" + TINY, ["unknown key 'bogus'"]),
        (TINY + "bogus = [1]\n", ["unknown axis 'bogus'"]),
        (TINY.replace('"tiny-mixtral"', '"no-such-model"'), ["model"]),
        (TINY.replace('"ndpc"]', '"ndpcc"]'), ["policy", "ndpcc"]),
        (TINY.replace("[axes]", 'target = "nope"\n[axes]'), ["target", "nope"]),
        (TINY.replace("tokens = 8", "tokens = 2"), ["prompt < tokens"]),
        (TINY.replace("[trace]", 'combine = "zip"\n[trace]').replace("[0, 1]", "[0, 1, 2]"),
         ["differ in length"]),
        (TINY.replace("[trace]", 'zip = [["nope"]]\n[trace]'), ["'nope'", "not an axis"]),
        ('model = "tiny-mixtral"\n[axes]\npolicy = []\n', ["no values"]),
        ("model = [", ["invalid TOML"]),
        (TINY.replace('"set.ndp.units"', '"set.ndp.unit"'), ["unknown target key", "ndp.units"]),
        ('policy = "paper"\n', ["no model"]),
    ],
)  # fmt: skip
def test_bad_spec_is_one_message_naming_the_file(tmp_path: Path, text: str, words: list[str]):
    spec = _spec(tmp_path, text)
    out = tmp_path / "out"
    res = run_cli(["sweep", str(spec), "--out", str(out)])
    assert res.exit_code == 1 and res.exception is None
    assert "Traceback" not in res.stderr and str(spec) in res.stderr
    for w in words:
        assert w in res.stderr, res.stderr
    assert not out.exists()


def test_unknown_key_has_line_and_column(tmp_path: Path):
    spec = _spec(tmp_path, TINY.replace("[axes]", "[axes]\n  'set.ndp.gflops' = 3"))
    with pytest.raises(NdpcError) as err:
        load_spec(spec)
    line = TINY.splitlines().index("[axes]") + 2
    assert f"{spec}:{line}:3" in err.value.render()


def test_rerun_recomputes_nothing_and_resume_computes_only_the_missing(tmp_path: Path):
    spec, out = _spec(tmp_path), tmp_path / "out"
    first = _sweep(spec, out, "--workers", "1")
    assert (first["points"], first["computed"], first["cached"], first["failed"]) == (8, 8, 0, 0)
    csv1, pq1 = (out / "results.csv").read_bytes(), (out / "results.parquet").read_bytes()
    header = _table(out)[0]
    for col in ("policy", "set.ndp.units", "trace.seed", "e2e_s", "ttft_s", "tpot_s",
                "energy_per_token_j", "error", "key", "model_hash"):  # fmt: skip
        assert col in header
    assert "wall_s" not in header  # measured, so kept out of the table: timings.csv
    timings = list(csv.reader((out / "timings.csv").open()))
    assert timings[0] == ["key", "wall_s"]
    assert [r[0] for r in timings[1:]] == [r[header.index("key")] for r in _table(out)[1:]]
    assert all(float(r[1]) > 0 for r in timings[1:])
    again = _sweep(spec, out, "--workers", "1")
    assert (again["computed"], again["cached"]) == (0, 8)
    # cached points keep their recorded wall time: the files are the same bytes
    assert (out / "results.csv").read_bytes() == csv1
    assert (out / "results.parquet").read_bytes() == pq1
    # a run killed midway leaves the finished points: remove 3 and run again
    files = sorted((out / "cache").glob("*/*.json"))
    assert len(files) == 8
    for f in files[:3]:
        f.unlink()
    resumed = _sweep(spec, out, "--workers", "2")
    assert (resumed["computed"], resumed["cached"]) == (3, 5)
    assert (out / "results.csv").read_text().count("\n") == 9


def test_failed_point_is_recorded_and_the_rest_run(tmp_path: Path):
    text = TINY.replace('"set.ndp.units" = [2, 4]', '"set.ndp.units" = [1, 4]')  # min is 2
    spec, out = _spec(tmp_path, text), tmp_path / "out"
    summary = _sweep(spec, out, "--workers", "1")
    assert (summary["points"], summary["failed"]) == (8, 4)
    rows = list(csv.DictReader((out / "results.csv").open()))
    bad = [r for r in rows if r["set.ndp.units"] == "1"]
    assert all("ndp.units" in r["error"] and r["e2e_s"] == "" for r in bad)
    assert all(r["error"] == "" and float(r["e2e_s"]) > 0 for r in rows if r not in bad)
    assert _sweep(spec, out, "--workers", "1")["computed"] == 0  # input errors are cached too


def test_dask_local_cluster_gives_the_same_table(tmp_path: Path):
    distributed = pytest.importorskip("distributed")
    spec = _spec(tmp_path)
    _sweep(spec, tmp_path / "local", "--workers", "2")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None, processes=True) as cluster:  # fmt: skip
        summary = _sweep(spec, tmp_path / "dask", "--scheduler", cluster.scheduler_address)
    assert summary["computed"] == 8 and summary["executor"].startswith("dask")
    for name in ("results.csv", "results.parquet"):  # byte-identical whichever executor ran
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes()


def test_unreachable_scheduler_is_one_message(tmp_path: Path):
    res = run_cli(["sweep", str(_spec(tmp_path)), "--out", str(tmp_path / "o"),
                   "--scheduler", "tcp://127.0.0.1:1"], 60)  # fmt: skip
    assert res.exit_code == 1 and "cannot reach the Dask scheduler" in res.stderr
    res = run_cli(["sweep", str(_spec(tmp_path)), "--out", str(tmp_path / "o"), "--scheduler", "x"])
    assert res.exit_code == 1 and "tcp://HOST:PORT" in res.stderr


def test_plots(tmp_path: Path):
    spec, out = _spec(tmp_path), tmp_path / "out"
    _sweep(spec, out, "--workers", "1")
    for args in (["--x", "set.ndp.units", "--y", "e2e_s"],
                 ["--kind", "pareto", "--x", "energy_per_token_j", "--y", "e2e_s"],
                 ["--kind", "heatmap", "--x", "set.ndp.units", "--y", "policy", "--z", "tpot_s"],
                 ["--x", "trace.seed", "--y", "e2e_s", "--where", "set.ndp.units=4"]):  # fmt: skip
        png = tmp_path / "p.png"
        res = run_cli(["sweep", "plot", str(out), *args, "-o", str(png)], 60)
        assert res.exit_code == 0, res.stderr
        assert png.read_bytes()[:4] == b"\x89PNG"
        png.unlink()
    res = run_cli(["sweep", "plot", str(out), "--x", "nope", "--y", "e2e_s"])
    assert res.exit_code == 1 and "no column 'nope'" in res.stderr
    shutil.rmtree(out)
    res = run_cli(["sweep", "plot", str(out), "--x", "a", "--y", "b"])
    assert res.exit_code == 1 and "no results" in res.stderr


def test_pareto_front():
    from ndpc.compiler.experiments.sweep_plots import pareto_front

    pts = [(1, 5.0), (2, 3.0), (2, 4.0), (3, 3.5), (4, 1.0)]
    assert pareto_front(pts) == [(1, 5.0), (2, 3.0), (4, 1.0)]


def test_documented_example_spec_parses():
    spec = load_spec(Path(__file__).resolve().parents[2] / "docs" / "examples" / "sweep.toml")
    assert len(spec.points()) == 24


def test_options_may_come_before_the_spec(tmp_path: Path):
    out = tmp_path / "out"
    res = run_cli(
        ["sweep", "--json", "--workers", "1", str(_spec(tmp_path)), "--out", str(out)], 120
    )
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["points"] == 8


@pytest.mark.slow
def test_a_killed_worker_fails_its_points_without_hanging(tmp_path: Path, monkeypatch):
    import os

    from harness import time_limit

    from ndpc.compiler.experiments import sweep
    from ndpc.compiler.experiments.sweep_spec import point_job

    spec = load_spec(_spec(tmp_path))
    jobs = [point_job(spec, p) for p in spec.points()]
    real = sweep.compute_case

    def dying(case):  # runs in the forked worker: the OS kills it mid-point
        if case.policy == "ndpc":
            os._exit(9)
        return real(case)

    monkeypatch.setattr(sweep, "compute_case", dying)
    with time_limit(120):
        out = sweep.run_jobs(jobs, tmp_path / "cache", workers=2)
    assert out.failed >= 4 and all(
        r["error"].startswith("worker:") for r in out.rows if "error" in r
    )
    monkeypatch.setattr(sweep, "compute_case", real)
    again = sweep.run_jobs(jobs, tmp_path / "cache", workers=1)
    assert again.failed == 0 and again.computed == out.failed  # failures were not cached
