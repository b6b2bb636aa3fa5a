"""Plans and the one executor, run over the counting segment (no torch): forward step counts equal each cost
model exactly, stored states stay within budget, and gradient flow is checked step by step."""
from __future__ import annotations

import math

import pytest

from baselines.checkpointing import (chen_forward_steps, chen_plan, default_segments, recursive_forward_steps,
                                     recursive_plan)
from baselines.executor import CountingSegment, execute, simulate
from baselines.gruslys import hsm_plan, mixed_cost, mixed_plan, optimal_cost
from baselines.schedules import (Backward, BackwardRecorded, Forward, Free, Plan, PlanError, Record, check_length,
                                 store_all_plan)


def run(plan):
    """Execute over a fresh counting segment; also return the losses (step t's loss is t + 1)."""
    seg = CountingSegment(plan.T)
    out = execute(plan, seg, seg.start())
    seg.finish()
    assert seg.final_state(out.final) == plan.T
    assert out.losses == [float(t + 1) for t in range(plan.T)]
    return out.stats


# ---------------------------------------------------------------------------------------------- store-all, Chen
@pytest.mark.parametrize("T", [1, 2, 7, 70, 301])
def test_store_all(T):
    s = run(store_all_plan(T))
    assert (s.forward_steps, s.stored_states_peak, s.graph_steps_peak) == (T, 1, T)


