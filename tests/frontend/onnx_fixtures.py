"""Small ONNX fixture graphs, built with the onnx helpers, one per pattern the importer knows.

Run by hand to write them all into a folder (the tests build them in memory instead):

    .venv/bin/python tests/frontend/onnx_fixtures.py OUTDIR

Each builder returns `(onnx.ModelProto, expected)`; `expected` lists what `import_spec` must find.
Weights are external-data references into a `.data` file that is never written (so every fixture
also checks that a missing `.data` file imports). Decoder-shaped fixtures come from
`ndpc model make` variants of tiny configs; the fused and the P2-P4 blocks are built by hand.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from ndpc.compiler.frontend.model_writer import make_model
from ndpc.compiler.frontend.onnx_writer import GraphWriter
from ndpc.compiler.zoo import get_model
from ndpc.ir.types import DType

E, H, I, K, V = 8, 64, 32, 2, 256  # the research note's tiny export config

TINY = get_model("tiny-mixtral")
VARIANTS = {  # zoo-writer variants: routers, shared experts, dense layers, biases, clamps, MLA
    "softmax_topk_renorm": (TINY, dict(kinds=["moe", "moe"], rule="softmax_topk", renorm=True)),
    "qwen2_shared_gated_dense0": (
        get_model("tiny-qwen2-moe"),
        dict(
            kinds=["dense", "moe"],
            rule="softmax_topk",
            renorm=False,
            shared=(1, 64, True),
            d_ff_dense=128,
        ),
    ),
    "deepseek_group_topk_shared": (
        get_model("tiny-deepseek-v3"),
        dict(
            kinds=["dense", "moe", "moe"],
            rule="sigmoid_group_topk",
            renorm=True,
            groups=(2, 1),
            shared=(1, 32, False),
        ),
    ),
    "gpt_oss_topk_softmax_bias_clamp": (
        replace(
            TINY,
            name="tiny-gpt-oss",
            routing="topk_softmax",
            renormalize=False,
            expert_bias=True,
            clamp=7.0,
        ),
        dict(kinds=["moe", "moe"], rule="topk_softmax", bias=True, clamp=7.0),
    ),
    "phimoe_sparsemixer_layernorm": (
        replace(TINY, name="tiny-phimoe", routing="sparsemixer", renormalize=False, norm="layer"),
        dict(kinds=["moe", "moe"], rule="sparsemixer", norm="layer"),
    ),
    "switch_top1_relu_alternating": (
        replace(
            TINY,
            name="tiny-switch",
            layers=4,
            dense_layers=(0, 2),
            d_ff_dense=32,
            top_k=1,
            routing="top1_capacity",
            renormalize=False,
            activation="relu",
            kv_heads=4,
        ),
        dict(
            kinds=["dense", "moe", "dense", "moe"],
            rule="top1_capacity",
            k=1,
            activation="relu",
            d_ff_dense=32,
        ),
    ),
    "deepseek_mla_two_shared": (
        replace(
            TINY,
            name="tiny-mla",
            layers=2,
            dense_layers=(0,),
            d_ff_dense=96,
            shared_experts=2,
            attention="mla",
            heads=4,
            kv_heads=4,
            head_dim=24,
            kv_lora_rank=16,
            kv_cache_dim=24,
            q_lora_rank=32,
        ),
        dict(kinds=["dense", "moe"], shared=(2, 32, False), attention="mla", d_ff_dense=96),
    ),
}


def _writer() -> GraphWriter:
    return GraphWriter(DType.F32, "fixture.onnx.data", tiny_weights=False)


def _model(w: GraphWriter, name: str, inputs: list, outputs: list, ms: bool = False):
    opsets = {"": 20, "com.microsoft": 1} if ms else {"": 20}
    return w.model(name, inputs, outputs, opsets)


def _io(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def zoo_variant(key: str):
    """A decoder from `ndpc model make` of a tiny config variant (pattern P1)."""
    cfg, exp = VARIANTS[key]
    return make_model(cfg, "fixture.onnx.data"), {
        "layers": len(exp["kinds"]),
        "experts": E,
        "k": exp.get("k", cfg.top_k),
        "d_model": H,
        "d_ff": I,
        "form": "gather-bmm",
        **exp,
    }


def _router(w: GraphWriter, x: str, s: str, p: str, renorm: bool = True):
    logits = w.op1("MatMul", [x, w.weight(f"{p}.gate.weight", (H, E))], f"{s}/gate")
    probs = w.op1("Softmax", [logits], f"{s}/gate", axis=-1)
    vals, idx = w.op("TopK", [probs, w.ints(f"{p}.k", [K])], f"{s}/gate", outputs=2, axis=-1)
    if renorm:
        total = w.op1("ReduceSum", [vals, w.ints(f"{p}.last", [-1])], f"{s}/gate", keepdims=1)
        vals = w.op1("Div", [vals, total], f"{s}/gate")
    return logits, vals, idx


def _norm(w: GraphWriter, x: str, s: str, p: str) -> str:
    ms = w.op1("ReduceMean", [w.op1("Mul", [x, x], s), w.ints(f"{p}.axes", [-1])], s)
    return w.op1(
        "Mul", [w.op1("Div", [x, w.op1("Sqrt", [ms], s)], s), w.weight(f"{p}.weight", (H,))], s
    )


def _decoder(block, layers: int = 2, name: str = "decomposed", dtype: DType = DType.F32):
    """Embedding -> per layer (norm -> block -> add) -> norm -> LM head, names as TorchScript."""
    w = GraphWriter(dtype, "fixture.onnx.data", tiny_weights=False)
    x = w.op1(
        "Gather",
        [w.weight("model.embed_tokens.weight", (V, H)), "input_ids"],
        "/model/embed_tokens",
        axis=0,
    )
    for i in range(layers):
        s, p = f"/model/layers.{i}", f"model.layers.{i}"
        n = _norm(w, x, f"{s}/post_attention_layernorm", f"{p}.post_attention_layernorm")
        x = w.op1("Add", [x, block(w, n, f"{s}/mlp", f"{p}.mlp")], s)
    x = _norm(w, x, "/model/norm", "model.norm")
    w.op("MatMul", [x, w.weight("lm_head.weight", (H, V))], "/lm_head")
    return _model(
        w,
        name,
        [_io("input_ids", ["seq"], TensorProto.INT64)],
        [_io(w.nodes[-1].output[0], ["seq", V], w.elem)],
    )


def _silu_mul(w: GraphWriter, y: str, s: str, p: str, axis: int) -> str:
    gate, up = w.op("Split", [y, w.ints(f"{p}.halves", [I, I])], s, outputs=2, axis=axis)
    return w.op1("Mul", [w.op1("Mul", [gate, w.op1("Sigmoid", [gate], s)], s), up], s)


def unrolled_block(hit=(0, 2, 5)):
    """P2: TorchScript trace of the eager loop: OneHot/NonZero, one branch per hit expert."""

    def block(w: GraphWriter, x: str, s: str, p: str) -> str:
        _, vals, idx = _router(w, x, s, p)
        e = f"{s}/experts"
        w_gu = w.weight(f"{p}.experts.gate_up_proj", (E, 2 * I, H))
        w_d = w.weight(f"{p}.experts.down_proj", (E, H, I))
        oh = w.op1("OneHot", [idx, w.ints(f"{p}.depth", [E]), w.ints(f"{p}.onoff", [0, 1])], e)
        oh = w.op1("Transpose", [oh], e, perm=[2, 1, 0])
        acc = w.op1("Mul", [x, w.scalar(f"{p}.zero", 0.0)], e)
        for ex in hit:
            sel = w.op1("Gather", [oh, w.ints(f"{p}.e{ex}", [ex])], e, axis=0)
            nz = w.op1("NonZero", [sel], e)
            rows = w.op1("Gather", [nz, w.ints(f"{p}.one", [1])], e, axis=0)
            tok = w.op1("Gather", [x, rows], e, axis=0)
            wg = w.op1("Transpose", [w.op1("Gather", [w_gu, f"{p}.e{ex}"], e, axis=0)], e)
            h = _silu_mul(w, w.op1("MatMul", [tok, wg], e), e, p, axis=-1)
            wd = w.op1("Transpose", [w.op1("Gather", [w_d, f"{p}.e{ex}"], e, axis=0)], e)
            out = w.op1("Mul", [w.op1("MatMul", [h, wd], e), vals], e)
            acc = w.op1("ScatterElements", [acc, rows, out], e, axis=0)
        return acc

    return _decoder(block, name="unrolled"), {
        "layers": 2,
        "kinds": ["moe", "moe"],
        "experts": E,
        "k": K,
        "d_model": H,
        "d_ff": I,
        "form": "unrolled",
        "notes": "unrolled",
    }


def grouped_block():
    """P3: argsort TopK (largest=0), Split of stacked weights, one MatMul per expert."""

    def block(w: GraphWriter, x: str, s: str, p: str) -> str:
        _, vals, idx = _router(w, x, s, p)
        e = f"{s}/experts"
        flat = w.op1("Reshape", [idx, w.ints(f"{p}.flat", [-1])], e)
        n = w.op1("Shape", [flat], e)
        _, order = w.op("TopK", [w.op1("Cast", [flat], e, to=1), n], e, outputs=2, largest=0)
        hist = w.op1(
            "ScatterElements", [w.weight(f"{p}.zeros", (E,)), flat, flat], e, reduction="add"
        )
        ends = w.op1("CumSum", [hist, w.ints(f"{p}.ax0", [0])], e)
        sizes = w.ints(f"{p}.ones", [1] * E)
        parts_gu = w.op(
            "Split",
            [w.weight(f"{p}.experts.gate_up_proj", (E, 2 * I, H)), sizes],
            e,
            outputs=E,
            axis=0,
        )
        parts_d = w.op(
            "Split", [w.weight(f"{p}.experts.down_proj", (E, H, I)), sizes], e, outputs=E, axis=0
        )
        rows = w.op1("Gather", [x, w.op1("Div", [order, w.ints(f"{p}.kk", [K])], e)], e)
        outs = []
        for ex in range(E):
            lo = w.op1("Gather", [ends, w.ints(f"{p}.lo{ex}", [max(ex - 1, 0)])], e)
            hi = w.op1("Gather", [ends, w.ints(f"{p}.hi{ex}", [ex])], e)
            r = w.op1("Gather", [rows, w.op1("Range", [lo, hi, w.ints(f"{p}.st", [1])], e)], e)
            wg = w.op1("Transpose", [w.op1("Squeeze", [parts_gu[ex], f"{p}.ax0"], e)], e)
            h = _silu_mul(w, w.op1("MatMul", [r, wg], e), e, p, axis=-1)
            wd = w.op1("Transpose", [w.op1("Squeeze", [parts_d[ex], f"{p}.ax0"], e)], e)
            outs.append(w.op1("MatMul", [h, wd], e))
        cat = w.op1("Concat", outs, e, axis=0)
        back = w.op1("GatherND", [cat, w.op1("Unsqueeze", [order, f"{p}.ax0"], e)], e)
        return w.op1("ReduceSum", [w.op1("Mul", [back, vals], e), f"{p}.ax0"], e)

    return _decoder(block, name="grouped"), {
        "layers": 2,
        "kinds": ["moe", "moe"],
        "experts": E,
        "k": K,
        "d_model": H,
        "d_ff": I,
        "form": "grouped",
    }


def dense_loop_block(per_expert: bool = False):
    """P4: every expert on every token, masked by Equal(selected, e) (mobius's default path).

    `per_expert` uses separate 2-D weights in `experts.<e>` scopes instead of stacked ones.
    """

    def block(w: GraphWriter, x: str, s: str, p: str) -> str:
        _, vals, idx = _router(w, x, s, p, renorm=False)
        e = f"{s}/experts"
        if not per_expert:
            wg = w.op1(
                "Transpose",
                [w.weight(f"{p}.experts.gate_up_proj", (E, 2 * I, H))],
                e,
                perm=[0, 2, 1],
            )
            wd = w.op1(
                "Transpose", [w.weight(f"{p}.experts.down_proj", (E, H, I))], e, perm=[0, 2, 1]
            )
            h = _silu_mul(w, w.op1("MatMul", [x, wg], e), e, p, axis=-1)
            all_out = w.op1("MatMul", [h, wd], e)  # [E, T, H]
        acc = w.op1("Mul", [x, w.scalar(f"{p}.zero", 0.0)], e)
        for ex in range(E):
            if per_expert:
                es, ep = f"{e}.{ex}", f"{p}.experts.{ex}"
                g = w.op1(
                    "MatMul", [x, w.weight(f"{ep}.gate_proj.weight", (H, I))], f"{es}/gate_proj"
                )
                u = w.op1("MatMul", [x, w.weight(f"{ep}.up_proj.weight", (H, I))], f"{es}/up_proj")
                h = w.op1("Mul", [w.op1("Mul", [g, w.op1("Sigmoid", [g], es)], es), u], es)
                out = w.op1(
                    "MatMul", [h, w.weight(f"{ep}.down_proj.weight", (I, H))], f"{es}/down_proj"
                )
            else:
                out = w.op1("Gather", [all_out, w.ints(f"{p}.e{ex}", [ex])], e, axis=0)
            eq = w.op1("Equal", [idx, w.ints(f"{p}.id{ex}", [ex])], e)
            m = w.op1(
                "ReduceSum",
                [
                    w.op1("Mul", [w.op1("CastLike", [eq, vals], e), vals], e),
                    w.ints(f"{p}.last", [-1]),
                ],
                e,
            )
            acc = w.op1("Add", [acc, w.op1("Mul", [out, m], e)], e)
        return acc

    form = "per-expert" if per_expert else "dense-loop"
    return _decoder(block, name=form), {
        "layers": 2,
        "kinds": ["moe", "moe"],
        "experts": E,
        "k": K,
        "d_model": H,
        "d_ff": I,
        "form": form,
        "renorm": False,
    }


GENAI_DFF = 48  # expert width of the genai builder fixtures: 2 * d_ff != d_model
INT64_MAX = 9223372036854775807


def genai_block(layout: str, k: int = K):
    """The onnxruntime-genai builder's decomposed GPT-OSS MoE (`GPTOSSModel.make_moe_decomposed`,
    written for `-e dml`), with [T, k, ...] where the builder has [batch, seq, k, ...].

    router MatMul + Add [-> Cast fp32] -> TopK [-> Cast]; Gather of the stacked weights and biases
    by the TopK indices; MatMul(W, x) -> + bias -> interleaved clamped SwiGLU (Slice step 2, Clip,
    Mul alpha, Sigmoid, Mul, up + 1, Mul) -> MatMul -> + bias; Mul by Softmax(top-k values) ->
    ReduceSum over k -> Squeeze.

    `layout`: "fp16_as_written" is what builder 0.18.0 writes for `-p fp16` (Casts around TopK
    and the weighted sum; expert weights input-major [E, H, 2I] / [E, I, H] as transformers
    stores them, which its MatMuls cannot multiply: a graph for import only); "fp32" is the
    `-p fp32` spelling (no Casts) with the output-major [E, 2I, H] / [E, H, I] weights the MatMuls
    need, so with tiny weights it runs in onnxruntime.
    """
    cast = layout == "fp16_as_written"
    dff = GENAI_DFF

    def block(w: GraphWriter, x: str, s: str, p: str) -> str:
        c = w.op1("Unsqueeze", [x, w.ints("axes_1", [1])], f"{s}/expand_root_input")
        c = w.op1("Expand", [c, w.ints("expand_k", [1, k, 1])], f"{s}/expand_root_input")
        xe = w.op1("Unsqueeze", [c, w.ints("axes_last", [-1])], f"{s}/expand_root_input")
        logits = w.op1("MatMul", [x, w.weight(f"{p}.router.MatMul.weight", (H, E))], f"{s}/router")
        logits = w.op1("Add", [logits, w.weight(f"{p}.router.Add.bias", (E,))], f"{s}/router")
        if cast:
            logits = w.op1("Cast", [logits], f"{s}/topk_fp32", to=TensorProto.FLOAT)
        vals, idx = w.op("TopK", [logits, w.ints("top_k", [k])], s, outputs=2, axis=-1)
        if cast:
            vals = w.op1("Cast", [vals], f"{s}/topk_io", to=w.elem)
        shapes = {
            "gate_up_proj": (E, H, 2 * dff) if cast else (E, 2 * dff, H),
            "down_proj": (E, dff, H) if cast else (E, H, dff),
        }
        mats = {}
        for mlp, proj in (("mlp1", "gate_up_proj"), ("mlp2", "down_proj")):
            base = f"{p}.experts.{proj}"
            wg = w.op1(
                "Gather",
                [w.weight(f"{base}.weight", shapes[proj]), idx],
                f"{s}/{mlp}/weight",
                axis=0,
            )
            width = 2 * dff if proj == "gate_up_proj" else H
            bg = w.op1(
                "Gather", [w.weight(f"{base}.bias", (E, width)), idx], f"{s}/{mlp}/bias", axis=0
            )
            mats[proj] = (wg, w.op1("Unsqueeze", [bg, "axes_last"], f"{s}/{mlp}/bias"))
        weights = w.op1("Softmax", [vals], f"{s}/expert_weights", axis=-1)
        weights = w.op1("Unsqueeze", [weights, "axes_last"], f"{s}/expert_weights")
        weights = w.op1("Unsqueeze", [weights, "axes_last"], f"{s}/expert_weights")
        if cast:
            weights = w.op1("Cast", [weights], f"{s}/expert_weights", to=TensorProto.FLOAT)
        a = f"{s}/act_fn"
        y = w.op1("MatMul", [mats["gate_up_proj"][0], xe], f"{s}/gate_up_proj")
        y = w.op1("Add", [y, mats["gate_up_proj"][1]], f"{s}/gate_up_proj")
        end, axis, step = w.ints("end", [INT64_MAX]), w.ints("axis_2", [2]), w.ints("step_2", [2])
        gate = w.op1("Slice", [y, w.ints("start_0", [0]), end, axis, step], a)
        up = w.op1("Slice", [y, w.ints("start_1", [1]), end, axis, step], a)
        limit = w.scalar("limit", 7.0)
        gate = w.op1("Clip", [gate, "", limit], a)
        up = w.op1("Clip", [up, w.scalar("neg_limit", -7.0), limit], a)
        sig = w.op1("Sigmoid", [w.op1("Mul", [gate, w.scalar("alpha", 1.702)], a)], a)
        glu = w.op1(
            "Mul", [w.op1("Mul", [gate, sig], a), w.op1("Add", [up, w.scalar("one", 1.0)], a)], a
        )
        out = w.op1("MatMul", [mats["down_proj"][0], glu], f"{s}/down_proj")
        out = w.op1("Add", [out, mats["down_proj"][1]], f"{s}/down_proj")
        if cast:
            out = w.op1("Cast", [out], f"{s}/down_proj", to=TensorProto.FLOAT)
        ws = f"{s}/weighted_sum"
        out = w.op1("Mul", [out, weights], ws)
        out = w.op1("ReduceSum", [out, w.ints("axes_1", [1])], ws, keepdims=0)
        out = w.op1("Squeeze", [out, "axes_last"], ws)
        if cast:  # builder 0.18.0 leaves this Cast out (the next fp16 norm then fails to load)
            out = w.op1("Cast", [out], ws, to=w.elem)
        return out

    return block


def genai_decomposed(layout: str):
    """A decoder whose MoE layers are the genai builder's decomposed GPT-OSS block."""
    dtype = DType.F16 if layout == "fp16_as_written" else DType.F32
    return _decoder(genai_block(layout), name=f"genai_{layout}", dtype=dtype), {
        "layers": 2,
        "kinds": ["moe", "moe"],
        "experts": E,
        "k": K,
        "d_model": H,
        "d_ff": GENAI_DFF,
        "form": "gather-bmm",
        "rule": "topk_softmax",
        "renorm": False,
        "bias": True,
        "clamp": 7.0,
        "activation": "swiglu",
    }


