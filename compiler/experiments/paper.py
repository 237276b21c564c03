"""`ndpc reproduce paper`: the evaluation of arXiv 2601.03992 (DATE 2026) re-run in ndpc.

Set-up (paper-and-peers.md §1.3-1.9): an RTX-5080-class GPU with 2-6 NDP-DIMMs (target
`rtx5080-ndp`, `--set ndp.units=N`), batch 1, 512 prompt + 512 output tokens, four MoE models
(Qwen3-30B-A3B, Mixtral-8x7B, DeepSeek-V2-Lite and Phi-3.5-MoE, our fourth pick: coarse experts
like Mixtral but 16 of them, ~80 GB of experts, far beyond the 16 GB card), calibrated synthetic
traces (one seed per model), and the real Mixtral GSM8K decode trace when ../shared/data is there.

Runs: (1) the ablation grid `monde, monde-lb, ep, tp, tp-lb, paper` and our `ndpc` at every
unit count; (2) every other
baseline and the oracle bounds at the target's default unit count; (3) a prefetch-budget sweep of
`paper`; (4) the real trace; (5) the headline at other NDP internal bandwidths; (6) the
prompt-statistics prefetchers at other prompt-to-answer drifts. `--quick` shrinks everything (tokens, models, units) for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndpc.backends.emit import DEFAULT_CONTEXT
from ndpc.backends.emit_dense import expert_budget_bytes
from ndpc.backends.target import load_target
from ndpc.compiler.experiments.runner import Case
from ndpc.compiler.experiments.workload import generate_pair
from ndpc.compiler.frontend import load_model
from ndpc.traces.format import save_trace
from ndpc.traces.importers import import_source

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"  # ../shared/data of the repo
REAL_TRACE = Path("traces") / "mixtral-8x7b-gsm8k" / "gsm8k_2_routing.jsonl"
REAL_CALIB = Path("popularity") / "mixtral-8x7b-mmlu" / "mixtral_8x7b_instruct"

ABLATION = ("monde", "monde-lb", "ep", "tp", "tp-lb", "paper", "ndpc")  # ndpc: ours, beyond
BASELINES = ("ondemand", "lru", "fiddler", "duplex", "ctxaware", "eplb", "trimoe")
ORACLES = ("oracle-cache", "oracle-profile", "oracle-opt")
SENSITIVITY = ("monde", "monde-lb", "paper")  # the headline's policies
DRIFT_POLICIES = ("paper", "ctxaware")  # prefetchers that rank experts by prompt statistics
SWEEP_PIPELINE = "tp-split,balance,prefetch{{budget-gib={b}}}"


@dataclass(frozen=True)
class Setup:
    """Everything that defines one reproduction run."""

    target: str = "rtx5080-ndp"
    models: tuple[str, ...] = ("qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v2-lite", "phi-3.5-moe")
    units: tuple[int, ...] = (2, 3, 4, 5, 6)
    default_units: int = 4
    prompt: int = 512
    output: int = 512
    seed: int = 0
    baselines: tuple[str, ...] = BASELINES + ORACLES
    # prefetch budgets as fractions of the target's GPU expert budget (1.0 = `paper`'s default)
    sweep_fractions: tuple[float, ...] = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
    sweep_models: tuple[str, ...] = ("qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v2-lite", "phi-3.5-moe")  # fmt: skip
    real_trace: bool = True
    # NDP internal bandwidths (GB/s per unit) besides the target's own, for the headline's
    # sensitivity (MoNDE, monde-lb and paper at the default unit count)
    ndp_bandwidths: tuple[float, ...] = (38.4, 51.2)
    # prompt-to-answer routing drift of the generated traces (docs/traces.md): 0.4 puts
    # Mixtral's prompt-vs-answer Jensen-Shannon divergence (0.034 bits) at the measured
    # divergence between two Mixtral prompt domains (0.031 bits, routing-statistics.md 2.1)
    answer_drift: float = 0.4
    # other drifts for the prefetchers' hit rates (`paper`, `ctxaware`, default unit count)
    drift_sweep: tuple[float, ...] = (0.0, 1.0)
    drift_models: tuple[str, ...] = ("qwen3-30b-a3b", "mixtral-8x7b")
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "extra"}


QUICK = Setup(
    models=("qwen3-30b-a3b", "mixtral-8x7b"),
    units=(2, 4),
    prompt=8,
    output=8,
    baselines=("fiddler", "ctxaware", "eplb", "oracle-profile"),
    sweep_fractions=(0.0, 1.0),
    sweep_models=("qwen3-30b-a3b",),
    real_trace=False,
    ndp_bandwidths=(38.4,),
    drift_sweep=(0.0,),
    drift_models=("qwen3-30b-a3b",),
    quick=True,
)


def _units(n: int) -> tuple[str, ...]:
    return (f"ndp.units={n}",)


def build_cases(setup: Setup, traces: dict[str, tuple[str, str]], real: tuple[str, str] | None,
                drift: dict[tuple[str, float], tuple[str, str]] | None = None) -> list[Case]:  # fmt: skip
    """Every case of the reproduction, tagged with the experiment it belongs to."""
    cases: list[Case] = []
    n = setup.default_units
    for (model, d), (trace, calib) in sorted((drift or {}).items()):
        for policy in DRIFT_POLICIES:
            tags = {"experiment": "drift", "units": n, "trace": f"synthetic-drift{d:g}",
                    "answer_drift": d}  # fmt: skip
            cases.append(Case(model, setup.target, trace, policy, _units(n), calib, tags=tags))
    for model in setup.models:
        trace, calib = traces[model]
        for n in setup.units:
            for policy in ABLATION:
                tags = {"experiment": "grid", "units": n, "trace": "synthetic"}
                cases.append(Case(model, setup.target, trace, policy, _units(n), calib, tags=tags))
        n = setup.default_units
        for policy in setup.baselines:
            tags = {"experiment": "baselines", "units": n, "trace": "synthetic"}
            cases.append(Case(model, setup.target, trace, policy, _units(n), calib, tags=tags))
        for gbps in setup.ndp_bandwidths:
            for policy in SENSITIVITY:
                tags = {"experiment": "ndp_bandwidth", "units": n, "trace": "synthetic",
                        "ndp_gbps": gbps}  # fmt: skip
                over = (*_units(n), f"ndp.internal_bandwidth_gbps={gbps}")
                cases.append(Case(model, setup.target, trace, policy, over, calib, tags=tags))
        if model in setup.sweep_models:
            full = auto_budget_gib(model, setup.target)
            for f in setup.sweep_fractions:
                b = round(f * full, 3)
                tags = {"experiment": "sweep", "units": n, "budget_gib": b, "budget_fraction": f,
                        "trace": "synthetic"}  # fmt: skip
                cases.append(Case(model, setup.target, trace, "paper", _units(n), calib,
                                  pipeline=SWEEP_PIPELINE.format(b=b), label=f"paper@{b:g}GiB",
                                  tags=tags))  # fmt: skip
    if real is not None:
        trace, calib = real
        n = setup.default_units
        for policy in ABLATION + setup.baselines:
            tags = {"experiment": "real", "units": n, "trace": "mixtral-gsm8k"}
            cases.append(Case("mixtral-8x7b", setup.target, trace, policy, _units(n), calib, tags=tags))  # fmt: skip
    return cases


def auto_budget_gib(model: str, target: str) -> float:
    """The GPU memory `paper`'s prefetcher gets by default (GiB): the target's GPU memory minus
    the model's dense weights, a 4096-token KV cache and working space (ndpc.backends.emit_dense)."""

    gpu = int(load_target(target).gpu_memory_bytes)
    return expert_budget_bytes(load_model(model), gpu, DEFAULT_CONTEXT) / float(1 << 30)


