"""Golden tests of the run-time policy classes on hand-made views (fake linear cost model)."""

from __future__ import annotations

import numpy as np
import pytest
from policy_helpers import EXPERT_BYTES, make_ctx, make_view

from ndpc.backends.policies import policy_class
from ndpc.backends.policies.base import StepActions, Where
from ndpc.ir.attrs import DispatchRule

G, F, N, C = Where.GPU_RESIDENT, Where.GPU_FETCH, Where.NDP, Where.CPU


def decide(policy, view):
    dec = policy.dispatch(view)
    return [Where(int(w)) for w in dec.where], dec


def test_every_rule_has_a_policy_class():
    mine = (
        "ondemand",
        "lru",
        "fiddler",
        "monde",
        "monde_lb",
        "duplex",
        "ctxaware",
        "eplb",
        "oracle",
    )
    for rule in map(DispatchRule, mine):
        cls = policy_class(rule)
        assert rule.value == cls.NAME
        assert (rule is DispatchRule.ORACLE) == cls.ORACLE


def test_monde_decode_top1_then_cached():
    ctx = make_ctx(DispatchRule.MONDE)
    pol = policy_class(DispatchRule.MONDE)(ctx)
    assert pol.ratio[0] < 0.05  # link 4x slower per unit than NDP streaming here -> N = 1
    where, dec = decide(pol, make_view(ctx, 0, {1: (1, 0.7), 2: (1, 0.3)}))
    assert where == [F, N] and dec.keep.tolist() == [True, False]
    assert pol.after_layer(make_view(ctx, 0, {1: (1, 0.7)})) == StepActions()
    # next step: expert 1 is resident; it takes the GPU slot and nothing is copied
    where, dec = decide(pol, make_view(ctx, 0, {1: (1, 0.2), 3: (1, 0.8)}, step=1, resident={1}))
    assert where == [G, N] and not dec.keep.any()


def test_monde_prefill_sends_hot_experts_to_gpu():
    ctx = make_ctx(DispatchRule.MONDE)
    pol = policy_class(DispatchRule.MONDE)(ctx)
    view = make_view(ctx, 0, {0: (400, 40.0), 1: (300, 30.0), 2: (5, 1.0), 3: (3, 1.0)}, phase=0)
    where, _ = decide(pol, view)
    assert where == [F, F, N, N]


def test_monde_gpu_slots_option():
    ctx = make_ctx(DispatchRule.MONDE, gpu_slots=2)
    pol = policy_class(DispatchRule.MONDE)(ctx)
    where, _ = decide(pol, make_view(ctx, 0, {1: (1, 0.5), 2: (1, 0.3), 5: (1, 0.2)}))
    assert where == [F, F, N]


def test_monde_lb_copies_only_when_it_pays():
    ctx = make_ctx(DispatchRule.MONDE_LB)
    pol = policy_class(DispatchRule.MONDE_LB)(ctx)
    # batch-1 decode: a copy (4.9 us) costs more than NDP (0.13 us per expert): all on NDP
    where, _ = decide(pol, make_view(ctx, 0, {1: (1, 0.7), 2: (1, 0.3)}))
    assert where == [N, N]
    where, _ = decide(pol, make_view(ctx, 0, {1: (1, 0.7), 2: (1, 0.3)}, resident={2}))
    assert where == [N, G]
    view = make_view(ctx, 0, {0: (400, 40.0), 1: (300, 30.0), 2: (5, 1.0), 3: (3, 1.0)}, phase=0)
    assert decide(pol, view)[0] == [F, F, N, N]  # prefill: same as monde


def test_ondemand_fetches_everything_serially():
    ctx = make_ctx(DispatchRule.ONDEMAND, degree=2)
    pol = policy_class(DispatchRule.ONDEMAND)(ctx)
    where, dec = decide(pol, make_view(ctx, 0, {1: (1, 0.5), 2: (1, 0.5)}, resident={2}))
    assert where == [F, G] and dec.keep is None and dec.serial


