"""Gruslys et al.'s dynamic programme (BPTT-HSM) and the mixed policy: costs against an exhaustive search,
closed forms and Revolve's binomial formula; budget conversion."""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from baselines import gruslys
from baselines.gruslys import (hsm_plan, mixed_cost, mixed_plan, mixed_split, optimal_cost, optimal_split,
                               relative_time, resolve_slots)


# ---------------------------------------------------------------------------------------------- brute force
def brute_force_cost(t: int, m: int, mixed: bool = False) -> int:
    """Fewest step evaluations to backpropagate ``t`` steps with ``m`` slots, by exhaustive search.

    Independent of the recurrence: a 0-1 breadth-first search over every sequence of primitive moves of the
    abstract machine (``m`` slots, state 0 in one of them, plus one uncounted working state). Moves: advance the
    working state (or a stored state) by one step without autograd, costing 1, optionally storing the result;
    run the step just before the gradient with autograd and backpropagate it (cost 1); free any slot (cost 0);
    with ``mixed``: record a step's graph into a slot (cost 1; its start state may be dropped at the same time)
    and backpropagate a recorded step when the gradient reaches it (cost 0).
    A search state is (gradient position p, working state, stored-state bitmask, recorded-step bitmask).
    """
    if t == 0:
        return 0
    start = (t, -1, 1, 0)
    dist = {start: 0}
    queue = deque([(0, start)])
    bits = int.bit_count
    while queue:
        d, s = queue.popleft()
        if dist.get(s, math.inf) < d:
            continue
        p, cur, S, R = s
        if p == 0:
            return d

        def push(ns, cost):
            nd = d + cost
            if nd < dist.get(ns, math.inf):
                dist[ns] = nd
                (queue.appendleft if cost == 0 else queue.append)((nd, ns))

        used = bits(S) + bits(R)
        below = (1 << (p - 1)) - 1                       # states/steps still useful once the gradient is at p-1
        holders = [x for x in range(p) if S >> x & 1]
        if cur >= 0 and not S >> cur & 1:
            holders.append(cur)
        for x in holders:
            if x + 1 <= p - 1:                           # advance without autograd
                push((p, x + 1, S, R), 1)
                if used < m and not S >> (x + 1) & 1:
                    push((p, x + 1, S | 1 << (x + 1), R), 1)
            if x == p - 1:                               # re-run the last step with autograd, backpropagate
                push((p - 1, -1, S & below, R & below), 1)
            if mixed and not R >> x & 1:                 # record step x
                for drop in ((False, True) if S >> x & 1 else (False,)):
                    S2 = S & ~(1 << x) if drop else S
                    if bits(S2) + bits(R) + 1 > m:
                        continue
                    R2 = R | 1 << x
                    nc = x + 1 if x + 1 <= p - 1 else -1
                    push((p, nc, S2, R2), 1)
                    if nc >= 0 and bits(S2) + bits(R2) < m and not S2 >> nc & 1:
                        push((p, nc, S2 | 1 << nc, R2), 1)
        if mixed and R >> (p - 1) & 1:                   # backpropagate a recorded step: no evaluation
            push((p - 1, cur if cur < p - 1 else -1, S & below, R & below), 0)
        for x in range(p):
            if S >> x & 1:
                push((p, cur, S & ~(1 << x), R), 0)
            if R >> x & 1:
                push((p, cur, S, R & ~(1 << x)), 0)
    raise AssertionError(f"no policy backpropagates t={t} with m={m}")


def revolve_cost(t: int, m: int) -> int:
    """Griewank and Walther's binomial checkpointing cost plus the t autograd re-runs (an independent closed form):
    r = the least r with binom(m + r, m) >= t; cost = t + r t - binom(m + r, m + 1)."""
    r = 0
    while math.comb(m + r, m) < t:
        r += 1
    return t + (r * t - math.comb(m + r, m + 1) if r >= 1 else 0)


# ---------------------------------------------------------------------------------------------- HSM costs
def test_values_from_the_notes():
    # checkpoint_schedules' optimal_steps_binomial, as quoted in BASELINES.md
    assert optimal_cost(200, 5) == 990
    assert optimal_cost(200, 20) == 578
    assert optimal_cost(60, 7) == 195


def test_hsm_equals_exhaustive_search():
    for t in range(0, 13):
        for m in range(1, 7):
            assert optimal_cost(t, m) == brute_force_cost(t, m), (t, m)


def test_hsm_closed_forms():
    for t in range(0, 301):
        assert optimal_cost(t, 1) == t * (t + 1) // 2
    for t in range(1, 120):
        for m in range(t - 1, t + 3):
            if m >= 1:
                assert optimal_cost(t, m) == 2 * t - 1, (t, m)
    assert optimal_cost(0, 3) == 0 and optimal_cost(1, 1) == 1


def test_table_shortcut_is_what_the_recurrence_gives():
    # the table fills m >= t-1 with 2t-1 (HSM) / t (mixed); the full recurrence gives the same numbers
    for mixed in (False, True):
        fast, _ = gruslys._build(60, 70, mixed=mixed, shortcut=True)
        full, _ = gruslys._build(60, 70, mixed=mixed, shortcut=False)
        np.testing.assert_array_equal(fast[:, 1:], full[:, 1:])