def genai_block_model(tiny_weights: bool, seed: int = 0) -> onnx.ModelProto:
    """One runnable genai decomposed block (fp32 layout), hidden [T, H] -> [T, H]."""
    w = GraphWriter(DType.F32, "fixture.onnx.data", tiny_weights=tiny_weights, seed=seed)
    out = genai_block("fp32")(w, "hidden", "/model/layers.0/moe", "model.layers.0.moe")
    return _model(w, "genai_block", [_io("hidden", ["T", H])], [_io(out, ["T", H])])


def fused_moe(variant: str):
    """P5: com.microsoft::MoE blocks (router MatMul + Reshape feeding router_probs)."""
    attrs = {"k": K, "normalize_routing_weights": 1}
    fc1_rows, fc3, act = 2 * I, False, "swiglu"
    if variant == "interleaved":
        attrs.update(swiglu_fusion=1, activation_alpha=1.702, activation_beta=1.0, swiglu_limit=7.0)
    elif variant == "concat":
        attrs.update(swiglu_fusion=2)
    elif variant == "fc3":  # transformers exporter's cuda fusion: silu + separate up (fc3)
        fc1_rows, fc3, act = I, True, "silu"
    elif variant == "relu_k1":
        fc1_rows, act = I, "relu"
        attrs.update(k=1, normalize_routing_weights=0)
    elif variant == "sparse_mixer":  # Phi-MoE via the genai builder: fc1/fc2/fc3
        fc1_rows, fc3, act = I, True, "silu"
        attrs.update(use_sparse_mixer=1, normalize_routing_weights=0)
    w = _writer()
    x = "hidden"
    opaque = variant == "fc3"  # no layer names: layer order from graph order
    for i in range(2):
        s, p = (
            ("", f"mixture_of_experts_{i}")
            if opaque
            else (f"/model/layers.{i}/moe", f"model.layers.{i}.moe")
        )
        gate = w.op1(
            "MatMul",
            [x, w.weight(f"{p}.router.weight", (H, E))],
            f"node_MatMul_{i}" if opaque else f"{s}/router",
        )
        probs = w.op1(
            "Reshape",
            [gate, w.ints("shape_T_E", [-1, E])],
            f"node_Reshape_{i}" if opaque else f"{s}/router",
        )
        ins = [x, probs, w.weight(f"{p}.fc1", (E, fc1_rows, H))]
        ins.append(w.weight(f"{p}.fc1_bias", (E, fc1_rows)) if variant == "interleaved" else "")
        ins.append(w.weight(f"{p}.fc2", (E, H, I)))
        ins.append(w.weight(f"{p}.fc2_bias", (E, H)) if variant == "interleaved" else "")
        if fc3:
            ins += [w.weight(f"{p}.fc3", (E, I, H)), ""]
        out = w.op1(
            "MoE",
            ins,
            f"node_MoE_{i}" if opaque else s,
            domain="com.microsoft",
            activation_type=act,
            **attrs,
        )
        x = w.op1("Add", [x, out], f"node_Add_{i}" if opaque else f"/model/layers.{i}")
    model = _model(w, f"fused_{variant}", [_io("hidden", ["T", H])], [_io(x, ["T", H])], ms=True)
    rule = "sparsemixer" if variant == "sparse_mixer" else "softmax_topk"
    activation = "relu" if variant == "relu_k1" else "swiglu"
    return model, {
        "layers": 2,
        "kinds": ["moe", "moe"],
        "experts": E,
        "k": attrs["k"],
        "d_model": H,
        "d_ff": I,
        "rule": rule,
        "form": "fused-moe",
        "activation": activation,
        "bias": variant == "interleaved",
        "clamp": 7.0 if variant == "interleaved" else 0.0,
    }