def test_lru_keeps_copies_and_evicts_other_layers_after():
    ctx = make_ctx(DispatchRule.LRU, budget_experts=4)  # 4 slots, 2 reserved for a step's copies
    pol = policy_class(DispatchRule.LRU)(ctx)
    where, dec = decide(pol, make_view(ctx, 0, {1: (1, 0.6), 2: (1, 0.4)}))
    assert where == [F, F] and dec.keep.tolist() == [True, True] and dec.serial
    assert pol.after_layer(make_view(ctx, 0, {1: (1, 0.6)})).evict == ()
    where, dec = decide(pol, make_view(ctx, 1, {1: (1, 0.6), 2: (1, 0.4)}))
    assert where == [F, F] and dec.keep.tolist() == [True, True]
    assert set(pol.after_layer(make_view(ctx, 1, {1: (1, 0.6)})).evict) == {(0, 1), (0, 2)}
    where, _ = decide(pol, make_view(ctx, 1, {1: (1, 0.6), 4: (1, 0.4)}, step=1, resident={1, 2}))
    assert where == [G, F]


def test_fiddler_cpu_in_decode_copy_in_long_prefill():
    ctx = make_ctx(DispatchRule.FIDDLER, degree=2)
    pol = policy_class(DispatchRule.FIDDLER)(ctx)
    where, _ = decide(pol, make_view(ctx, 0, {1: (1, 0.5), 3: (1, 0.5)}, resident={3}))
    assert where == [C, G]
    where, _ = decide(pol, make_view(ctx, 0, {1: (1000, 9.0), 2: (10, 1.0)}, phase=0))
    assert where == [F, C]


def test_fiddler_published_threshold_rule():
    # the implementation's rule (7 per token on the CPU vs 70 for a copy): >= 10 tokens copy
    ctx = make_ctx(DispatchRule.FIDDLER, token_threshold=10)
    pol = policy_class(DispatchRule.FIDDLER)(ctx)
    view = make_view(ctx, 0, {1: (9, 1.0), 2: (10, 1.0), 3: (1000, 9.0), 4: (12, 1.0)}, phase=0,
                     resident={4})  # fmt: skip
    where, dec = decide(pol, view)
    assert where == [C, F, F, G] and dec.serial  # one GPU placeholder: copy, compute, copy...
    where, _ = decide(pol, make_view(ctx, 0, {1: (1, 0.5), 3: (1, 0.5)}, resident={3}))
    assert where == [C, G]  # decode as with the cost model


def test_fiddler_needs_a_host_cpu():
    ctx = make_ctx(DispatchRule.FIDDLER)
    ctx.target.has_host_cpu = False
    with pytest.raises(ValueError, match="no host CPU"):
        policy_class(DispatchRule.FIDDLER)(ctx)


def test_duplex_threshold_from_cost_model_and_override():
    ctx = make_ctx(DispatchRule.DUPLEX)
    pol = policy_class(DispatchRule.DUPLEX)(ctx)
    thr = pol.threshold(0, 1000)
    # copy 4.9152 us from one unit; NDP compute 0.12288 us per token: crossover at 41 tokens
    assert thr == 41
    where, _ = decide(pol, make_view(ctx, 0, {1: (50, 5.0), 2: (30, 3.0)}, phase=0))
    assert where == [F, N]
    where, _ = decide(pol, make_view(ctx, 0, {1: (1, 0.5), 2: (1, 0.5)}))
    assert where == [N, N]
    ctx = make_ctx(DispatchRule.DUPLEX, token_threshold=20)
    pol = policy_class(DispatchRule.DUPLEX)(ctx)
    where, _ = decide(pol, make_view(ctx, 0, {1: (25, 5.0), 2: (19, 3.0)}, phase=0))
    assert where == [F, N]


def test_ctxaware_pins_after_prefill_and_never_migrates():
    ctx = make_ctx(DispatchRule.CTXAWARE, budget_experts=4)  # 2 layers -> K = 2
    pol = policy_class(DispatchRule.CTXAWARE)(ctx)
    assert pol.k_pin == 2
    for index in (0, 1):
        view = make_view(ctx, index, {0: (6, 3.0), 1: (2, 1.5), 5: (4, 0.5)}, phase=0)
        pol.dispatch(view)
        assert pol.after_layer(view) == StepActions()  # nothing moves before the prefill ends
    acts = pol.end_step(0, 0, 0)
    # P = [6, 2, 4]/12, W = [3, 1.5, 0.5]/5: S(0) = .45, S(1) = .233, S(5) = .217 -> {0, 1}
    assert acts.prefetch == ((0, 0), (0, 1), (1, 0), (1, 1)) and acts.evict == ()
    where, _ = decide(pol, make_view(ctx, 0, {0: (1, 0.5), 5: (1, 0.5)}, step=1, resident={0, 1}))
    assert where == [G, N]
    assert pol.end_step(1, 1, 0) == StepActions()


