"""`ndpc import` and `ndpc model` from the command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ndpc.compiler.cli import main
from ndpc.ir.parser import parse_module


def _run(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_import_zoo_name_prints_verified_ir():
    text = _run("import", "tiny-deepseek-v3")
    module = parse_module(text, "<stdout>")
    assert module.name == "tiny_deepseek_v3" and "moe.shared_experts" in text


def test_import_json_has_one_entry_per_layer():
    data = json.loads(_run("import", "deepseek-v2-lite", "--json"))
    layers = data["layers"]
    assert len(layers) == 27 and data["moe_layers"] == 26 and data["dense_layers"] == [0]
    assert layers[0]["kind"] == "dense" and layers[0]["experts"] == 0
    assert layers[0]["shared_experts"] == 0 and layers[0]["d_ff"] == 10944
    one = layers[1]
    assert (one["kind"], one["experts"], one["top_k"], one["d_model"], one["d_ff"]) == (
        "moe",
        64,
        6,
        2048,
        1408,
    )
    assert one["shared_experts"] == 2 and one["weight_bytes"] > 64 * 3 * 2048 * 1408 * 2


def test_summary_table_and_output_file(tmp_path):
    onnx_path, ir_path = tmp_path / "m.onnx", tmp_path / "m.ndpir"
    _run("model", "make", "tiny-qwen2-moe", "-o", str(onnx_path))
    out = _run("import", str(onnx_path), "-o", str(ir_path), "--summary")
    lines = out.splitlines()
    assert lines[0].startswith("model m ") and "2 layers, 1 MoE" in lines[0]
    assert lines[2].split()[:2] == ["0", "dense"] and lines[3].split()[:4] == ["1", "moe", "8", "2"]
    assert "1x64" in lines[3]
    assert parse_module(ir_path.read_text(), str(ir_path)).name == "m"
    # an .ndpir file is a model too
    assert _run("import", str(ir_path)) == ir_path.read_text()


def test_model_list_show_make(tmp_path):
    listing = _run("model", "list")
    assert "qwen3-30b-a3b" in listing and "small-2e" not in listing.split("(+")[0]
    assert "small-8e-4096h-top2" in _run("model", "list", "--all")
    assert json.loads(_run("model", "list", "--json"))[0]["name"] == "mixtral-8x7b"
    shown = _run("model", "show", "deepseek-v3")
    assert "n_group 8" in shown and "kv_lora_rank" in shown
    out = tmp_path / "v3.onnx"
    _run("model", "make", "deepseek-v3", "-o", str(out))
    assert out.exists() and not (tmp_path / "v3.onnx.data").exists()
    assert out.stat().st_size < 4 << 20  # shapes only