def fused_qmoe(variant: str):
    """com.microsoft::QMoE: int4 per-row scales, int8 block-wise scales, or router_weights."""
    bits, block = (8, 16) if variant == "int8_block" else (4, 0)
    pack = 8 // bits
    w = _writer()
    p = "model.layers.0.moe"
    gate = w.op1(
        "MatMul", ["hidden", w.weight(f"{p}.router.weight", (H, E))], "/model/layers.0/moe/router"
    )

    def q(name: str, shape: tuple[int, ...]) -> str:
        t = TensorProto(name=name, data_type=TensorProto.UINT8, dims=list(shape))
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value="fixture.onnx.data")
        w.inits.append(t)
        return name

    scale = (lambda n, k: (E, n, k // block)) if block else (lambda n, k: (E, n))
    ins = [
        "hidden",
        gate,
        q(f"{p}.fc1.qweight", (E, 2 * I, H // pack)),
        w.weight(f"{p}.fc1.scales", scale(2 * I, H)),
        "",
        q(f"{p}.fc2.qweight", (E, H, I // pack)),
        w.weight(f"{p}.fc2.scales", scale(H, I)),
        "",
    ]
    if variant == "router_weights":
        ins += [""] * 6 + [w.op1("Sigmoid", [gate], "/model/layers.0/moe/router")]
    attrs = {
        "k": K,
        "activation_type": "swiglu",
        "swiglu_fusion": 1,
        "expert_weight_bits": bits,
        "normalize_routing_weights": 1,
    }
    if block:
        attrs["block_size"] = block
    out = w.op1("QMoE", ins, "/model/layers.0/moe", domain="com.microsoft", **attrs)
    model = _model(w, f"qmoe_{variant}", [_io("hidden", ["T", H])], [_io(out, ["T", H])], ms=True)
    rule = "sigmoid_group_topk" if variant == "router_weights" else "softmax_topk"
    return model, {
        "layers": 1,
        "kinds": ["moe"],
        "experts": E,
        "k": K,
        "d_model": H,
        "d_ff": I,
        "form": "fused-qmoe",
        "bits": bits,
        "block": block,
        "rule": rule,
    }


def opaque_names(model: onnx.ModelProto, metadata: bool) -> onnx.ModelProto:
    """A dynamo-style copy: node names `node_<Op>_<n>`, optionally torch name-scope metadata."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for n, node in enumerate(out.graph.node):
        scope = node.name.strip("/").split("/")[:-1]
        node.name = f"node_{node.op_type}_{n}"
        if metadata:
            dotted = [".".join(["m", *scope[: j + 1]]) for j in range(len(scope))]
            value = repr(["", "m", *dotted])
            node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=value)
    return out


def all_fixtures() -> dict[str, tuple[onnx.ModelProto, dict]]:
    """Every fixture by name."""
    out = {f"zoo_{k}": zoo_variant(k) for k in VARIANTS}
    model, exp = zoo_variant("qwen2_shared_gated_dense0")
    out["dynamo_metadata_layers"] = (opaque_names(model, True), exp)
    model, exp = zoo_variant("softmax_topk_renorm")
    out["graph_order_layers"] = (opaque_names(model, False), {**exp, "notes": "graph order"})
    out["p2_unrolled"] = unrolled_block()
    out["p3_grouped"] = grouped_block()
    out["p4_dense_loop"] = dense_loop_block()
    out["p4_per_expert"] = dense_loop_block(per_expert=True)
    for v in ("interleaved", "concat", "fc3", "relu_k1", "sparse_mixer"):
        out[f"fused_moe_{v}"] = fused_moe(v)
    for v in ("int4", "int8_block", "router_weights"):
        out[f"qmoe_{v}"] = fused_qmoe(v)
    for v in ("fp16_as_written", "fp32"):
        out[f"genai_decomposed_{v}"] = genai_decomposed(v)
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
    folder.mkdir(parents=True, exist_ok=True)
    for name, (model, _) in all_fixtures().items():
        (folder / f"{name}.onnx").write_bytes(model.SerializeToString())
        print(folder / f"{name}.onnx")
