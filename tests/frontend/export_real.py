"""Regenerate tests/fixtures/onnx/*.onnx with the real exporters (run by hand, never by pytest).

torch and transformers are NOT ndpc dependencies. Use a separate venv, pinned (the CPU build of
torch; an unpinned torch downloads gigabytes):

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 transformers==5.24.0 onnx==1.23.2 \
        onnxscript==0.7.2 onnx-ir==1.1.0     # torch: the 2.13.0+cpu wheel
    /tmp/torchenv/bin/python tests/frontend/export_real.py tests/fixtures/onnx

(`FAMILIES=mixtral,olmoe` limits the run.) About two minutes on 2 cores.

Recipe of ../shared/research/onnx-moe-graphs.md §11: tiny configs (vocab 256, hidden 64, 2 layers,
4 heads / 2 KV heads, 8 experts, top-2, expert width 32), random weights re-initialised from
N(0, 0.2) with a fixed seed, `experts_implementation="batched_mm"`, a wrapper returning only the
logits, an explicit all-ones attention mask; dynamo export (opset 20, dynamic batch/seq) and
TorchScript export (opset 17); plus a TorchScript export of the eager expert loop (pattern P2).
Only the graphs are kept: weights are saved as external data and the `.data` file is deleted, so
the committed files are small and the importer is tested on graphs whose weights are absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import onnx
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
    use_cache=False,
)
FAMILIES = {
    "mixtral": dict(num_local_experts=8, num_experts_per_tok=2, intermediate_size=32),
    "qwen2_moe": dict(
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
        mlp_only_layers=[0],
        intermediate_size=128,
        norm_topk_prob=False,
    ),
    "qwen3_moe": dict(
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        intermediate_size=128,
        norm_topk_prob=True,
        head_dim=16,
    ),
    "olmoe": dict(num_experts=8, num_experts_per_tok=2, intermediate_size=32),
    "deepseek_v3": dict(
        n_routed_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        n_shared_experts=1,
        n_group=2,
        topk_group=1,
        first_k_dense_replace=1,
        intermediate_size=128,
        routed_scaling_factor=2.5,
        kv_lora_rank=16,
        q_lora_rank=None,
        qk_rope_head_dim=8,
        qk_nope_head_dim=16,
        v_head_dim=16,
        num_key_value_heads=4,
    ),
    "gpt_oss": dict(
        num_local_experts=8,
        num_experts_per_tok=2,
        intermediate_size=32,
        head_dim=16,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=16,
    ),
    "phimoe": dict(num_local_experts=8, num_experts_per_tok=2, intermediate_size=32),
}


class LogitsOnly(torch.nn.Module):
    """forward(input_ids, attention_mask) -> logits, without a KV cache."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def build(family: str, experts_impl: str):
    cfg = AutoConfig.for_model(family, **{**COMMON, **FAMILIES[family]})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        cfg, attn_implementation="eager", experts_implementation=experts_impl
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    return LogitsOnly(model).eval()


def save_graph_only(model: onnx.ModelProto, path: Path) -> None:
    """Save with weights as external data, then drop the data file (never needed by ndpc).

    torch's `pkg.torch.onnx.stack_trace` metadata (absolute paths of this machine, most of the
    file's size) is dropped too; the name scopes and class hierarchy are kept.
    """
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    data = path.name + ".data"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data,
        size_threshold=256,
    )
    (path.parent / data).unlink(missing_ok=True)


def export(family: str, exporter: str, experts_impl: str, out: Path) -> None:
    wrapper = build(family, experts_impl)
    ids = torch.randint(0, 256, (2, 7))
    mask = torch.ones_like(ids)
    path = out / f"{family}__{experts_impl}__{exporter}.onnx"
    if exporter == "dynamo":
        batch, seq = (
            torch.export.Dim("batch", min=1, max=64),
            torch.export.Dim("seq", min=2, max=128),
        )
        prog = torch.onnx.export(
            wrapper,
            (ids, mask),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
        )
        model = prog.model_proto
    else:
        tmp = out / f".{path.name}.tmp"
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "logits")
            },
        )
        model = onnx.load(str(tmp))
        tmp.unlink()
    save_graph_only(model, path)
    print(f"{path.name}: {len(model.graph.node)} nodes", flush=True)


def export_hf(family: str, fusions: str | None, out: Path) -> None:
    """transformers' own OnnxExporter: grouped_mm experts (P3) or the ORT-fused MoE (P5)."""
    import onnx_ir
    from transformers.exporters import OnnxConfig, OnnxExporter

    model = build(family, "grouped_mm").m
    ids = torch.randint(0, 256, (2, 7))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    exported = OnnxExporter().export(model, inputs, OnnxConfig(ort_fusions=fusions))
    proto = onnx_ir.to_proto(exported.components["model"].program)
    kind = f"fused_{fusions}" if fusions else "grouped_mm"
    path = out / f"{family}__{kind}__hf_exporter.onnx"
    save_graph_only(proto, path)
    print(f"{path.name}: {len(proto.graph.node)} nodes", flush=True)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures_onnx")
    out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    only = set(os.environ.get("FAMILIES", "").split(",")) - {""}
    for family in FAMILIES:
        if only and family not in only:
            continue
        for exporter in ("dynamo", "torchscript"):
            try:
                export(family, exporter, "batched_mm", out)
            except Exception as err:  # record and go on: one family must not stop the rest
                print(f"{family} {exporter}: FAILED {type(err).__name__}: {err}"[:400])
    if not only or "mixtral" in only:
        export("mixtral", "torchscript", "eager", out)  # pattern P2 (input-specific!)
        for fusions in (None, "cuda"):
            try:
                export_hf("mixtral", fusions, out)
            except Exception as err:
                print(f"mixtral hf exporter {fusions}: FAILED {type(err).__name__}: {err}"[:400])


if __name__ == "__main__":
    main()
