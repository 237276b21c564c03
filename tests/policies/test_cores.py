"""Golden tests of each baseline's decision core on small hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from ndpc.backends import static_placement
from ndpc.backends.policies import ctxaware, duplex, eplb, fiddler, lru, monde, ondemand, oracle


# --- monde -------------------------------------------------------------------------------
def test_monde_ratio_matches_reference_constant():
    assert monde.bandwidth_ratio(32e9, 512e9) == pytest.approx(monde.DECODE_RATIO_REFERENCE)
    assert monde.bandwidth_ratio(32e9, 512e9) == pytest.approx(0.05882, abs=1e-5)


@pytest.mark.parametrize(
    ("active", "ratio", "n"),
    [(8, 0.0588, 1), (2, 0.0588, 1), (0, 0.5, 0), (8, 0.25, 2), (8, 0.26, 3), (4, 1.0, 4)],
)
def test_monde_decode_slots(active, ratio, n):
    assert monde.decode_gpu_slots(active, ratio) == n


def test_monde_decode_split_prefers_cached_then_weight():
    tokens = {1: 1, 2: 1, 5: 1, 6: 1}
    weight = {1: 0.4, 2: 0.3, 5: 0.2, 6: 0.1}
    split = monde.monde_decode(tokens, weight, cached={5}, units=2, ratio=0.0588)
    assert split.gpu_cached == (5,) and split.gpu_fetch == ()
    assert split.ndp == {0: (2, 6), 1: (1,)}
    split = monde.monde_decode(tokens, weight, cached=set(), units=2, ratio=0.0588)
    assert split.gpu_fetch == (1,) and split.ndp == {0: (2, 6), 1: (5,)}


def test_monde_cached_experts_run_on_gpu_beyond_top_n():
    tokens = {0: 1, 1: 1, 2: 1}
    split = monde.monde_decode(tokens, {0: 0.5, 1: 0.3, 2: 0.2}, {1, 2}, units=3, ratio=0.01)
    assert set(split.gpu) == {1, 2} and split.gpu_fetch == () and split.ndp == {0: (0,)}


def test_monde_prefill_balances_gpu_and_ndp():
    # NDP time grows 1.0 per token, GPU path: copy 3.0 + 0.1 per token; 2 units.
    tokens = {0: 10, 1: 8, 2: 2, 3: 1}
    split = monde.monde_prefill(tokens, {}, set(), 2, lambda n: 0.1 * n, 3.0, lambda n: 1.0 * n)
    # homes: e0,e2 -> unit0; e1,e3 -> unit1. All NDP: 12. e0 to GPU: NDP unit1 = 9.
    # e0,e1 to GPU: copies land at 3 and 6, GPU done at 6.8; NDP max(2, 1). e0,e1,e2: 9.2.
    assert split.gpu_fetch == (0, 1)
    assert split.ndp == {0: (2,), 1: (3,)}
    t = monde.layer_finish(split, tokens, lambda n: 0.1 * n, 3.0, lambda n: 1.0 * n)
    assert t == pytest.approx(6.8)


def test_monde_prefill_fixed_slots():
    tokens = {0: 10, 1: 8, 2: 2, 3: 1, 4: 5}
    split = monde.monde_prefill(tokens, {}, set(), 2, lambda n: n, 1.0, lambda n: n, gpu_slots=4)
    assert split.gpu_fetch == (0, 1, 4, 2) and split.ndp == {1: (3,)}


# --- ondemand / lru ---------------------------------------------------------------------
def test_ondemand_serial_time_and_order():
    order = ondemand.fetch_order({3: 1, 1: 1}, {3: 0.7, 1: 0.3})
    assert order == [3, 1]
    assert ondemand.serial_finish(order, {3: 1, 1: 1}, 2.0, lambda n: 0.5) == pytest.approx(5.0)
    assert ondemand.serial_finish(order, {3: 1, 1: 1}, 2.0, lambda n: 0.5, {3}) == 3.0


def test_lru_hits_misses_evictions():
    cache = lru.LruExpertCache(capacity_bytes=300, expert_bytes=100)  # 3 slots
    s = cache.access(0, [1, 2])
    assert s.hits == () and s.misses == (1, 2) and s.evicted == ()
    s = cache.access(1, [1])
    assert s.misses == (1,) and len(cache) == 3
    s = cache.access(0, [2, 5])  # (0,1) is least recent -> evicted
    assert s.hits == (2,) and s.misses == (5,) and s.evicted == ((0, 1),)
    assert (0, 2) in cache and (1, 1) in cache and (0, 5) in cache


def test_lru_never_evicts_current_step_and_marks_transient():
    cache = lru.LruExpertCache(capacity_bytes=200, expert_bytes=100)
    s = cache.access(0, [1, 2, 3])
    assert s.misses == (1, 2, 3) and s.transient == (3,) and len(cache) == 2


# --- fiddler ----------------------------------------------------------------------------
def test_fiddler_profile_and_resident_sets():
    experts = np.array([[[0, 1], [2, 3]], [[0, 2], [2, 1]], [[0, 1], [3, 2]]])  # [T=3, L=2, k=2]
    counts = static_placement.popularity(experts, 4)
    assert counts.tolist() == [[3, 2, 1, 0], [0, 1, 3, 2]]
    assert static_placement.resident_sets(counts, 3) == [(0, 1), (2,)]  # ties: lower layer first
    assert static_placement.resident_sets(counts, 0) == [(), ()]
    assert static_placement.resident_sets(counts, 100) == [
        (0, 1, 2),
        (1, 2, 3),
    ]  # zero counts unused


def test_fiddler_choice_rule():
    C = fiddler.FiddlerChoice
    assert fiddler.choose(True, 0.0, 9.0, 9.0) is C.GPU_RESIDENT
    assert fiddler.choose(False, 1.0, 5.0, 0.1) is C.CPU  # decode: CPU wins
    assert fiddler.choose(False, 50.0, 5.0, 0.1) is C.GPU_FETCH  # long prefill: copy wins
    assert fiddler.choose(False, 5.1, 5.0, 0.1) is C.CPU  # tie goes to the CPU
    split = fiddler.split_layer({1: 1, 2: 100, 3: 1}, {3}, lambda n: 0.1 * n, 4.0, lambda n: 0.01)
    assert split == {1: C.CPU, 2: C.GPU_FETCH, 3: C.GPU_RESIDENT}


# --- duplex -----------------------------------------------------------------------------
def test_duplex_threshold_and_split():
    gpu_path = lambda n: 5.0 + 0.01 * n  # noqa: E731 - copy + compute
    ndp = lambda n: 0.5 * n  # noqa: E731
    assert duplex.token_threshold(gpu_path, ndp, 100) == 11  # 5.11 < 5.5
    assert duplex.threshold_bisect(gpu_path, ndp, 100) == 11
    assert duplex.token_threshold(gpu_path, ndp, 5) == 6  # never wins -> max + 1
    assert duplex.threshold_bisect(gpu_path, ndp, 5) == 6
    split = duplex.duplex_split({0: 1, 1: 30, 2: 11, 3: 10, 4: 2}, 11, units=2)
    assert split.gpu == (1, 2) and split.ndp == {0: (0, 4), 1: (3,)}


# --- ctxaware ---------------------------------------------------------------------------
def test_ctxaware_scores_and_pins():
    experts = np.array([[[0, 1]], [[0, 2]], [[2, 0]]])  # [T=3, L=1, k=2]
    weights = np.array([[[0.9, 0.1]], [[0.6, 0.4]], [[0.8, 0.2]]], dtype=np.float32)
    s = ctxaware.prefill_scores(experts, weights, 4)
    # P = [3, 1, 2, 0] / 6 ; W = [1.7, 0.1, 1.2, 0] / 3
    want = 0.5 * np.array([3, 1, 2, 0]) / 6 + 0.5 * np.array([1.7, 0.1, 1.2, 0]) / 3
    np.testing.assert_allclose(s[0], want, rtol=1e-6)
    assert ctxaware.pinned_sets(s, 2) == [(0, 2)]
    assert ctxaware.pinned_sets(s, 4) == [(0, 1, 2)]  # never-seen expert 3 not pinned
    assert ctxaware.pins_per_layer(16 * 100, 4, 100, 8) == 4
    assert ctxaware.pins_per_layer(16 * 100, 1, 100, 8) == 8


def test_ctxaware_alpha_one_is_frequency_only():
    experts = np.array([[[0, 1]], [[1, 0]], [[1, 2]]])
    weights = np.array([[[0.99, 0.01]], [[0.5, 0.5]], [[0.5, 0.5]]], dtype=np.float32)
    assert ctxaware.pinned_sets(ctxaware.prefill_scores(experts, weights, 3, 1.0), 1) == [(1,)]
    # scores alone favour expert 0 (1.49 vs 1.01): alpha decides
    assert ctxaware.pinned_sets(ctxaware.prefill_scores(experts, weights, 3, 0.0), 1) == [(0,)]
    with pytest.raises(ValueError):
        ctxaware.prefill_scores(experts, weights, 3, 1.5)


# --- eplb -------------------------------------------------------------------------------
def test_eplb_replicate_and_pack():
    assert eplb.replicate([10.0, 4.0, 1.0, 1.0], 6) == [3, 1, 1, 1]
    assert eplb.replicate([10.0, 6.0, 1.0, 1.0], 6) == [2, 2, 1, 1]
    where = eplb.balanced_packing([5.0, 4.0, 3.0, 2.0], 2)
    assert where == [0, 1, 1, 0]  # 5+2 vs 4+3
    with pytest.raises(ValueError):
        eplb.balanced_packing([1.0, 2.0, 3.0], 2)


def test_eplb_plan_layer_spreads_hot_expert():
    plan = eplb.plan_layer([12.0, 1.0, 1.0, 1.0, 1.0, 1.0], units=3, slots_per_unit=3)
    assert plan.replicas[0] == (0, 1, 2)  # the hot expert on every unit
    per_unit = plan.unit_experts(3)
    assert all(len(u) <= 3 for u in per_unit)
    assert all(len(r) >= 1 for r in plan.replicas)


def test_eplb_route_least_loaded():
    plan = eplb.ReplicaPlan(((0, 1), (0,), (1,)))
    routed = eplb.route_least_loaded({1: 1, 0: 2, 2: 1}, plan, 2, order=[1, 0, 2])
    # e1 -> unit0; e0 token1 -> unit1 (load 0), token2 -> unit0 (tie 1:1 -> lower); e2 -> unit1
    assert routed == {1: {0: 1}, 0: {1: 1, 0: 1}, 2: {1: 1}}


def test_eplb_slots_and_estimator_and_diff():
    assert eplb.slots_per_unit(8, 3, 0.25, 100) == 4  # 10 slots -> ceil(10/3)
    assert eplb.slots_per_unit(8, 3, 0.25, 3) == 3
    with pytest.raises(ValueError):
        eplb.slots_per_unit(8, 3, 0.0, 2)
    est = eplb.LoadEstimator(1, 3, decay=0.5)
    est.observe(0, [0, 1])
    est.observe(0, [0])
    np.testing.assert_allclose(est.close_window()[0], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(est.close_window()[0], [0.5, 0.25, 0.0])
    old = eplb.ReplicaPlan(((0,), (1,)))
    new = eplb.ReplicaPlan(((0, 1), (1,)))
    assert eplb.new_replicas(old, new) == [(0, 1)]


# --- oracle -----------------------------------------------------------------------------
def test_belady_beats_lru_on_cyclic_pattern():
    seq = [[(0, e)] for e in [1, 2, 3] * 4]
    bel = oracle.BeladyCache(2, seq)
    cache = lru.LruExpertCache(200, 100)
    bel_miss = lru_miss = 0
    for step, group in enumerate(seq):
        _, miss, _ = bel.access(step, group)
        bel_miss += len(miss)
        lru_miss += len(cache.access(0, [e for _, e in group]).misses)
    assert lru_miss == 12  # LRU thrashes on a cycle longer than the cache
    assert bel_miss == 6  # the optimum, found by exhaustive search over keep/evict choices
    assert bel_miss < lru_miss


def test_belady_bypasses_never_reused():
    seq = [[(0, 1)], [(0, 2)], [(0, 3)], [(0, 1)], [(0, 2)]]
    bel = oracle.BeladyCache(2, seq)
    for step, group in enumerate(seq):
        bel.access(step, group)
        if step == 2:
            assert bel.resident == {(0, 1), (0, 2)}  # 3 is never used again: not admitted


def _optimal_misses(seq, slots):
    """Exhaustive minimum misses with bypass (keep/evict choices), for tiny sequences."""
    import functools

    @functools.lru_cache(None)
    def best(i, cache):
        if i == len(seq):
            return 0
        x = seq[i]
        if x in cache:
            return best(i + 1, cache)
        options = [best(i + 1, cache)]
        if len(cache) < slots:
            options.append(best(i + 1, cache | {x}))
        else:
            options += [best(i + 1, (cache - {v}) | {x}) for v in cache]
        return 1 + min(options)

    return best(0, frozenset())


def test_belady_is_optimal_on_random_sequences():
    rng = np.random.default_rng(7)
    for _ in range(25):
        seq = [int(x) for x in rng.integers(0, 5, size=12)]
        slots = int(rng.integers(1, 4))
        bel = oracle.BeladyCache(slots, [[(0, e)] for e in seq])
        misses = sum(len(bel.access(i, [(0, e)])[1]) for i, e in enumerate(seq))
        assert misses == _optimal_misses(tuple(seq), slots), (seq, slots)


def test_monde_layer_finish_charges_copy_holds_on_home_units():
    split = monde.MondeSplit(gpu_cached=(), gpu_fetch=(0,), ndp={0: (2,), 1: (1,)})
    tokens = {0: 1, 1: 1, 2: 1}
    # GPU path 3 + 0.1; unit 0 computes expert 2 (1.0) and is blocked 2.5 by the copy of expert 0
    t = monde.layer_finish(split, tokens, lambda n: 0.1, 3.0, lambda n: 1.0, hold=2.5, units=2)
    assert t == pytest.approx(3.5)
    assert monde.layer_finish(split, tokens, lambda n: 0.1, 3.0, lambda n: 1.0) == pytest.approx(
        3.1
    )
