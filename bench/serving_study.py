"""The serving study of docs/results.md (issue 13 §6-7): writes docs/results/serving/.

1. Load curves: Mixtral-8x7B and Qwen3-30B-A3B on rtx5080-ndp (4 NDP units), each policy, Poisson
   arrivals at several rates, --max-batch 8: TTFT/TPOT p99 and throughput against offered load.
2. Batch scan: the same requests all arriving at once, --max-batch 1, 4, 8, 16.
3. Prefetch budget under load: Qwen3, `paper` with prefetch{budget-gib=B}, 16 requests with
   4096-token prompts arriving at once (--max-batch 16, chunked prefill, 8192-token budget), so
   the KV cache grows to ~6.5 GB and takes GPU memory from prefetched experts.

    python bench/serving_study.py [--out docs/results/serving] [--jobs 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ndpc.backends.serving import ServingConfig
from ndpc.compiler.experiments.runner import Case, run_cases
from ndpc.compiler.experiments.serving import load_cases, load_plot, serving_row, serving_trace
from ndpc.compiler.policies import POLICIES

POLICIES_STUDIED = ("monde", "duplex", "ctxaware", "tp", "trimoe", "paper", "ndpc")
MODELS = {  # model: (requests, prompt, output, rates)
    "mixtral-8x7b": (16, 128, 48, (0.25, 0.5, 1.0, 2.0, 4.0)),
    "qwen3-30b-a3b": (16, 128, 48, (0.5, 1.0, 2.0, 4.0, 8.0)),
}
BATCHES = (1, 4, 8, 16)
BUDGETS_GIB = (0.0, 1.5, 3.0, 6.0, 9.0, 12.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/serving")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="Fewer requests (a smoke run).")
    ap.add_argument("--parts", default="load,batch,budget")
    ap.add_argument("--markdown", action="store_true", help="Print tables of an existing study.")
    a = ap.parse_args()
    out = Path(a.out)
    if a.markdown:
        print(markdown(json.loads((out / "study.json").read_text())))
        return
    out.mkdir(parents=True, exist_ok=True)
    parts = set(a.parts.split(","))
    doc: dict = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model, (n, prompt, output, rates) in MODELS.items():
            if a.quick:
                n, output = 8, 16
            if "load" in parts:
                traces = {r: serving_trace(model, n, prompt, output, r, 0, tmp / f"{model}-{r}.npz")
                          for r in rates}  # fmt: skip
                cases = load_cases(model, POLICIES_STUDIED, rates, traces, ServingConfig(8))
                rows = [serving_row(r) for r in run_cases(cases, a.jobs)]
                doc.setdefault("load", {})[model] = rows
                load_plot([r for r in rows if "error" not in r],
                          f"{model}, rtx5080-ndp, 4 units, max-batch 8", out / f"load-{model}.png")  # fmt: skip
                print(f"load {model}: {len(rows)} runs, {time.time() - t0:.0f} s", flush=True)
            if "batch" in parts:
                burst = serving_trace(model, n, prompt, output, 1000.0, 0, tmp / f"{model}-b.npz",
                                      arrival="fixed")  # fmt: skip
                cases = [Case(model, "rtx5080-ndp", burst, p, serving=ServingConfig(b),
                              tags={"max_batch": b, "arrival_rate": 1000.0})
                         for b in BATCHES for p in POLICIES_STUDIED]  # fmt: skip
                rows = [serving_row(r) for r in run_cases(cases, a.jobs)]
                doc.setdefault("batch", {})[model] = rows
                load_plot([r for r in rows if "error" not in r],
                          f"{model}: {n} requests at once", out / f"batch-{model}.png",
                          x="max_batch", xlabel="--max-batch")  # fmt: skip
                print(f"batch {model}: {len(rows)} runs, {time.time() - t0:.0f} s", flush=True)
        if "budget" in parts:
            model = "qwen3-30b-a3b"
            n, prompt, output = (4, 1024, 8) if a.quick else (16, 4096, 32)
            burst = serving_trace(model, n, prompt, output, 1000.0, 0, tmp / "budget.npz",
                                  arrival="fixed")  # fmt: skip
            pipe = POLICIES["paper"].pipeline.replace("prefetch", "prefetch{{budget-gib={b}}}")
            cases = [Case(model, "rtx5080-ndp", burst, "paper", pipeline=pipe.format(b=b),
                          label=f"paper@{b} {mem}", serving=ServingConfig(n, 8192, True, mem),
                          tags={"budget_gib": b, "memory": mem})
                     for mem in ("kv-first", "static") for b in BUDGETS_GIB]  # fmt: skip
            single = serving_trace(model, 1, prompt, output, 1.0, 0, tmp / "budget1.npz")
            cases += [Case(model, "rtx5080-ndp", single, "paper", pipeline=pipe.format(b=b),
                           label=f"paper@{b} 1 request", serving=ServingConfig(1),
                           tags={"budget_gib": b, "max_batch": 1})
                      for b in BUDGETS_GIB]  # fmt: skip
            rows = [serving_row(r) for r in run_cases(cases, a.jobs)]
            doc["budget"] = rows
            print(f"budget: {len(rows)} runs, {time.time() - t0:.0f} s", flush=True)
    path = out / ("study-quick.json" if a.quick else "study.json")
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(doc)
    path.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path} in {time.time() - t0:.0f} s")


def markdown(doc: dict) -> str:
    """Tables of a study for docs/results.md."""
    lines = []
    for part, x, label in (("load", "arrival_rate", "req/s"), ("batch", "max_batch", "max-batch")):
        for model, rows in doc.get(part, {}).items():
            xs = sorted({r[x] for r in rows})
            names = list(dict.fromkeys(r["name"] for r in rows))
            lines.append(f"\n{part} {model}: throughput tok/s | TTFT p99 s | TPOT p99 s\n")
            lines.append("| policy | " + " | ".join(f"{v:g} {label}" for v in xs) + " |")
            lines.append("|---|" + "---|" * len(xs))
            for name in names:
                cells = []
                for v in xs:
                    r = next((r for r in rows if r["name"] == name and r[x] == v), None)
                    if r is None or "error" in r:
                        cells.append("n/a")
                    else:
                        cells.append(
                            f"{r['throughput_tok_s']:.1f} / {r['ttft_p99_s']:.2f} / "
                            f"{r['tpot_p99_s'] * 1e3:.0f} ms"
                        )
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "budget" in doc:
        lines.append(
            "\nbudget sweep: tok/s | TTFT p99 | TPOT p99 | e2e p99 | evictions | peak KV GiB | "
            "least expert budget GiB | most sequences per iteration"
        )
        for r in doc["budget"]:
            if "error" in r:
                lines.append(f"| {r['name']} | n/a: {r['error']} |")
                continue
            lines.append(
                f"| {r['name']} | {r['throughput_tok_s']:.2f} | {r['ttft_p99_s']:.3f} | "
                f"{r['tpot_p99_s'] * 1e3:.1f} ms | {r['e2e_p99_s']:.3f} | "
                f"{r['emit'].get('evictions', 0)} | {r.get('kv_peak_bytes', 0) / 2**30:.2f} | "
                f"{r.get('expert_budget_min_bytes', 0) / 2**30:.2f} | {r.get('batch_max')} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
