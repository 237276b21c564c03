"""Synthetic routing traces from a calibrated routing model (vectorised, streaming, seeded).

Router logits of token t at MoE layer l over the E experts:

    logits[t, l] = log p[d(t), l]                per-layer popularity (Dirichlet), domain d(t)
                 + affinity[l] * F[l-1](S[t, l-1])  cross-layer affinity: each expert chosen at
                                                   layer l-1 favours `fanout` experts of layer l
                                                   (a sparse layer-to-layer transition table)
                 + local_bonus[l] * A[t, l]        temporal locality: per-layer "anchor" experts
                                                   that persist to the next token w.p. local_stay
                 + Gumbel noise

S[t, l], the top-k of the noisy logits, is the selection (Gumbel-top-k = sampling k experts
without replacement from softmax(logits), drawn exactly but in O(k) per token by the algorithm
of traces/sampling.py, run as the compiled per-token kernel traces/generate_kernel.py); layers
are drawn in order, all tokens of a block at once. Weights are softmax(noisy logits / temperature) at the chosen experts, renormalised over the
k when the preset says so. Domains switch at `drift_at` of each request (domain drift); with
`answer_drift` > 0 the answer (decode) tokens route by their domain's popularity further perturbed
(log-normal, std `answer_drift`), so prompt and answer statistics differ (prompt-to-answer drift).
Layer-dependent parameters are profiles over relative depth (first, middle, last layer), so
presets transfer to any model shape.

Presets (`PRESETS`) are calibrated to the measured statistics in
shared/research/routing-statistics.md; `Preset.targets` holds each calibration target and its
tolerance, and tests/traces/test_generate.py checks the generator lands within them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from math import gamma
from typing import Any

import numpy as np

from ndpc.traces.format import concat_traces
from ndpc.traces.generate_kernel import topk_kernel
from ndpc.traces.sampling import BaseTables
from ndpc.traces.types import Trace, TraceMeta, experts_dtype

Profile = tuple[float, float, float]  # value at the first, middle and last MoE layer


@dataclass(frozen=True)
class Target:
    """One calibration target: a statistic of `ndpc trace stats`, its value and tolerance."""

    stat: str  # "<summary key>.<field>" or "layer<i>.<key>" (i may be negative) or "top16_share"
    value: float
    tol: float
    source: str


@dataclass(frozen=True)
class Preset:
    """Generator parameters plus the measurement they are calibrated against."""

    name: str
    doc: str
    alpha: Profile  # Dirichlet concentration of per-layer popularity (smaller = more skewed)
    affinity: Profile  # logit bonus at layer l+1 of the experts favoured by layer l's choices
    local_bonus: Profile  # logit bonus of the sticky anchor experts (temporal locality)
    local_stay: float  # P(anchors persist to the next token)
    fanout: float = 0.5  # experts each chosen expert favours at the next layer, multiple of k
    affinity_decay: float = 1.0  # the j-th best choice favours with affinity * decay**j
    local_width: float = 1.0  # anchor experts per layer, as a multiple of k
    temperature: float = 1.0  # softmax temperature of the routing weights
    renormalize: bool = True  # weights renormalised over the k selected
    domains: int = 4
    domain_shift: float = 0.2  # std of per-domain log-popularity perturbation
    drift_at: float = 0.5  # fraction of each request after which its domain changes (0 = never)
    # prompt-to-answer drift: std of an extra log-popularity perturbation of the answer (decode)
    # tokens, on top of their domain's (0 = the answer routes like its domain)
    answer_drift: float = 0.0
    reference: dict[str, int] = field(default_factory=dict)  # shape + sample the targets refer to
    targets: tuple[Target, ...] = ()


_SRC = "shared/research/routing-statistics.md"

PRESETS: dict[str, Preset] = {
    "coarse": Preset(
        name="coarse",
        doc="Mixtral-like: few coarse experts, top-2, moderate locality and cross-layer affinity",
        alpha=(23.0, 18.8, 29.0),
        affinity=(1.6, 1.7, 2.1),
        local_bonus=(0.29, 3.9, 0.7),
        local_stay=0.78,
        fanout=0.5,
        affinity_decay=1.0,
        local_width=0.5,
        temperature=1.25,
        renormalize=True,
        domain_shift=0.15,
        reference={"layers": 32, "experts": 8, "k": 2, "tokens": 160, "prompt": 0, "requests": 4},
        targets=(
            Target("max_mean.mean", 1.35, 0.12, f"{_SRC} §2.1 (585 decode tokens)"),
            Target("gini.mean", 0.12, 0.04, f"{_SRC} §2.1"),
            Target("overlap.mean", 0.38, 0.04, f"{_SRC} §2.1"),
            Target("p_any.mean", 0.62, 0.06, f"{_SRC} §2.1"),
            Target("top1_repeat.mean", 0.25, 0.05, f"{_SRC} §2.1"),
            Target("layer0.overlap", 0.26, 0.05, f"{_SRC} §2.1 (layer 0 near random)"),
            Target("next_top1_acc.mean", 0.25, 0.06, f"{_SRC} §2.1 (held-out 25.2 %)"),
            Target("next_set_recall.mean", 0.36, 0.06, f"{_SRC} §2.1 (held-out 36.2 %)"),
            Target("top1_weight.mean", 0.71, 0.05, f"{_SRC} §2.1 (renormalised top-1)"),
        ),
    ),
    "fine-shared": Preset(
        name="fine-shared",
        doc="FLAME-MoE/DeepSeek-like: many fine experts + shared experts; no temporal locality, "
        "strong cross-layer affinity, flat un-renormalised router",
        alpha=(15.9, 20.3, 8.7),
        affinity=(5.0, 3.85, 5.0),
        local_bonus=(0.0, 0.0, 0.0),
        local_stay=0.0,
        fanout=0.34,
        affinity_decay=0.66,
        temperature=1.8,
        renormalize=False,
        domain_shift=0.077,
        reference={
            "layers": 8,
            "experts": 64,
            "k": 6,
            "tokens": 2048,
            "prompt": 2048,
            "requests": 1,
        },
        targets=(
            Target("max_mean.mean", 1.525, 0.15, f"{_SRC} §2.2 (2048 tokens)"),
            Target("gini.mean", 0.115, 0.03, f"{_SRC} §2.2"),
            Target("overlap.mean", 0.106, 0.02, f"{_SRC} §2.2 (random 0.094)"),
            Target("top1_repeat.mean", 0.025, 0.015, f"{_SRC} §2.2"),
            Target("next_set_recall.mean", 0.37, 0.07, f"{_SRC} §2.2 (2-fold, static 0.11)"),
            Target(
                "top1_weight.mean", 0.151, 0.05, f"{_SRC} §2.2 (softmax prob, not renormalised)"
            ),
        ),
    ),
    "fine": Preset(
        name="fine",
        doc="Qwen3/OLMoE-like: many fine experts, no shared experts; strong locality in middle "
        "layers, concentrated popularity",
        alpha=(3.0, 0.22, 0.35),
        affinity=(2.86, 0.77, 0.46),
        local_bonus=(0.0, 25.0, 0.3),
        local_stay=0.55,
        fanout=0.5,
        local_width=1.7,
        temperature=1.0,
        renormalize=True,
        domain_shift=0.08,
        reference={"layers": 48, "experts": 128, "k": 8, "tokens": 400, "prompt": 0, "requests": 8},
        targets=(
            Target("overlap.mean", 0.43, 0.05, "moe-trace findings (§3), 3,225 decode tokens"),
            Target("layer0.overlap", 0.08, 0.04, "moe-trace: layer 0 = 7.9 %"),
            Target("overlap.max", 0.58, 0.06, "moe-trace: layers 6/7/18/31 = 55-60 %"),
            Target("layer-1.overlap", 0.206, 0.07, "moe-trace: layer 47 = 20.6 %"),
            Target("top16_share", 0.585, 0.08, "moe-trace: top-16-of-128 share 54.5-62 %"),
            Target("entropy.mean", 0.715, 0.1, "moe-trace: normalised entropy 62-81 %"),
        ),
    ),
}


def choose_preset(experts: int, shared_experts: int = 0) -> str:
    """The preset that fits a model: coarse for <= 16 experts, else fine(-shared)."""
    if experts <= 16:
        return "coarse"
    return "fine-shared" if shared_experts > 0 else "fine"


def _profile(p: Profile, layers: int) -> np.ndarray:
    x = np.linspace(0.0, 1.0, layers) if layers > 1 else np.zeros(1)
    return np.interp(x, [0.0, 0.5, 1.0], p)


@dataclass(frozen=True)
class _World:
    """Static structure drawn once per seed: popularity, layer transitions, domains, profiles."""

    tables: BaseTables  # base distribution of (domain d, layer l) in row d * L + l
    guide: np.ndarray  # [R, E]: first expert of row r whose CDF exceeds b / E (see _guide)
    q_pow: np.ndarray  # tables.q ** (1 / temperature)
    transitions: np.ndarray  # [L-1, E, f]: experts of layer l+1 that expert e of layer l favours
    affinity: np.ndarray  # [L] bonus of favoured experts (layer 0 unused)
    local_bonus: np.ndarray  # [L]
    domain: np.ndarray  # [requests, 2] domain of each request's two segments
    answer_rows: bool  # rows D*L.. hold the answer-drifted tables (domain d -> row block D + d)


def _world(p: Preset, layers: int, experts: int, k: int, requests: int, seed: int) -> _World:
    rng = np.random.default_rng([seed, 0])
    alpha = _profile(p.alpha, layers)
    base = np.stack([rng.dirichlet(np.full(experts, a)) for a in alpha])  # [L, E]
    log_base = np.log(np.maximum(base, 1e-12))
    shift = rng.standard_normal((p.domains, layers, experts)) * p.domain_shift
    pop = np.exp(log_base[None] + shift).reshape(p.domains * layers, experts)
    if p.answer_drift > 0:  # own stream: traces without drift stay byte-identical
        drift = np.random.default_rng([seed, 2]).standard_normal(shift.shape) * p.answer_drift
        answer = np.exp(log_base[None] + shift + drift).reshape(p.domains * layers, experts)
        pop = np.concatenate([pop, answer])
    fanout = max(1, min(experts, round(p.fanout * k)))
    # f random permutations per layer pair: every expert is favoured by exactly f experts, so the
    # transitions add structure without adding popularity skew
    transitions = (
        np.stack(
            [
                np.stack([rng.permutation(experts) for _ in range(fanout)], axis=1)
                for _ in range(layers - 1)
            ]
        )
        if layers > 1
        else np.zeros((0, experts, fanout), np.int64)
    )
    first = rng.integers(p.domains, size=requests)
    shift_by = 1 + rng.integers(max(p.domains - 1, 1), size=requests)  # drift: a different domain
    domain = np.stack([first, (first + shift_by) % p.domains], axis=1)
    tables = BaseTables.build(pop, p.temperature)
    return _World(
        tables,
        _guide(tables),
        tables.q ** (1.0 / p.temperature),
        transitions,
        _profile(p.affinity, layers).astype(np.float32),
        _profile(p.local_bonus, layers).astype(np.float32),
        domain,
        p.answer_drift > 0,
    )


def _guide(tables: BaseTables) -> np.ndarray:
    """Guide table for the inverse-CDF draws: row r, bucket b -> the first expert whose CDF
    exceeds b / E (a linear scan from the bucket of u - 1/E finds the expert in O(1) expected
    steps, with the same result as a binary search)."""
    R, E = tables.q.shape
    marks = np.arange(R)[:, None] + np.arange(E)[None, :] / E
    idx = np.searchsorted(tables.cdf_flat, marks.ravel(), side="right").reshape(R, E)
    return np.minimum(idx - np.arange(R)[:, None] * E, E - 1).astype(np.int64)


def _block_tokens(layers: int, experts: int) -> int:
    """Tokens per generation block: a function of the shape only, so output is chunking-free
    (memory per block is O(tokens * layers * k), never * experts)."""
    return int(max(256, min(4096, (1 << 20) // max(layers, 1))))


def _sticky(fresh: np.ndarray, stay: np.ndarray, carry: np.ndarray | None) -> np.ndarray:
    """Resolve sticky chains along axis 0: row t keeps row t-1's value where stay[t]."""
    if carry is not None:
        fresh = np.concatenate([carry[None], fresh])
        stay = np.concatenate([np.zeros((1, *stay.shape[1:]), bool), stay])
    rows = np.arange(len(fresh)).reshape(-1, *([1] * (stay.ndim - 1)))
    src = np.maximum.accumulate(np.where(stay, 0, rows), axis=0)
    out = np.take_along_axis(
        fresh, src.reshape(src.shape + (1,) * (fresh.ndim - stay.ndim)), axis=0
    )
    return out[1:] if carry is not None else out


