"""Gradient checkpointing (Chen, Xu, Zhang and Guestrin 2016, arXiv 1604.06174) as plans.

Flat form (``chen_plan``): split the ``T`` steps into ``k`` pieces (default ``k = round(sqrt(T))``), sizes as
equal as possible, the longer ones first. Forward without autograd over all pieces but the last, keeping each
piece's start; then, last piece first, re-run each piece with autograd and backpropagate through it. The last
piece's start is only the working state (it is used once, right away). Costs, exact:

- forward step evaluations: ``2T - floor(T/k)`` (every step once with autograd, all but the last piece once
  more without);
- slots (stored states, state 0 included): ``max(1, k - 1)``;
- steps alive under autograd at once: ``ceil(T/k)``.

Recursive form (``recursive_plan``), Chen's ``g(n) = k + g(n/(k+1))`` with ``k = 1``: to backpropagate ``n``
steps from a stored state, advance ``ceil(n/2)`` steps, keep that state, solve the right half, free it, solve the
left half (a single step is re-run with autograd). Forward steps ``F(n) = ceil(n/2) + F(floor(n/2)) +
F(ceil(n/2))``, ``F(1) = 1``; for ``T = 2^j`` that is ``T + (T/2) log2 T``. Slots: ``max(1, floor(log2 T))``;
one step alive under autograd at a time.
"""
from __future__ import annotations

import math
from functools import lru_cache

from baselines.schedules import Backward, Forward, Free, Plan, check_length, split_tree_plan


def default_segments(T: int) -> int:
    """Chen's choice: ``round(sqrt(T))`` pieces (at least 1)."""
    return max(1, round(math.sqrt(check_length(T))))


def check_segments(T: int, segments) -> int:
    if segments is None:
        return default_segments(T)
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= T:
        raise ValueError(f"checkpoint: segments must be an int from 1 to T={T} (the number of pieces the segment is "
                         f"split into; None picks round(sqrt(T)) = {default_segments(T)}), got {segments!r}")
    return segments


def piece_bounds(T: int, k: int) -> list[int]:
    """Boundaries ``0 = b_0 < b_1 < ... < b_k = T`` of ``k`` pieces, sizes differing by at most one, longer first."""
    q, r = divmod(T, k)
    bounds = [0]
    for i in range(k):
        bounds.append(bounds[-1] + q + (1 if i < r else 0))
    return bounds


def chen_plan(T: int, segments: int | None = None) -> Plan:
    """Flat sqrt(T) checkpointing with ``segments`` pieces (see the module docstring)."""
    T = check_length(T)
    k = check_segments(T, segments)
    b = piece_bounds(T, k)
    actions = []
    for i in range(k - 1):
        # keep the starts of pieces 1 .. k-2; the last piece's start stays the working state
        actions.append(Forward(b[i], b[i + 1], store=i + 1 < k - 1))
    for i in range(k - 1, -1, -1):
        actions.append(Backward(b[i], b[i + 1]))
        if i < k - 1 or k == 1:
            actions.append(Free(b[i]))
    return Plan(T=T, actions=tuple(actions), policy="chen", slots=chen_slots(T, k),
                predicted_forward_steps=chen_forward_steps(T, k), params={"segments": k})


def chen_forward_steps(T: int, k: int) -> int:
    """Exact forward step evaluations of ``chen_plan(T, k)``: ``2T - floor(T/k)``."""
    return 2 * T - T // k


def chen_slots(T: int, k: int) -> int:
    """Stored states at peak in ``chen_plan(T, k)`` (state 0 included): ``max(1, k - 1)``."""
    return max(1, k - 1)


def _bisect(n: int, m) -> int:
    return (n + 1) // 2


def recursive_plan(T: int) -> Plan:
    """Chen's recursive form with ``k = 1`` (bisection): O(log T) stored states, O(T log T) forward work."""
    T = check_length(T)
    plan = split_tree_plan(T, None, _bisect, policy="chen-recursive", predicted=recursive_forward_steps(T))
    return Plan(T=T, actions=plan.actions, policy=plan.policy, slots=recursive_slots(T),
                predicted_forward_steps=plan.predicted_forward_steps, params={"recursive": True})


@lru_cache(maxsize=None)
def _recursive_cost(n: int) -> int:
    if n <= 1:
        return n
    y = (n + 1) // 2
    return y + _recursive_cost(n - y) + _recursive_cost(y)


def recursive_forward_steps(T: int) -> int:
    """Exact forward step evaluations of ``recursive_plan(T)`` (the recurrence in the module docstring)."""
    return _recursive_cost(check_length(T))     # recursion depth is log2 T


def recursive_slots(T: int) -> int:
    """Stored states at peak in ``recursive_plan(T)`` (state 0 included): ``max(1, floor(log2 T))``."""
    return max(1, check_length(T).bit_length() - 1)


__all__ = ["default_segments", "piece_bounds", "chen_plan", "chen_forward_steps", "chen_slots", "recursive_plan",
           "recursive_forward_steps", "recursive_slots"]