def test_chen_flat_counts_match_formulas():
    for T in list(range(1, 65)) + [70, 301, 1000]:
        ks = range(1, T + 1) if T <= 64 else sorted({1, 2, 3, default_segments(T), T // 2, T})
        for k in ks:
            s = run(chen_plan(T, k))
            assert s.forward_steps == chen_forward_steps(T, k) == 2 * T - T // k, (T, k)
            assert s.stored_states_peak == max(1, k - 1), (T, k)
            assert s.graph_steps_peak == math.ceil(T / k), (T, k)


def test_chen_default_is_sqrt_T():
    assert default_segments(1000) == 32 and default_segments(70) == 8 and default_segments(1) == 1
    plan = chen_plan(1000)
    assert plan.params["segments"] == 32
    s = run(plan)
    assert s.forward_steps == 2 * 1000 - 1000 // 32          # about T extra forward steps
    assert s.stored_states_peak == 31 and s.graph_steps_peak == 32


def test_chen_recursive_counts_match_formulas():
    for T in range(1, 301):
        s = run(recursive_plan(T))
        assert s.forward_steps == recursive_forward_steps(T), T
        assert s.stored_states_peak == max(1, int(math.log2(T))), T
        assert s.graph_steps_peak == 1
    for j in range(0, 11):                                   # exact closed form at powers of two
        T = 2 ** j
        assert recursive_forward_steps(T) == T + (T // 2) * j
        assert run(recursive_plan(T)).forward_steps == T + (T // 2) * j


@pytest.mark.parametrize("segments", [0, -1, 8, 2.0, True])
def test_chen_rejects_bad_segments(segments):
    with pytest.raises(ValueError, match="segments"):
        chen_plan(7, segments)


@pytest.mark.parametrize("T", [0, -3, 2.5, None, True])
def test_plans_reject_bad_length(T):
    for make in (store_all_plan, chen_plan, recursive_plan, lambda T: hsm_plan(T, 3), lambda T: mixed_plan(T, 3)):
        with pytest.raises(ValueError, match="T >= 1"):
            make(T)
    with pytest.raises(ValueError):
        check_length(T)


# ---------------------------------------------------------------------------------------------- Gruslys
def test_hsm_plans_cost_what_the_dp_says_and_fit_the_budget():
    for T in range(1, 41):
        for m in range(1, T + 2):
            s = run(hsm_plan(T, m))
            assert s.forward_steps == optimal_cost(T, m), (T, m)
            assert s.slots_peak <= m and s.stored_states_peak <= m
            assert s.graph_steps_peak == 1 and s.recorded_steps_peak == 0


def test_mixed_plans_cost_what_the_recurrence_says_and_fit_the_budget():
    for T in range(1, 41):
        for m in range(1, T + 2):
            s = run(mixed_plan(T, m))
            assert s.forward_steps == mixed_cost(T, m), (T, m)
            assert s.slots_peak <= m
            assert s.graph_steps_peak <= s.recorded_steps_peak + 1


@pytest.mark.parametrize("fraction", [0.02, 0.05, 0.10])
def test_long_segment_budgets(fraction):
    T = 1000
    m = round(fraction * T)
    s = run(hsm_plan(T, m))
    assert s.forward_steps == optimal_cost(T, m) and s.slots_peak == m
    s = run(mixed_plan(T, m))
    assert s.forward_steps == mixed_cost(T, m) and s.slots_peak <= m


def test_simulate_returns_the_counts():
    s = simulate(hsm_plan(60, 7))
    assert s.forward_steps == 195 and s.slots_peak <= 7


# ---------------------------------------------------------------------------------------------- the executor's checks
def bad(T, *actions, slots=None):
    return Plan(T=T, actions=tuple(actions), policy="test", slots=slots)


@pytest.mark.parametrize("plan, needle", [
    (bad(3, Forward(1, 2), Backward(0, 3)), "state 1 is not held"),
    (bad(3, Backward(0, 2)), "gradient is at state 3"),
    (bad(2, Backward(1, 2), Backward(0, 1)), "state 1 is not held"),
    (bad(2, Forward(0, 1), Backward(1, 2), Backward(1, 2)), "gradient is at state 1"),
    (bad(2, Forward(0, 1), Backward(1, 2)), "never backpropagated"),
    (bad(3, Forward(0, 4)), "0 <= start < stop"),
    (bad(3, Forward(0, 1, True), Forward(0, 1, True)), "already stored"),
    (bad(3, Free(1)), "not stored"),
    (bad(2, BackwardRecorded(1)), "no kept graph"),
    (bad(2, Record(0), BackwardRecorded(0)), "gradient is at state 2"),
    (bad(3, Forward(0, 1, True), Forward(1, 2, True), Backward(2, 3), Free(2), Backward(1, 2), Free(1),
         Backward(0, 1), slots=2), "more than its budget of 2"),
    (bad(2, Forward(0, 1), Record(1), Free(0), Backward(0, 1)), "kept graphs|gradient is at state 2"),
])
def test_executor_rejects_broken_plans(plan, needle):
    seg = CountingSegment(plan.T)
    with pytest.raises(PlanError, match=needle):
        execute(plan, seg, seg.start())


def test_executor_checks_the_prediction_and_the_segment_length():
    plan = Plan(T=2, actions=(Backward(0, 2),), policy="test", predicted_forward_steps=3)
    seg = CountingSegment(2)
    with pytest.raises(PlanError, match="predicts 3"):
        execute(plan, seg, seg.start())
    seg = CountingSegment(5)
    with pytest.raises(PlanError, match="T=2 steps but the segment has T=5"):
        execute(store_all_plan(2), seg, seg.start())


def test_counting_segment_checks_gradient_flow():
    seg = CountingSegment(3)
    c0 = seg.start()
    c1, _ = seg.advance(0, c0)
    with pytest.raises(PlanError, match="given state 1"):
        seg.advance(2, c1)
    leaf = seg.leaf(c1)
    c2, l1 = seg.advance(1, leaf, grad=True)
    with pytest.raises(PlanError, match="ends at state 2"):       # needs the gradient of state 2
        seg.backward([l1], c2, None)
    with pytest.raises(PlanError, match="read before"):
        leaf.grads()
    g2 = seg.leaf(c2)
    _, l2 = seg.advance(2, g2, grad=True)
    with pytest.raises(PlanError, match="never backpropagated"):
        seg.finish()