def prepare_traces(setup: Setup, out: Path) -> dict[str, tuple[str, str]]:
    """Generate each model's evaluation + calibration traces under `out`."""

    pairs = {}
    for model in setup.models:
        ev, cal = generate_pair(model, setup.prompt, setup.output, setup.seed, out,
                                setup.answer_drift)  # fmt: skip
        pairs[model] = (str(ev), str(cal))
    return pairs


def prepare_drift_traces(setup: Setup, out: Path) -> dict[tuple[str, float], tuple[str, str]]:
    """Evaluation + calibration traces of the drift sweep's models at each other drift."""
    pairs = {}
    for model in setup.drift_models:
        for d in setup.drift_sweep:
            ev, cal = generate_pair(model, setup.prompt, setup.output, setup.seed, out, d)
            pairs[(model, d)] = (str(ev), str(cal))
    return pairs


def prepare_real(out: Path, data: Path = DATA) -> tuple[str, str] | None:
    """Import the real Mixtral GSM8K trace and the MMLU popularity (Fiddler's calibration set)
    from the `data` folder; None when it is absent."""
    trace_src, calib_src = data / REAL_TRACE, data / REAL_CALIB
    if not trace_src.is_file() or not calib_src.is_dir():
        return None

    trace, _ = import_source(trace_src, k=2, model="mixtral-8x7b")
    calib, _ = import_source(calib_src, k=2, model="mixtral-8x7b")
    out.mkdir(parents=True, exist_ok=True)
    t_path, c_path = out / "mixtral-gsm8k.npz", out / "mixtral-mmlu-popularity.npz"
    save_trace(trace, t_path)
    save_trace(calib, c_path)
    return str(t_path), str(c_path)