def iter_generate(
    layers: int,
    experts: int,
    k: int,
    tokens: int,
    prompt: int,
    seed: int,
    requests: int = 1,
    preset: str | Preset = "auto",
    model: str = "",
    shared_experts: int = 0,
) -> Iterator[Trace]:
    """Generate the trace as a stream of chunks (bounded memory); see `generate_trace`."""
    p = _resolve(preset, experts, shared_experts)
    _check_args(layers, experts, k, tokens, prompt, requests, p)
    meta = _meta(p, layers, experts, k, tokens, prompt, seed, requests, model)
    world = _world(p, layers, experts, k, requests, seed)
    total, block = tokens * requests, _block_tokens(layers, experts)
    state: dict[str, np.ndarray] = {}
    for b, start in enumerate(range(0, total, block)):
        g = np.arange(start, min(start + block, total))
        yield _gen_block(
            p, world, meta, g, tokens, prompt, np.random.default_rng([seed, 1, b]), state
        )


def generate_trace(
    layers: int,
    experts: int,
    k: int,
    tokens: int,
    prompt: int,
    seed: int,
    requests: int = 1,
    preset: str | Preset = "auto",
    model: str = "",
    shared_experts: int = 0,
) -> Trace:
    """A synthetic trace of `requests` requests of `tokens` tokens each, the first `prompt` prefill.

    `preset` is a name in PRESETS, a Preset, or "auto" (chosen from experts/shared_experts).
    Deterministic for a seed; independent of how the caller chunks it.
    """

    chunks = list(
        iter_generate(
            layers, experts, k, tokens, prompt, seed, requests, preset, model, shared_experts
        )
    )
    return concat_traces(chunks)


