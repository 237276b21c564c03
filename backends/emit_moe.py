"""The emitter's building blocks: a fast op buffer, GPU residency, and one MoE layer's expansion.

`OpBuffer` appends rows to plain lists (one tuple per op, deps in a flat list) and builds the
`Schedule` from whole columns at the end: ~10x cheaper per op than a dataclass or keyword call,
which matters at ~1M ops. `Residency` owns the GPU-resident expert set and its byte budget.
`MoeLayerEmitter.emit` turns one `LayerDecision` into kernels, transfers and the combine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from backends.policies.base import LayerDecision, LayerView, Placement, Where
from backends.schedule import OpKind, Reason, Schedule, from_arrays
from ir.attrs import ReduceSite

GPU_KERNEL, NDP_KERNEL, CPU_KERNEL = int(OpKind.GPU_KERNEL), int(OpKind.NDP_KERNEL), int(OpKind.CPU_KERNEL)  # fmt: skip
TRANSFER, REDUCE, PREFETCH, SYNC = int(OpKind.TRANSFER), int(OpKind.REDUCE), int(OpKind.PREFETCH), int(OpKind.SYNC)  # fmt: skip
TAG_COLUMNS = ("kind", "resource", "flops", "mem_bytes", "link_bytes", "phase", "request", "token",
               "layer", "expert", "shard", "unit", "reason")  # fmt: skip


class OpBuffer:
    """Append-only op rows; `phase`, `request` and `token` come from the current step."""

    def __init__(self, resources: Sequence[str]) -> None:
        self.resources = tuple(resources)
        self.index = {name: i for i, name in enumerate(self.resources)}
        self.rows: list[tuple] = []
        self.dep_ptr: list[int] = [0]
        self.dep_idx: list[int] = []
        self.step = (1, 0, -1)  # (phase, request, token)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, kind: int, res: int, flops: float, mem: float, link: float, deps: Sequence[int],
            layer: int, expert: int, shard: int, unit: int, reason: int) -> int:  # fmt: skip
        """Append one op; returns its id. `deps` must be earlier ids (not checked here)."""
        n = len(self.rows)
        self.rows.append(
            (kind, res, flops, mem, link, *self.step, layer, expert, shard, unit, reason)
        )
        self.dep_idx.extend(deps)
        self.dep_ptr.append(len(self.dep_idx))
        return n

    def build(self, meta: dict[str, Any]) -> Schedule:
        """The schedule (validated by `backends.schedule.from_arrays`)."""
        if self.rows:
            cols = list(zip(*self.rows, strict=True))
        else:
            cols = [()] * len(TAG_COLUMNS)
        columns = {name: np.asarray(col) for name, col in zip(TAG_COLUMNS, cols, strict=True)}
        return from_arrays(self.resources, meta, np.asarray(self.dep_ptr, dtype=np.int64),
                           np.asarray(self.dep_idx, dtype=np.int64), **columns)  # fmt: skip


class Residency:
    """Which experts of each MoE layer are in GPU memory, within a byte budget."""

    def __init__(self, layers: int, experts: int, expert_bytes: Sequence[int], budget: int):
        self.mask = np.zeros((layers, experts), dtype=bool)
        self.expert_bytes = list(expert_bytes)
        self.budget = budget
        self.used = 0
        self.ready: dict[tuple[int, int], int] = {}  # (index, expert) -> op that brought it in

    def add(self, index: int, expert: int, op: int) -> None:
        if self.mask[index, expert]:
            return
        nbytes = self.expert_bytes[index]
        if self.used + nbytes > self.budget:
            raise ValueError(
                f"GPU expert memory over budget: layer {index} expert {expert} needs {nbytes} B, "
                f"{self.used} of {self.budget} B in use (a policy must evict first)"
            )
        self.mask[index, expert] = True
        self.used += nbytes
        self.ready[(index, expert)] = op

    def remove(self, index: int, expert: int) -> bool:
        if not self.mask[index, expert]:
            return False
        self.mask[index, expert] = False
        self.used -= self.expert_bytes[index]
        self.ready.pop((index, expert), None)
        return True


class MoeLayerEmitter:
    """Expands one (step, MoE layer) decision into schedule ops (see docs/schedule.md tags)."""

    def __init__(self, ops: OpBuffer, residency: Residency, placement: Placement, units: int,
                 has_link: bool, act_bytes: float) -> None:  # fmt: skip
        self.ops = ops
        self.res = residency
        self.placement = placement
        self.units = units
        self.has_link = has_link
        self.act_bytes = act_bytes
        idx = ops.index
        self.gpu, self.cpu = idx["gpu"], idx.get("cpu", -1)
        self.h2d, self.d2h, self.link = idx["pcie.h2d"], idx["pcie.d2h"], idx.get("ndplink", -1)
        self.ndp = [idx[f"ndp{u}"] for u in range(units)]
        self.stats = {"gpu_fetch": 0, "ndp_experts": 0, "cpu_experts": 0, "shard_moves": 0}

    def emit(self, view: LayerView, dec: LayerDecision, router: int, extra: Sequence[int]) -> int:
        """Emit the layer's expert work after `router`; returns the combine op (the layer output).
        `extra` are other ops the combine waits for (shared experts)."""
        where = np.asarray(dec.where, dtype=np.uint8)
        if len(where) != len(view.experts):
            raise ValueError(
                f"policy returned {len(where)} placements for {len(view.experts)} experts"
            )
        parts: list[int] = list(extra)
        self._gpu_resident(view, where, router, parts)
        self._gpu_fetch(view, dec, where, router, parts)
        self._cpu(view, where, router, parts)
        self._ndp(view, dec, where, router, parts)
        plan, tokens = view.plan, view.tokens
        d, b = plan.ffn.d_model, self.act_bytes
        return self.ops.add(REDUCE, self.gpu, float(max(len(parts) - 1, 0) * tokens * d),
                            (len(parts) + 1) * tokens * d * b, 0.0, parts or [router], plan.layer,
                            -1, -1, -1, int(Reason.COMBINE))  # fmt: skip

    def _work(self, view: LayerView, i: int) -> tuple[float, float]:
        ffn, c = view.plan.ffn, int(view.counts[i])
        return float(
            ffn.flops_per_token() * c
        ), ffn.weight_bytes + 2.0 * c * ffn.d_model * self.act_bytes

    def _gpu_resident(
        self, view: LayerView, where: np.ndarray, router: int, parts: list[int]
    ) -> None:
        index, layer = view.plan.index, view.plan.layer
        for i in np.flatnonzero(where == Where.GPU_RESIDENT):
            e = int(view.experts[i])
            if not self.res.mask[index, e]:
                raise ValueError(
                    f"policy ran layer {layer} expert {e} as GPU-resident, but it is not"
                )
            ready = self.res.ready.get((index, e), -1)
            deps = [router, ready] if ready >= 0 else [router]
            flops, mem = self._work(view, i)
            parts.append(self.ops.add(GPU_KERNEL, self.gpu, flops, mem, 0.0, deps, layer, e, -1, -1,
                                      int(Reason.GPU_RESIDENT)))  # fmt: skip

    def _gpu_fetch(self, view: LayerView, dec: LayerDecision, where: np.ndarray, router: int,
                   parts: list[int]) -> None:  # fmt: skip
        index, layer = view.plan.index, view.plan.layer
        nbytes = float(view.plan.expert_bytes)
        for i in np.flatnonzero(where == Where.GPU_FETCH):
            e = int(view.experts[i])
            units = self.placement.units(index, e)
            src = units[0] if len(units) == 1 else -1
            copy = self.ops.add(TRANSFER, self.h2d, 0.0, 0.0, nbytes, [router], layer, e, -1, src,
                                int(Reason.GPU_FETCH))  # fmt: skip
            flops, mem = self._work(view, i)
            parts.append(self.ops.add(GPU_KERNEL, self.gpu, flops, mem, 0.0, [copy], layer, e, -1,
                                      -1, int(Reason.GPU_FETCH)))  # fmt: skip
            self.stats["gpu_fetch"] += 1
            if dec.keep is not None and dec.keep[i]:
                self.res.add(index, e, copy)

    def _cpu(self, view: LayerView, where: np.ndarray, router: int, parts: list[int]) -> None:
        if self.cpu < 0:
            if np.any(where == Where.CPU):
                raise ValueError("policy chose the host CPU but the target has none")
            return
        layer, d, b = view.plan.layer, view.plan.ffn.d_model, self.act_bytes
        for i in np.flatnonzero(where == Where.CPU):
            e, c = int(view.experts[i]), int(view.counts[i])
            down = self.ops.add(TRANSFER, self.d2h, 0.0, 0.0, c * d * b, [router], layer, e, -1, -1,
                                int(Reason.CPU))  # fmt: skip
            flops, mem = self._work(view, i)
            k = self.ops.add(CPU_KERNEL, self.cpu, flops, mem, 0.0, [down], layer, e, -1, -1,
                             int(Reason.CPU))  # fmt: skip
            parts.append(self.ops.add(TRANSFER, self.h2d, 0.0, 0.0, c * d * b, [k], layer, e, -1, -1,
                                      int(Reason.CPU)))  # fmt: skip
            self.stats["cpu_experts"] += 1

    def _moves(self, view: LayerView, dec: LayerDecision, router: int) -> dict[int, int]:
        """Issue shard moves (re-plans); returns unit -> the last move op writing to it."""
        last: dict[int, int] = {}
        res = self.link if self.link >= 0 else self.d2h
        for mv in dec.moves:
            self.placement.apply(mv)
            last[mv.dst] = self.ops.add(TRANSFER, res, 0.0, 0.0, float(mv.nbytes), [router],
                                        view.plan.layer, mv.expert, mv.shard, mv.dst,
                                        int(Reason.REPLAN))  # fmt: skip
            self.stats["shard_moves"] += 1
        return last

    def _ndp(self, view: LayerView, dec: LayerDecision, where: np.ndarray, router: int,
             parts: list[int]) -> None:  # fmt: skip
        moved = self._moves(view, dec, router) if dec.moves else {}
        on_ndp = np.flatnonzero(where == Where.NDP)
        if not len(on_ndp):
            return
        plan, tokens, b = view.plan, view.tokens, self.act_bytes
        d, layer, index = plan.ffn.d_model, plan.layer, plan.index
        bcast = self.ops.add(TRANSFER, self.d2h, 0.0, 0.0, tokens * d * b, [router], layer, -1, -1,
                             -1, int(Reason.BROADCAST))  # fmt: skip
        kernels: dict[int, list[int]] = {}
        routed: dict[int, int] = {}
        fpt, wbytes = plan.ffn.flops_per_token(), float(plan.ffn.weight_bytes)
        ndp_reason = int(Reason.NDP)
        for i in on_ndp:
            e, c = int(view.experts[i]), int(view.counts[i])
            units = self.placement.units(index, e)
            if dec.unit is not None and dec.unit[i] >= 0 and len(units) == 1:
                units = (int(dec.unit[i]),)
            deg = len(units)
            flops, mem = fpt * c / deg, wbytes / deg + 2.0 * c * d * b
            for s, u in enumerate(units):
                deps = [bcast, moved[u]] if u in moved else [bcast]
                k = self.ops.add(NDP_KERNEL, self.ndp[u], flops, mem, 0.0, deps, layer, e, s, u,
                                 ndp_reason)  # fmt: skip
                kernels.setdefault(u, []).append(k)
                routed[u] = routed.get(u, 0) + c
            self.stats["ndp_experts"] += 1
        self._partials(view, kernels, routed, parts)

    def _partials(self, view: LayerView, kernels: dict[int, list[int]], routed: dict[int, int],
                  parts: list[int]) -> None:  # fmt: skip
        """Each used unit's partial sum (its experts already weighted and added locally) goes to
        the GPU, or to the lowest used unit over the inter-unit link, reduced there, then up."""
        plan, tokens, b = view.plan, view.tokens, self.act_bytes
        d, layer = plan.ffn.d_model, plan.layer
        units = sorted(kernels)
        nbytes = {u: min(tokens, routed[u]) * d * b for u in units}
        psum = int(Reason.PARTIAL_SUM)
        if plan.reduce is ReduceSite.GPU or self.link < 0 or len(units) == 1:
            for u in units:
                parts.append(self.ops.add(TRANSFER, self.h2d, 0.0, 0.0, nbytes[u], kernels[u], layer,
                                          -1, -1, u, psum))  # fmt: skip
            return
        root = units[0]
        deps = list(kernels[root])
        for u in units[1:]:
            deps.append(self.ops.add(TRANSFER, self.link, 0.0, 0.0, nbytes[u], kernels[u], layer,
                                     -1, -1, u, psum))  # fmt: skip
        out = tokens * d * b
        red = self.ops.add(REDUCE, self.ndp[root], float((len(units) - 1) * tokens * d),
                           sum(nbytes.values()) + out, 0.0, deps, layer, -1, -1, root, psum)  # fmt: skip
        parts.append(self.ops.add(TRANSFER, self.h2d, 0.0, 0.0, out, [red], layer, -1, -1, root,
                                  psum))  # fmt: skip
