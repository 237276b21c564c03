"""`--json` on every command that prints numbers (strict JSON), one shape for run and simulate
with the checker's verdict, CSV from compare, `target show` units and `target dump`,
`trace gen --model FILE`, shell completion, and no paths outside the repository in help texts."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click
import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner
from emit_fixtures import MODEL2, trace_for

from ndpc.backends.schedule import save_schedule
from ndpc.backends.simulator.synthetic import moe_schedule
from ndpc.backends.target import list_targets, load_target
from ndpc.compiler.cli import COMMANDS, main
from ndpc.compiler.commands.target import target_toml
from ndpc.traces.format import read_header, save_trace

REPO = Path(__file__).resolve().parents[2]


def strict(text: str):
    """json.loads that refuses NaN / Infinity (what allow_nan=False guarantees)."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def ok(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("json") / "t.npz"
    save_trace(trace_for(2, 8, 2, tokens=48, prompt=16, seed=0), path)
    return path


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["target", "list", "--json"], lambda d: {t["name"] for t in d} == set(list_targets())),
        (["model", "show", "mixtral-8x7b", "--json"], lambda d: d["experts"] == 8 and d["top_k"] == 2),
        (["model", "list", "--json"], lambda d: d[0]["name"] == "mixtral-8x7b"),
        (["target", "show", "rtx5080-ndp", "--json"], lambda d: d["units"]["gpu.bandwidth_gbps"] == "GB/s"),
        (["passes", "--json"], lambda d: any(p["name"] == "tp-split" for p in d)),
    ],
)  # fmt: skip
def test_listing_commands_print_strict_json(args, check):
    assert check(strict(ok(*args).stdout))


def test_schedule_stats_json_counts(tmp_path):
    path = tmp_path / "s.ndpsched"
    s = moe_schedule(layers=2, decode=3, prompt=4, experts=8, k=2)
    save_schedule(s, path)
    doc = strict(ok("schedule", "stats", str(path), "--json").stdout)
    assert (
        doc["ops"]
        == len(s)
        == sum(doc["ops_per_kind"].values())
        == sum(doc["ops_per_resource"].values())
    )
    assert doc["dependencies"] == len(s.dep_idx) and doc["meta"] == dict(s.meta)
    text = ok("schedule", "stats", str(path)).stdout
    assert "{" not in text  # the header's meta is listed, not printed as a Python dict


def test_run_and_simulate_share_one_json_shape_with_the_verdict(tmp_path, trace_file):
    sched = tmp_path / "s.ndpsched"
    common = [str(MODEL2), "--target", "rtx5080-ndp", "--trace", str(trace_file), "--policy", "tp"]
    ok("compile", *common, "-o", str(sched))
    ran = strict(ok("run", *common, "--json", "--check").stdout)
    sim = strict(ok("simulate", str(sched), "--target", "rtx5080-ndp", "--json", "--check").stdout)
    assert set(ran) == set(sim) == {"schedule", "result", "check", "optimum"}
    assert sim["optimum"] is None  # no model or trace to bound a bare schedule with
    opt = ran.pop("optimum")
    assert opt["optimum_bound_s"] <= ran["result"]["e2e_s"]
    assert opt["gap_to_optimum"] == ran["result"]["e2e_s"] / opt["optimum_bound_s"]
    assert ran == {k: v for k, v in sim.items() if k != "optimum"}  # same replay, same verdict
    assert ran["check"] == {"ok": True, "violations": 0, "counts": {}, "examples": {}}
    report = tmp_path / "r.json"
    ok("simulate", str(sched), "--target", "rtx5080-ndp", "-o", str(report))
    saved = strict(report.read_text())
    assert saved["result"] == sim["result"] and saved["check"] is None
    assert strict(ok("run", *common, "--json").stdout)["check"] is None


def test_compare_csv_matches_its_json(tmp_path, trace_file):
    args = ["compare", str(MODEL2), "--target", "rtx5080-ndp", "--trace", str(trace_file),
            "--policies", "monde,tp,paper", "-j", "1", "--check"]  # fmt: skip
    doc = strict(ok(*args, "--json", "--csv", str(tmp_path / "c.csv")).stdout)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "c.csv").read_text())))
    assert (
        [r["name"] for r in rows]
        == [p["name"] for p in doc["policies"]]
        == ["monde", "tp", "paper"]
    )
    for line, row in zip(rows, doc["policies"], strict=True):
        assert float(line["e2e_s"]) == row["e2e_s"]  # full precision, not rounded
        assert json.loads(line["check"]) == row["check"] and row["check"]["ok"] is True
    assert list(rows[0])[:4] == ["name", "policy", "oracle", "model"]


