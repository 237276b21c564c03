"""Synthetic schedules with a real model's shape, for the benchmark and tests.

`moe_schedule` builds, with numpy only, the op DAG of batch-1 inference of an MoE model under a
tensor-parallel NDP policy: per layer and token step an attention + router kernel on the GPU, the
activation sent to the NDP units (PCIe D2H), every selected expert split into one shard per unit,
partial sums back to the GPU (PCIe H2D, one per unit), a combine on the GPU; `resident` of the k
experts run on the GPU instead (tagged GPU_RESIDENT), and one expert per layer is prefetched
(PCIe H2D, PREFETCH) for the next token. Expert choice is uniform random from `seed`.
"""

from __future__ import annotations

import numpy as np

from ndpc.backends.schedule import OpKind, Phase, Reason, Schedule, from_arrays


def moe_schedule(*, layers: int = 48, experts: int = 128, k: int = 8, units: int = 4,
                 prompt: int = 512, decode: int = 512, d_model: int = 2048, d_ff: int = 768,
                 resident: int = 1, seed: int = 0, prefetch: bool = True) -> Schedule:  # fmt: skip
    """A prefill step of `prompt` tokens then `decode` single-token steps (see module doc)."""
    rng = np.random.default_rng(seed)
    resources = ["gpu", "cpu"] + [f"ndp{u}" for u in range(units)] + ["pcie.h2d", "pcie.d2h"]
    R = {name: i for i, name in enumerate(resources)}
    expert_bytes = 3 * d_model * d_ff * 2.0
    act = d_model * 2.0
    cols: dict[str, list[np.ndarray]] = {c: [] for c in (
        "kind", "resource", "flops", "mem_bytes", "link_bytes", "phase", "token", "layer", "expert",
        "shard", "unit", "reason")}  # fmt: skip
    dep_lists: list[list[int]] = []
    n = 0
    prev_combine = -1

    def op(kind, res, deps, flops=0.0, mem=0.0, link=0.0, phase=1, token=0, layer=-1, expert=-1,
           shard=-1, unit=-1, reason=0) -> int:  # fmt: skip
        nonlocal n
        for name, val in (("kind", kind), ("resource", res), ("flops", flops), ("mem_bytes", mem),
                          ("link_bytes", link), ("phase", phase), ("token", token), ("layer", layer),
                          ("expert", expert), ("shard", shard), ("unit", unit), ("reason", reason)):  # fmt: skip
            cols[name].append(val)
        dep_lists.append(deps)
        n += 1
        return n - 1

    steps = [(Phase.PREFILL, 0, prompt)] + [(Phase.DECODE, prompt + t, 1) for t in range(decode)]
    for phase, token, m in steps:
        for layer in range(layers):
            deps = [prev_combine] if prev_combine >= 0 else []
            attn = op(OpKind.GPU_KERNEL, R["gpu"], deps, flops=8.0 * m * d_model * d_model,
                      mem=4.0 * d_model * d_model, phase=phase, token=token, layer=layer, reason=Reason.DENSE)  # fmt: skip
            router = op(OpKind.GPU_KERNEL, R["gpu"], [attn], flops=2.0 * m * d_model * experts,
                        mem=2.0 * d_model * experts, phase=phase, token=token, layer=layer, reason=Reason.ROUTER)  # fmt: skip
            chosen = rng.choice(experts, size=min(experts, k if m == 1 else experts), replace=False)
            send = op(OpKind.TRANSFER, R["pcie.d2h"], [router], link=act * m, phase=phase, token=token,
                      layer=layer, reason=Reason.BROADCAST)  # fmt: skip
            shard_ops: list[list[int]] = [[] for _ in range(units)]
            gpu_ops = []
            for j, e in enumerate(chosen):
                if m > 1:  # prefill: fetch every shard of the expert and run it on the GPU
                    fetch = [op(OpKind.TRANSFER, R["pcie.h2d"], [router], link=expert_bytes / units,
                                phase=phase, token=token, layer=layer, expert=int(e), shard=u, unit=u,
                                reason=Reason.GPU_FETCH) for u in range(units)]  # fmt: skip
                    gpu_ops.append(op(OpKind.GPU_KERNEL, R["gpu"], fetch, flops=m * expert_bytes * k / experts,
                                      mem=expert_bytes, phase=phase, token=token, layer=layer, expert=int(e),
                                      reason=Reason.GPU_FETCH))  # fmt: skip
                    continue
                if j < resident:
                    gpu_ops.append(op(OpKind.GPU_KERNEL, R["gpu"], [router], flops=2.0 * expert_bytes / 2,
                                      mem=expert_bytes, phase=phase, token=token, layer=layer, expert=int(e),
                                      reason=Reason.GPU_RESIDENT))  # fmt: skip
                    continue
                for u in range(units):
                    shard_ops[u].append(op(OpKind.NDP_KERNEL, R[f"ndp{u}"], [send],
                                           flops=expert_bytes / units, mem=expert_bytes / units,
                                           phase=phase, token=token, layer=layer, expert=int(e), shard=u,
                                           unit=u, reason=Reason.NDP))  # fmt: skip
            back = [op(OpKind.TRANSFER, R["pcie.h2d"], shard_ops[u], link=act * m, phase=phase, token=token,
                       layer=layer, unit=u, reason=Reason.PARTIAL_SUM) for u in range(units) if shard_ops[u]]  # fmt: skip
            prev_combine = op(OpKind.REDUCE, R["gpu"], back + gpu_ops, flops=units * m * d_model,
                              mem=units * act * m, phase=phase, token=token, layer=layer,
                              reason=Reason.COMBINE)  # fmt: skip
            if prefetch and m == 1:
                e = int(rng.integers(experts))
                op(OpKind.PREFETCH, R["pcie.h2d"], [router], link=expert_bytes, phase=phase, token=token,
                   layer=layer, expert=e, unit=int(e) % units, reason=Reason.PREFETCH)  # fmt: skip
    counts = np.array([len(d) for d in dep_lists], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    idx = np.array([x for d in dep_lists for x in d], dtype=np.int32)
    arrays = {name: np.asarray(vals) for name, vals in cols.items()}
    meta = {"generator": "ndpc.backends.simulator.synthetic.moe_schedule", "seed": seed,
            "prefetcher": "synthetic" if prefetch else "none"}  # fmt: skip
    return from_arrays(resources, meta, ptr, idx, **arrays)