ARRIVALS = ("poisson", "fixed")


def request_lengths(requests: int, prompt: tuple[int, int], tokens: tuple[int, int],
                    seed: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per request: prompt tokens drawn uniformly from `prompt` = (lo, hi) and tokens (prompt
    included) from `tokens`, raised to at least the prompt; returns (prompts, decode tokens)."""
    for name, (lo, hi) in (("prompt", prompt), ("tokens", tokens)):
        if not 0 <= lo <= hi:
            raise ValueError(f"{name} range {lo}:{hi} must have 0 <= low <= high")
    if tokens[1] < 1:
        raise ValueError("tokens must be >= 1")
    rng = np.random.default_rng([seed, 3])
    prompts = rng.integers(prompt[0], prompt[1] + 1, size=requests)
    total = np.maximum(rng.integers(max(tokens[0], 1), tokens[1] + 1, size=requests), prompts)
    total = np.maximum(total, 1)
    return prompts, total - prompts


def select_lengths(chunks: Iterator[Trace], tokens: int, prompt: int, prompts: np.ndarray,
                   decodes: np.ndarray) -> Iterator[Trace]:  # fmt: skip
    """Cut a trace generated with `tokens` per request (`prompt` of them prefill) down to each
    request's own lengths: its first `prompts[r]` prompt rows and first `decodes[r]` decode rows
    (the routing model is the same for every request; shorter ones simply stop earlier)."""
    start = 0
    for chunk in chunks:
        g = np.arange(start, start + chunk.tokens)
        start += chunk.tokens
        r, pos = g // tokens, g % tokens
        keep = (pos < prompts[r]) | ((pos >= prompt) & (pos < prompt + decodes[r]))
        if keep.any():
            yield chunk if keep.all() else Trace(chunk.meta, chunk.experts[keep],
                                                 chunk.weights[keep], chunk.phase[keep],
                                                 chunk.request[keep])  # fmt: skip


def arrival_times(
    requests: int, rate: float, seed: int, kind: str = "poisson"
) -> tuple[float, ...]:
    """Arrival times (s) of `requests` requests at `rate` per second: the first at 0, then
    exponential gaps (a Poisson process) or equal gaps of 1/rate (`fixed`). Deterministic."""
    if not rate > 0 or not np.isfinite(rate):
        raise ValueError(f"arrival rate must be a positive number of requests/s, got {rate}")
    if kind not in ARRIVALS:
        raise ValueError(f"unknown arrival process {kind!r}; choose from {', '.join(ARRIVALS)}")
    if kind == "fixed":
        gaps = np.full(max(requests - 1, 0), 1.0 / rate)
    else:
        gaps = np.random.default_rng([seed, 2]).exponential(1.0 / rate, max(requests - 1, 0))
    return tuple(float(t) for t in np.concatenate([[0.0], np.cumsum(gaps)])[:requests])


def _resolve(preset: str | Preset, experts: int, shared_experts: int) -> Preset:
    if isinstance(preset, Preset):
        p = preset
    else:
        name = choose_preset(experts, shared_experts) if preset in ("auto", "", None) else preset
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)} or auto")
        p = PRESETS[name]
    if min(*p.affinity, *p.local_bonus) < 0 or p.temperature <= 0:
        raise ValueError(f"preset {p.name}: bonuses must be >= 0 and temperature > 0")
    if not 0 <= p.answer_drift < float("inf"):
        raise ValueError(f"preset {p.name}: answer_drift must be a finite number >= 0")
    if not p.renormalize and p.temperature <= 1:
        raise ValueError(f"preset {p.name}: un-renormalised weights need temperature > 1")
    return p


def _check_args(
    layers: int, experts: int, k: int, tokens: int, prompt: int, requests: int, p: Preset
) -> None:
    if layers < 1 or experts < 1 or not 1 <= k <= experts:
        raise ValueError(
            f"need layers >= 1, experts >= 1 and 1 <= k <= experts (got {layers}, {experts}, {k})"
        )
    if tokens < 1 or requests < 1 or not 0 <= prompt <= tokens:
        raise ValueError(
            f"need tokens >= 1, requests >= 1 and 0 <= prompt <= tokens (got {tokens}, {requests}, {prompt})"
        )


def _meta(
    p: Preset,
    layers: int,
    experts: int,
    k: int,
    tokens: int,
    prompt: int,
    seed: int,
    requests: int,
    model: str,
) -> TraceMeta:
    params = {key: v for key, v in asdict(p).items() if key not in ("targets", "reference", "doc")}
    if not p.answer_drift:
        del params["answer_drift"]  # traces without drift keep their old header, byte for byte
    params.update(tokens_per_request=tokens, prompt=prompt, requests=requests)
    return TraceMeta(model, layers, experts, k, "synthetic", f"ndpc-gen/{p.name}", seed, params)


def _gen_block(
    p: Preset,
    w: _World,
    meta: TraceMeta,
    g: np.ndarray,
    tokens: int,
    prompt: int,
    rng: np.random.Generator,
    state: dict[str, np.ndarray],
) -> Trace:
    L, E, k = meta.layers, meta.experts, meta.k
    n = len(g)
    req, pos = g // tokens, g % tokens
    starts = pos == 0  # chains restart at each request
    seg = (
        (pos >= int(tokens * p.drift_at)).astype(np.int64)
        if 0 < p.drift_at < 1
        else np.zeros(n, np.int64)
    )
    dom = w.domain[req, seg]
    if w.answer_rows:
        dom = np.where(pos >= prompt, dom + p.domains, dom)
    anchors = _anchors(p, w, meta, rng, starts, dom, state) if w.local_bonus.any() else None
    experts = np.empty((n, L, k), dtype=np.int64)
    weights = np.empty((n, L, k), dtype=np.float32)
    for l in range(L):  # in layer order: layer l's choice sets layer l+1's affinity bonus
        prev = experts[:, l - 1] if l and w.affinity[l] > 0 else None
        lay = anchors[:, l] if anchors is not None and w.local_bonus[l] > 0 else None
        cols = _bonus_columns(p, w, l, lay, prev, k)
        _sample(rng, w, dom * L + l, k, p.renormalize, *cols, out=(experts[:, l], weights[:, l]))
    phase = (pos >= prompt).astype(np.uint8)
    return Trace(meta, experts.astype(experts_dtype(E)), weights, phase, req.astype(np.int32))


_NO_IDS = np.zeros((0, 0), np.int64)


def _bonus_columns(
    p: Preset, w: _World, l: int, anchors: np.ndarray | None, prev: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Layer l's logit bonuses as the kernel takes them: anchor ids [n, a], previous choices
    [n, kp], transition table [E, f], each column's source (col_j, col_t) and value, columns
    ordered largest value first (stable).

    Column c < a is anchor c (value local_bonus[l]); column a + j * f + t is what the j-th best
    previous choice favours through transition t (value affinity[l] * affinity_decay**j).
    """
    vals = []
    if anchors is not None:
        vals.append(np.full(anchors.shape[1], w.local_bonus[l], dtype=np.float64))
    else:
        anchors = _NO_IDS
    if prev is not None:
        trans = w.transitions[l - 1]
        decay = w.affinity[l] * p.affinity_decay ** np.arange(k, dtype=np.float64)
        vals.append(np.repeat(decay, trans.shape[1]))
    else:
        prev, trans = _NO_IDS, np.zeros((w.tables.q.shape[1], 1), np.int64)
    all_vals = np.concatenate(vals) if vals else np.zeros(0)
    order = np.argsort(-all_vals, kind="stable")
    a, f = anchors.shape[1], trans.shape[1]
    col_j = np.where(order < a, -1, (order - a) // f)
    col_t = np.where(order < a, order, (order - a) % f)
    return (
        np.ascontiguousarray(anchors, dtype=np.int64),
        prev if prev.dtype == np.int64 else prev.astype(np.int64),
        np.ascontiguousarray(trans, dtype=np.int64),
        col_j.astype(np.int64),
        col_t.astype(np.int64),
        all_vals[order],
    )


def _sample(
    rng: np.random.Generator,
    w: _World,
    rows: np.ndarray,
    k: int,
    renormalize: bool,
    anchors: np.ndarray = _NO_IDS,
    prev: np.ndarray = _NO_IDS,
    trans: np.ndarray | None = None,
    col_j: np.ndarray | None = None,
    col_t: np.ndarray | None = None,
    vals: np.ndarray | None = None,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k experts per token (best first) and their weights, drawn by the compiled kernel.

    Random numbers: per draw j, n uniforms then n standard exponentials (sample_topk's order).
    `out`: (experts, weights) views [n, k] to write into (e.g. one layer of the block's arrays).
    """
    n = len(rows)
    if vals is None:
        trans, vals = np.zeros((w.tables.q.shape[1], 1), np.int64), np.zeros(0)
        col_j = col_t = np.zeros(0, np.int64)
    if anchors.shape[0] != n:
        anchors = np.zeros((n, anchors.shape[1]), np.int64)
    if prev.shape[0] != n:
        prev = np.zeros((n, prev.shape[1]), np.int64)
    # the kernel does not check bounds: check the shapes it indexes by
    a, kp, f = anchors.shape[1], prev.shape[1], trans.shape[1]
    if not (
        len(col_j) == len(col_t) == len(vals)
        and np.all(np.where(col_j < 0, col_t < a, (col_j < kp) & (col_t < f)))
        and trans.shape[0] == w.tables.q.shape[1]
        and (n == 0 or 0 <= rows.min() <= rows.max() < len(w.tables.q))
    ):
        raise ValueError("generator kernel: inconsistent bonus columns or table rows")
    U, X = np.empty((k, n)), np.empty((k, n))
    for j in range(k):
        rng.random(out=U[j])
        rng.standard_exponential(out=X[j])
    inv = 1.0 / w.tables.temperature
    experts, weights = out or (np.empty((n, k), np.int64), np.empty((n, k), np.float32))
    if experts.shape != (n, k) or weights.shape != (n, k):
        raise ValueError("generator kernel: output arrays of the wrong shape")
    topk_kernel(
        np.ascontiguousarray(rows, dtype=np.int64),
        w.tables.cdf_flat,
        w.guide,
        w.tables.q,
        w.tables.q_pow_sum,
        w.q_pow,
        anchors,
        prev,
        trans,
        col_j,
        col_t,
        np.expm1(vals),
        np.expm1(vals * inv),
        np.exp(vals),
        np.exp(vals * inv),
        U,
        X,
        inv,
        gamma(1.0 - inv) if inv < 1 else 0.0,
        renormalize,
        experts,
        weights,
    )
    return experts, weights


def _anchors(
    p: Preset,
    w: _World,
    meta: TraceMeta,
    rng: np.random.Generator,
    starts: np.ndarray,
    dom: np.ndarray,
    state: dict[str, np.ndarray],
) -> np.ndarray:
    """Per-layer anchor experts [n, L, w], drawn from the popularity, kept w.p. local_stay."""
    L, E, k = meta.layers, meta.experts, meta.k
    n = len(starts)
    width = max(1, min(E, round(p.local_width * k)))
    rows = (dom[:, None] * L + np.arange(L)[None, :]).ravel()
    fresh = _sample(rng, w, rows, width, True)[0].reshape(n, L, width)
    stay = (rng.random((n, L)) < p.local_stay) & ~starts[:, None]
    anchors = _sticky(fresh, stay, state.get("anchors"))
    state["anchors"] = anchors[-1]
    return anchors


def preset_table() -> list[dict[str, Any]]:
    """Presets with their docs, reference shapes and targets (for `ndpc trace gen --list-presets`)."""
    return [
        {
            "name": p.name,
            "doc": p.doc,
            "reference": p.reference,
            "targets": [asdict(t) for t in p.targets],
        }
        for p in PRESETS.values()
    ]


def with_overrides(preset: Preset, **changes: Any) -> Preset:
    """A copy of `preset` with some parameters changed (e.g. for sweeps)."""
    return replace(preset, **changes)