@pytest.mark.slow  # ~8 s: nine policies on qwen3-30b-a3b's 48 layers
def test_demo_json(tmp_path):
    result = CliRunner().invoke(
        main, ["demo", "--out", str(tmp_path / "d"), "--tokens", "4", "-j", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = strict(result.stdout)
    assert doc["model"] == "qwen3-30b-a3b" and len(doc["policies"]) >= 5
    assert Path(doc["timeline"]).is_file() and Path(doc["plot"]).is_file()


def test_target_show_prints_units(tmp_path):
    text = ok("target", "show", "rtx5080-ndp", "--no-sources").stdout
    line = next(x for x in text.splitlines() if x.strip().startswith("gpu.bandwidth_gbps"))
    assert line.split()[-1] == "GB/s"
    line = next(x for x in text.splitlines() if x.strip().startswith("ndp.launch_us"))
    assert line.split()[-1] == "µs"


@pytest.mark.parametrize("name", list_targets())
def test_target_dump_reads_back_to_the_same_target(tmp_path, name):
    path = tmp_path / "my.toml"
    path.write_text(ok("target", "dump", name).stdout)
    again, original = load_target(str(path)), load_target(name)
    assert again.values == original.values and again.sources == original.sources
    assert target_toml(again) == path.read_text()  # a fixed point
    doc = strict(ok("target", "check", str(path), "--json").stdout)
    assert (
        doc["ok"]
        and doc["values"] == len(original.values)
        and doc["ndp_units"] == original.ndp_units
    )


def test_target_dump_keeps_overrides_with_a_reason(tmp_path):
    path = tmp_path / "six.toml"
    path.write_text(ok("target", "dump", "rtx5080-ndp", "--set", "ndp.units=6").stdout)
    t = load_target(str(path))
    assert t.ndp_units == 6 and "--set ndp.units=6" in t.sources["ndp.units"]


def test_trace_gen_takes_a_model_file(tmp_path):
    onnx, ir = tmp_path / "m.onnx", tmp_path / "m.ndpir"
    ok("model", "make", "tiny-mixtral", "-o", str(onnx))
    ok("import", str(onnx), "-o", str(ir))
    for src, out in ((onnx, "a.npz"), (ir, "b.npz"), ("tiny-mixtral", "c.npz")):
        ok(
            "trace",
            "gen",
            "--model",
            str(src),
            "--tokens",
            "16",
            "--prompt",
            "8",
            "-o",
            str(tmp_path / out),
        )
    a, c = read_header(tmp_path / "a.npz"), read_header(tmp_path / "c.npz")
    shape = ("layers", "experts", "k", "params")
    assert [a[key] for key in shape] == [c[key] for key in shape]  # same shape, same preset
    assert read_header(tmp_path / "b.npz") == a  # the .onnx and its .ndpir: the same trace
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    bad = CliRunner().invoke(
        main,
        ["trace", "gen", "--model", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "x.npz")],
    )
    assert bad.exit_code == 1 and "none.onnx" in bad.output and not (tmp_path / "x.npz").exists()


def _complete(args: list[str], incomplete: str) -> list[str]:
    comp = ShellComplete(main, {}, "ndpc", "_NDPC_COMPLETE")
    return [item.value for item in comp.get_completions(args, incomplete) if item.type == "plain"]


def test_completion_of_models_targets_and_policies():
    assert "qwen3-30b-a3b" in _complete(["run"], "qwen3")
    assert all(v.startswith("qwen") for v in _complete(["run"], "qwen"))
    assert _complete(["simulate", "s.ndpsched", "--target"], "rtx5") == ["rtx5080-ndp"]
    assert "paper" in _complete(["run", "m", "--policy"], "pa")
    assert _complete(["compare", "m", "--policies"], "monde,pap") == ["monde,paper"]
    assert "mixtral-8x7b" in _complete(["model", "show"], "mix")
    assert "qwen3-30b-a3b" in _complete(["trace", "gen", "--model"], "qwen3")
    assert set(_complete([], "")) >= set(COMMANDS)


def _help_texts(group: click.Group, ctx: click.Context, prefix: list[str]):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        sub = click.Context(cmd, info_name=name, parent=ctx)
        yield [*prefix, name], cmd.get_help(sub)
        if isinstance(cmd, click.Group):
            yield from _help_texts(cmd, sub, [*prefix, name])


def test_user_facing_text_names_no_file_outside_the_repository():
    root = click.Context(main, info_name="ndpc")
    texts = {"ndpc --help": main.get_help(root)}
    texts.update({" ".join(path): text for path, text in _help_texts(main, root, ["ndpc"])})
    shipped = [
        *sorted((REPO / "backends" / "targets").glob("*.toml")),
        REPO / "compiler" / "zoo_models.toml",
    ]
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *shipped]:
        texts[str(doc.relative_to(REPO))] = doc.read_text(encoding="utf-8")
    for where, text in texts.items():
        for bad in ("../shared", "/work/", "/home/", "/tmp/"):
            assert bad not in text, f"{where} names {bad}"
