"""Regenerate the onnxruntime-genai builder fixture(s) in tests/fixtures/onnx (run by hand, never
by pytest).

The builder writes GPT-OSS for the DirectML provider (`-e dml`; every other provider it offers,
cpu/cuda/webgpu/NvTensorRtRtx, gets the fused com.microsoft::MoE instead: `GPTOSSModel.make_moe`)
as a decomposed MoE: router MatMul + Add -> Cast -> TopK -> Gather of the stacked weights and
biases by the TopK indices -> MatMul -> clamped SwiGLU -> MatMul -> Mul by Softmax(top-k values)
-> ReduceSum over k. onnxruntime-genai, torch and transformers are NOT ndpc dependencies. Use a
separate venv, pinned (torch: the 2.13.0+cpu wheel; an unpinned torch downloads gigabytes):

    python3 -m venv /tmp/genai-venv
    /tmp/genai-venv/bin/pip install torch==2.13.0 transformers==5.24.0 onnx==1.23.2 \
        onnxruntime==1.32.0 onnxruntime-genai==0.18.0
    /tmp/genai-venv/bin/python tests/frontend/export_genai.py tests/fixtures/onnx

Recipe: the tiny GPT-OSS config of export_real.py (vocab 256, hidden 64, 2 layers, 4 heads / 2 KV
heads of 16, 8 experts, top-2, alternating sliding/full attention) but expert width 48, not 32:
with 32, gate_up is [8, 64, 64] and d_model = 2 * d_ff, so the fixture could not show which axis
the importer takes for d_model. Random weights re-initialised from N(0, 0.2) with seed 0, saved
with `save_pretrained` next to a generated word-level tokenizer (the builder reads one), then

    python -m onnxruntime_genai.models.builder -i <model> -o <out> -p fp16 -e dml -c <cache>

As for the other exporters only the graph is committed: the weights go to external data and the
`.data` file is deleted (ndpc never reads weights).

What the 0.18.0 builder writes for dml does not run, with or without its weights: the stacked
expert weights are stored as transformers keeps them, input-major ([E, d_model, 2*d_ff] and
[E, d_ff, d_model]), while its MatMuls (and its own value_info) expect [E, 2*d_ff, d_model] and
[E, d_model, d_ff]; and the fp32 MoE output feeds the next fp16 SkipSimplifiedLayerNormalization
without the Cast its comment promises. onnxruntime 1.32 refuses the session (shape inference,
then a type error once the weights are transposed). So this fixture is for import only; capture is
tested on the hand-built runnable variant in onnx_fixtures.py.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import onnxruntime_genai
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_real import COMMON, FAMILIES, save_graph_only  # noqa: E402

# (precision, execution provider) -> fixture name
BUILDS = {("fp16", "dml"): "gpt_oss__genai_builder_fp16_dml__decomposed.onnx"}
EXPERT_WIDTH = 48


def save_tiny_gpt_oss(folder: Path) -> None:
    """The tiny random-weight GPT-OSS checkpoint + a word-level tokenizer, as the builder reads."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    extra = {**FAMILIES["gpt_oss"], "intermediate_size": EXPERT_WIDTH}
    cfg = AutoConfig.for_model("gpt_oss", **{**COMMON, **extra})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, cfg.vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(folder)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures_onnx")
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"onnxruntime-genai {onnxruntime_genai.__version__}, onnx {onnx.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tiny-gpt-oss"
        save_tiny_gpt_oss(src)
        for (precision, ep), name in BUILDS.items():
            built = Path(tmp) / f"{precision}_{ep}"
            cmd = [
                sys.executable,
                "-m",
                "onnxruntime_genai.models.builder",
                "-i",
                str(src),
                "-o",
                str(built),
                "-p",
                precision,
                "-e",
                ep,
                "-c",
                str(Path(tmp) / "cache"),
            ]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            model = onnx.load(str(built / "model.onnx"))
            save_graph_only(model, out / name)
            print(f"{name}: {len(model.graph.node)} nodes", flush=True)


if __name__ == "__main__":
    main()
