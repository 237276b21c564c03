"""tp-split's cost-model choices: degree and reduce site."""

from __future__ import annotations

import pytest

from ndpc.backends.cost import CostModel
from ndpc.backends.expert_cost import ExpertTimes
from ndpc.backends.target import load_target
from ndpc.compiler.passes.tp_split import (
    choose_degree,
    choose_site,
    expected_layer_time,
    round_robin_units,
)
from ndpc.ir.attrs import Activation, FfnAttr, ReduceSite
from ndpc.ir.types import DType

QWEN = FfnAttr(2048, 768, Activation.SWIGLU, False, DType.BF16)
TINY = FfnAttr(64, 32, Activation.SWIGLU, False, DType.BF16)


@pytest.fixture(scope="module")
def cost():
    return CostModel(load_target("rtx5080-ndp"))


def test_round_robin_spreads_shards() -> None:
    assert [round_robin_units(e, 2, 4) for e in range(3)] == [(0, 1), (2, 3), (0, 1)]
    assert round_robin_units(3, 3, 4) == (1, 2, 3)
    counts = [0] * 4
    for e in range(128):
        for u in round_robin_units(e, 3, 4):
            counts[u] += 1
    assert max(counts) - min(counts) <= 1


def test_big_experts_split_fully_tiny_ones_stay_whole(cost) -> None:
    degree, site, est = choose_degree(ExpertTimes(QWEN, cost, 2), 128, 8, 4, True, 0)
    assert degree == 4 and site is ReduceSite.NDP
    assert est[4] < est[2] < est[1]  # splitting removes the busiest-unit imbalance
    degree, _, est = choose_degree(ExpertTimes(TINY, cost, 2), 8, 2, 4, True, 0)
    assert degree == 1 and est[1] < est[4]  # launch and transfer overheads dominate


def test_reduce_site_needs_a_link(cost) -> None:
    times = ExpertTimes(QWEN, cost, 2)
    assert choose_site(times, 4, has_link=True) is ReduceSite.NDP
    assert choose_site(times, 4, has_link=False) is ReduceSite.GPU
    assert choose_site(times, 1, has_link=True) is ReduceSite.GPU


def test_expected_layer_time_is_deterministic(cost) -> None:
    times = ExpertTimes(QWEN, cost, 2)
    a = expected_layer_time(times, 128, 8, 1, 4, ReduceSite.GPU, seed=3)
    assert a == expected_layer_time(times, 128, 8, 1, 4, ReduceSite.GPU, seed=3)