def test_eplb_replicas_routing_and_background_moves():
    ctx = make_ctx(DispatchRule.EPLB, layers=1, experts=4, units=2, replan_interval=2)
    pol = policy_class(DispatchRule.EPLB)(ctx)
    assert pol.slots == [3]  # ceil(4 * 1.25 / 2)
    view = make_view(ctx, 0, {0: (10, 9.0), 1: (1, 0.5), 2: (1, 0.5)}, phase=0)
    where, dec = decide(pol, view)
    assert where == [N, N, N] and dec.moves == ()
    assert dec.unit.tolist() == [0, 1, 0]  # EP homes before any history
    assert pol.end_step(0, 0, 0) == StepActions()  # re-plan from the prompt's loads
    # target: hot expert 0 on both units; 1 and 2 stay home (migration-aware); 3 moves to 0
    assert pol.target_plans[0].replicas == ((0, 1), (1,), (0,), (0,))
    assert pol.pending[0] == [(0, 1), (3, 0)]
    # step 1: experts 1 (unit 1) and 2 (unit 0) keep both units busy: no copy can start
    where, dec = decide(pol, make_view(ctx, 0, {1: (1, 0.6), 2: (1, 0.4)}, step=1))
    assert dec.moves == () and dec.unit.tolist() == [1, 0]
    # step 2: only unit 0 computes (expert 2), so expert 0's copy to unit 1 goes in background
    where, dec = decide(pol, make_view(ctx, 0, {2: (1, 0.6)}, step=2))
    assert [(m.expert, m.src, m.dst, m.nbytes) for m in dec.moves] == [(0, 0, 1, EXPERT_BYTES)]
    ctx.placement.apply(dec.moves[0])  # what the emitter does when it issues the copy
    # step 3: the replica has landed: expert 2 takes unit 0, expert 0 its idle replica on unit 1
    where, dec = decide(pol, make_view(ctx, 0, {0: (1, 0.4), 2: (1, 0.6)}, step=3))
    assert dec.unit.tolist() == [1, 0]


def test_eplb_migration_cost_keeps_placement():
    from ndpc.backends.policies import eplb

    old = eplb.ReplicaPlan(((1,), (0,), (1,), (0,)))
    load = [1.0, 1.0, 1.0, 1.0]
    assert eplb.plan_layer(load, 2, 2, old, 0.5) == old  # balanced already: nothing moves
    assert eplb.plan_layer(load, 2, 2) != old  # the plain packing reshuffles


def test_oracle_prefetches_next_layer_with_belady():
    from ndpc.traces.format import Trace, TraceMeta

    experts = np.array([[[0, 1], [2, 3]], [[0, 1], [2, 3]], [[4, 5], [2, 3]]], dtype=np.int32)
    meta = TraceMeta(model="m", layers=2, experts=8, k=2, source="test", generator="", seed=0)
    trace = Trace(
        meta, experts, np.full(experts.shape, 0.5, np.float32),
        np.array([0, 1, 1], np.uint8), np.zeros(3, np.int32),
    )  # fmt: skip
    ctx = make_ctx(DispatchRule.ORACLE, budget_experts=4, oracle_trace=trace)
    pol = policy_class(DispatchRule.ORACLE)(ctx)
    assert len(pol.groups) == 3  # prefill is one step (token 0), then two decode steps
    acts = pol.after_layer(make_view(ctx, 0, {0: (1, 0.5), 1: (1, 0.5)}, phase=0))
    assert acts.prefetch == ((1, 2), (1, 3))  # the next layer's experts, known in advance
    acts = pol.end_step(0, 0, 0)
    assert acts.prefetch == ((0, 0), (0, 1))
