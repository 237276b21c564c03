"""Decomposed MoE blocks (patterns P1-P4 and the onnxruntime-genai decomposed form).

Experts are never separate nodes in transformers 5.x exports: an expert is a slice along axis 0 of
a stacked [E, N, K] initializer. Given a router, the block's expert weights are the rank-3
constants with E rows used inside the layer; their shapes give d_ff and whether the activation is
gated. Which of the forms it is only changes the `form` label:

- `gather-bmm` (P1): Gather/GatherND of the stacked weights by the router indices + batched MatMul
  (torch batched_mm with both exporters; the genai builder's decomposed path);
- `unrolled` (P2): OneHot/NonZero per-expert branches of a TorchScript trace of the eager loop;
- `grouped` (P3): an argsort TopK (largest=0), a Split of the weights into E slices, one MatMul each;
- `dense-loop` (P4): every expert runs on every token, masked by Equal(selected, e);
- `per-expert`: separate 2-D weights per expert in scopes `experts.<e>` (pre-5.x / mobius).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ndpc.compiler.frontend.graph import OnnxGraph
from ndpc.compiler.frontend.mlp import activation_of, clamp_of, ffn_from_down, matmul_weight
from ndpc.compiler.frontend.router import RouterMatch
from ndpc.compiler.frontend.spec import MoeSpec
from ndpc.ir.attrs import FfnAttr
from ndpc.ir.diagnostics import NdpcError
from ndpc.ir.types import DType

_EXPERT_SCOPE = re.compile(r"experts[./_](\d+)(?=$|[./_])")
_PASS = {"Reshape", "Cast", "Identity", "Flatten", "Unsqueeze", "Squeeze"}


@dataclass
class BlockMatch:
    """A decomposed MoE block: its spec, the nodes that mattered and what was inferred."""

    spec: MoeSpec
    experts_loc: str
    shared_loc: str = ""
    notes: list[str] = field(default_factory=list)


def match_block(g: OnnxGraph, r: RouterMatch, nodes: set[int], scoped: bool) -> BlockMatch:
    """The MoE block around router `r`, searched within `nodes` (the layer's nodes)."""
    anchor = g.nodes[r.anchor]
    where = f"{g.path}: router '{anchor.name}' ({anchor.op_type})"
    route_users = g.forward_closure(list(r.indices), allowed=nodes)
    stacked = _stacked_weights(g, r, nodes, route_users, scoped, where)
    notes: list[str] = []
    if stacked:
        ffn, users = _stacked_ffn(g, r, stacked, nodes, route_users, where)
        form = _form(g, nodes, route_users, users)
        if form == "unrolled":
            present = _unrolled_experts(g, stacked)
            notes.append(
                f"{anchor.name}: TorchScript trace of the eager expert loop: only "
                f"{present} of {r.experts} experts were unrolled at trace time; the "
                "graph is only valid for inputs routed like the export input"
            )
        loc = g.nodes[min(users)].name
    else:
        ffn, loc = _per_expert_ffn(g, r, nodes, where)
        form = "per-expert"
    shared = shared_experts(g, r.hidden, r.gemm, nodes, route_users, ffn)
    spec = MoeSpec(
        experts=r.experts,
        router=r.router,
        ffn=ffn,
        form=form,
        shared_count=shared[0],
        shared_ffn=shared[1],
        shared_gated=shared[2],
    )
    return BlockMatch(spec, loc, shared[3], notes)


def _stacked_weights(g, r, nodes, route_users, scoped, where) -> dict[str, list[int]]:
    """Rank-3 weight constants used after the gate (they must have E rows) -> their users."""
    out: dict[str, list[int]] = {}
    for i in sorted(nodes):
        for inp in g.nodes[i].input:
            c = g.consts.get(inp)
            if c is None or len(c.dims) != 3 or c.dtype in (None, DType.I32) or i < r.gemm:
                continue  # attention constants come before the gate; shapes are int64
            if not scoped and not _near(g, i, route_users):
                continue
            if c.dims[0] != r.experts:
                raise NdpcError(
                    f"{where}: inconsistent shapes: router gate '{r.weight}' scores "
                    f"{r.experts} experts but expert weight '{c.name}' "
                    f"{list(c.dims)} (used by '{g.nodes[i].name}') has {c.dims[0]}"
                )
            out.setdefault(c.name, []).append(i)
    return out


def _near(g: OnnxGraph, i: int, targets: set[int], hops: int = 3) -> bool:
    frontier = {i}
    for _ in range(hops + 1):
        if frontier & targets:
            return True
        frontier = {j for f in frontier for o in g.nodes[f].output for j in g.consumers.get(o, ())}
    return False


def _stacked_ffn(g, r, stacked, nodes, route_users, where) -> tuple[FfnAttr, list[int]]:
    h = r.d_model
    widths = []
    for name in stacked:
        dims = g.consts[name].dims[1:]
        if len(dims) != 2 or h not in dims:
            raise NdpcError(
                f"{where}: inconsistent shapes: expert weight '{name}' "
                f"{list(g.consts[name].dims)} has no d_model={h} axis (gate is "
                f"'{r.weight}')"
            )
        widths.append(dims[0] if dims[1] == h else dims[1])
    gated, d_ff = _gating(widths, where, list(stacked))
    users = sorted({i for v in stacked.values() for i in v})
    region = route_users | g.forward_closure(
        [o for i in users for o in g.nodes[i].output], allowed=nodes
    )
    bias = any(
        len(c.dims) == 2 and c.dims[0] == r.experts and c.name != r.weight
        for i in region | set(users)
        for c in map(g.consts.get, g.nodes[i].input)
        if c
    )
    act = activation_of(g, region, gated)
    dtype = g.consts[next(iter(stacked))].dtype
    if dtype is None:
        raise NdpcError(f"{where}: expert weights have an element type ndpc cannot size")
    ffn = FfnAttr(
        d_model=h, d_ff=d_ff, activation=act, bias=bias, dtype=dtype, clamp=clamp_of(g, region)
    )
    return ffn, users


def _gating(widths: list[int], where: str, names: list[str]) -> tuple[bool, int]:
    """From the non-d_model widths of one expert's matrices: (gated, d_ff)."""
    if len(widths) == 3 and len(set(widths)) == 1:
        return True, widths[0]
    if len(widths) == 2:
        lo, hi = sorted(widths)
        if hi == 2 * lo:
            return True, lo
        if hi == lo:
            return False, lo
    raise NdpcError(
        f"{where}: inconsistent shapes: expert weights {names} have widths "
        f"{widths}; expected gate/up/down (N, N, N), fused gate_up (2N, N) or (N, N)"
    )


def _form(g: OnnxGraph, nodes: set[int], route_users: set[int], users: list[int]) -> str:
    ops = {g.nodes[i].op_type for i in route_users}
    if any(g.nodes[i].op_type == "TopK" and g.attr(g.nodes[i], "largest", 1) == 0 for i in nodes):
        return "grouped"
    if "NonZero" in ops:
        return "unrolled"
    if any(g.nodes[i].op_type in ("Gather", "GatherND") and i in route_users for i in users):
        return "gather-bmm"
    return "dense-loop"


def _unrolled_experts(g: OnnxGraph, stacked: dict[str, list[int]]) -> int:
    """Per-expert branches: the most Gathers that slice one stacked weight."""
    return max(sum(g.nodes[i].op_type == "Gather" for i in users) for users in stacked.values())


def _per_expert_ffn(g: OnnxGraph, r: RouterMatch, nodes: set[int], where: str):
    per: dict[int, list[int]] = {}
    for i in sorted(nodes):
        m = _EXPERT_SCOPE.search(g.scope_text(i))
        if m and matmul_weight(g, i) is not None:
            per.setdefault(int(m.group(1)), []).append(i)
    if not per:
        seen = sorted({g.nodes[i].op_type for i in nodes})
        raise NdpcError(
            f"{where}: selects {r.experts} experts but no expert weights were found "
            f"(no [{r.experts}, N, K] initializer, no 'experts.<e>' scopes; ops in the "
            f"layer: {', '.join(seen)})"
        )
    if len(per) != r.experts and max(per) >= r.experts:
        raise NdpcError(
            f"{where}: inconsistent shapes: per-expert scopes go up to expert "
            f"{max(per)} but the gate scores {r.experts} experts"
        )
    first = per[min(per)]
    found = ffn_from_down(g, first[-1], nodes)
    if found is None:
        raise NdpcError(
            f"{where}: cannot read the MLP of expert {min(per)} (node '{g.nodes[first[-1]].name}')"
        )
    return found[0], g.nodes[first[0]].name


def shared_experts(g, hidden: str, gate_node: int, nodes, route_users, routed: FfnAttr):
    """(count, ffn, gated, loc) of the shared experts reading the block input `hidden`, if any.

    They are const-weight MatMuls that read the same tensor as the router gate (`gate_node`) but
    are not downstream of the routing decision (`route_users`).
    """
    inputs = _aliases(g, hidden, nodes)
    first_layer = [
        i
        for i in sorted(nodes)
        if i != gate_node
        and i not in route_users
        and matmul_weight(g, i) is not None
        and g.nodes[i].input[0] in inputs
        and not _EXPERT_SCOPE.search(g.scope_text(i))
    ]
    gate = [i for i in first_layer if matmul_weight(g, i)[1] == 1]
    mats = [i for i in first_layer if i not in gate]
    if not mats:
        return 0, None, False, ""
    down = _shared_down(g, mats, nodes, route_users)
    if down is None:
        return 0, None, False, ""
    ffn = ffn_from_down(g, down, nodes)[0]
    ffn = FfnAttr(
        d_model=ffn.d_model,
        d_ff=ffn.d_ff,
        activation=ffn.activation,
        bias=False,
        dtype=ffn.dtype,
        clamp=ffn.clamp,
    )
    count = 1
    plural = any("shared_experts" in g.scope_text(i) for i in mats)
    if plural and ffn.d_ff % routed.d_ff == 0 and ffn.d_ff > routed.d_ff:
        # DeepSeek's `shared_experts` module is n_shared experts fused into one wide MLP.
        count = ffn.d_ff // routed.d_ff
        ffn = FfnAttr(
            d_model=ffn.d_model,
            d_ff=routed.d_ff,
            activation=ffn.activation,
            bias=False,
            dtype=ffn.dtype,
            clamp=ffn.clamp,
        )
    return count, ffn, bool(gate), g.nodes[mats[0]].name


def _aliases(g: OnnxGraph, value: str, nodes: set[int]) -> set[str]:
    """`value` and reshapes/casts of it (the block input as different matmuls read it)."""
    for _ in range(4):  # up to the tensor the reshapes start from
        src = g.producer.get(value)
        if src is None or src not in nodes or g.nodes[src].op_type not in _PASS:
            break
        value = g.nodes[src].input[0]
    out, frontier = {value}, [value]
    while frontier:
        v = frontier.pop()
        for i in g.consumers.get(v, ()):
            if i in nodes and g.nodes[i].op_type in _PASS:
                for o in g.nodes[i].output:
                    if o not in out:
                        out.add(o)
                        frontier.append(o)
    return out


def _shared_down(g, mats, nodes, route_users) -> int | None:
    """The matmul that consumes the shared gate/up product."""
    for i in sorted(g.forward_closure([o for m in mats for o in g.nodes[m].output], nodes)):
        if i not in mats and i not in route_users and matmul_weight(g, i) is not None:
            node_in = g.nodes[i].input[0]
            if node_in and g.producer.get(node_in) not in route_users:
                return i
    return None