def test_hsm_matches_revolve_binomial_formula():
    for t in range(1, 151):
        for m in range(1, 40):
            assert optimal_cost(t, m) == revolve_cost(t, m), (t, m)
    for m in (1, 2, 5, 20, 50, 100, 500, 998):
        assert optimal_cost(1000, m) == revolve_cost(1000, m), m


def test_split_attains_the_cost():
    for t in range(2, 90):
        for m in range(1, 12):
            y = optimal_split(t, m)
            assert 1 <= y < t
            right = 1 if (t - y == 1) else (math.inf if m == 1 else optimal_cost(t - y, m - 1))
            assert y + right + optimal_cost(y, m) == optimal_cost(t, m), (t, m, y)


def test_costs_fall_as_slots_grow_and_mixed_is_no_worse():
    for t in range(1, 80):
        hsm = [optimal_cost(t, m) for m in range(1, t + 2)]
        mix = [mixed_cost(t, m) for m in range(1, t + 2)]
        assert all(a >= b for a, b in zip(hsm, hsm[1:]))
        assert all(a >= b for a, b in zip(mix, mix[1:]))
        assert all(x <= h for x, h in zip(mix, hsm))
        assert mix[-1] == t                      # enough slots: every step evaluated exactly once


# ---------------------------------------------------------------------------------------------- mixed policy
def test_mixed_equals_exhaustive_search():
    for t in range(0, 9):
        for m in range(1, 5):
            assert mixed_cost(t, m) == brute_force_cost(t, m, mixed=True), (t, m)


@pytest.mark.slow
def test_mixed_equals_exhaustive_search_larger():
    for t in range(9, 12):
        for m in range(1, 6):
            assert mixed_cost(t, m) == brute_force_cost(t, m, mixed=True), (t, m)


def test_mixed_closed_forms_from_the_notes():
    for n in range(1, 200):
        for s in range(max(1, n - 1), n + 2):
            assert mixed_cost(n, s) == n                     # n <= s + 1
        if n >= 2:
            assert mixed_cost(n, 1) == n * (n + 1) // 2 - 1  # s = 1


def test_mixed_split_attains_the_cost():
    for t in range(2, 70):
        for m in range(1, 10):
            y = mixed_split(t, m)
            rest = 1 if t - y == 1 else (math.inf if m == 1 else mixed_cost(t - y, m - 1))
            cost = 1 + rest if y == 1 else y + rest + mixed_cost(y, m)
            assert cost == mixed_cost(t, m), (t, m, y)


def test_headline_time_model():
    # BASELINES.md: at T = 1000 with 5% of T in slots, a backward costing two forwards, HSM ~1.65x BPTT's time
    # and the mixed policy ~1.33x (the paper's "95% memory for about a third more time")
    T, m = 1000, resolve_slots(1000, budget=0.05)
    assert m == 50
    assert relative_time(optimal_cost(T, m), T) == pytest.approx(1.65, abs=0.01)
    assert relative_time(mixed_cost(T, m), T) == pytest.approx(1.33, abs=0.01)


def test_plans_carry_their_predictions():
    p, q = hsm_plan(300, 9), mixed_plan(300, 9)
    assert p.predicted_forward_steps == p.forward_steps == optimal_cost(300, 9)
    assert q.predicted_forward_steps == q.forward_steps == mixed_cost(300, 9)
    assert p.slots == q.slots == 9


# ---------------------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("t, m", [(-1, 3), (5, 0), (5, -2), (5, 1.5), (2.0, 3), (True, 3), (5, True)])
def test_cost_rejects_bad_arguments(t, m):
    with pytest.raises(ValueError):
        optimal_cost(t, m)
    with pytest.raises(ValueError):
        mixed_cost(t, m)


def test_split_needs_two_steps():
    with pytest.raises(ValueError, match="t >= 2"):
        optimal_split(1, 3)


def test_budget_forms():
    assert resolve_slots(1000, slots=7) == 7
    assert resolve_slots(10, slots=50) == 50                    # more than useful is allowed
    assert resolve_slots(1000, budget=0.05) == 50
    assert resolve_slots(1000, budget=0.02) == 20
    assert resolve_slots(100, budget=0.025) == 3                # 2.5 rounds half up
    assert resolve_slots(100, budget=0.001) == 1                # never below one slot
    assert resolve_slots(70, budget=1.0) == 70
    assert resolve_slots(70, budget_bytes=1000, state_bytes=300) == 3
    assert resolve_slots(70, budget_bytes=300, state_bytes=300) == 1


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "exactly one budget"),
    ({"slots": 3, "budget": 0.1}, "exactly one budget"),
    ({"slots": 0}, "slots=0"),
    ({"slots": -2}, "slots=-2"),
    ({"slots": 2.5}, "slots=2.5"),
    ({"budget": 0}, "budget=0"),
    ({"budget": -0.1}, "budget=-0.1"),
    ({"budget": 1.5}, "budget=1.5"),
    ({"budget": float("nan")}, "budget=nan"),
    ({"budget": True}, "budget=True"),
    ({"budget_bytes": 299, "state_bytes": 300}, "need at least 300 bytes"),
    ({"budget_bytes": -5, "state_bytes": 300}, "budget_bytes=-5"),
    ({"budget_bytes": 1000}, "state_bytes"),
])
def test_impossible_budgets_are_named(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        resolve_slots(100, **kwargs)
