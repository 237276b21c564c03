"""Prefetched-but-wasted bytes when one copy is several PREFETCH ops (one per shard)."""

from __future__ import annotations

from ndpc.backends.schedule import OpKind, Reason, ScheduleBuilder
from ndpc.backends.simulator.metrics import prefetch_stats
from ndpc.backends.target import load_target, resource_names


def _schedule(shards_then: str):
    t = load_target("rtx5080-ndp")
    b = ScheduleBuilder(resource_names(t), {"prefetcher": "dataset-free"})
    h2d, gpu = b.resource("pcie.h2d"), b.resource("gpu")
    for s in range(4):  # one copy of layer 0 expert 3, four shards from four DIMMs
        b.add(OpKind.PREFETCH, h2d, link_bytes=10.0, layer=0, expert=3, shard=s, unit=s,
              reason=Reason.PREFETCH)  # fmt: skip
    if shards_then == "use":
        b.add(OpKind.GPU_KERNEL, gpu, mem_bytes=1.0, token=5, layer=0, expert=3,
              reason=Reason.GPU_RESIDENT)  # fmt: skip
    elif shards_then == "evict":
        b.add(OpKind.SYNC, gpu, layer=0, expert=3, reason=Reason.EVICT)
        b.add(OpKind.PREFETCH, h2d, link_bytes=10.0, layer=0, expert=3, shard=0, unit=0,
              reason=Reason.PREFETCH)  # fmt: skip
        b.add(OpKind.GPU_KERNEL, gpu, mem_bytes=1.0, token=5, layer=0, expert=3,
              reason=Reason.GPU_RESIDENT)  # fmt: skip
    return b.build()


def test_shard_copies_of_one_expert_count_as_one_copy() -> None:
    assert prefetch_stats(_schedule("use"))[2] == 0.0  # all four shards serve the hit
    assert prefetch_stats(_schedule("end"))[2] == 40.0  # never used: every shard wasted
    # evicted before use, then copied again and used: only the first copy is wasted
    assert prefetch_stats(_schedule("evict"))[2] == 40.0
