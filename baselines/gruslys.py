"""Memory-efficient BPTT (Gruslys, Munos, Danihelka, Lanctot and Graves 2016, arXiv 1606.03401).

Costs are counted in forward step evaluations, the re-run with autograd that each step needs before its
backward included. ``m`` slots hold states; state 0 takes one of them; the working state a recomputation is
advancing is not counted (see ``baselines.schedules``).

BPTT-HSM (hidden-state memorisation), the recurrence of the paper::

    C(0, m) = 0,  C(1, m) = 1,  C(t, 0) = inf for t >= 2      (no slot: only a single step from the working state)
    C(t, m) = min over 1 <= y < t of  y + C(t - y, m - 1) + C(y, m)
    D(t, m) = the smallest minimising y

It reproduces ``C(t, 1) = t(t+1)/2`` and ``C(t, m) = 2t - 1`` for ``m >= t - 1`` (tested; the table uses the
latter as a shortcut), and Revolve's binomial costs (t = 200: m = 5 -> 990, m = 20 -> 578; t = 60, m = 7 -> 195).

Mixed policy (``policy="mixed"``): Maddison's verified recurrence with alpha = 1 (a step's internal activations
take one slot, like a state), the one behind ``checkpoint_schedules``' ``MixedCheckpointSchedule``::

    opt(0, s) = 0,  opt(1, s) = 1,  opt(n, 0) = inf for n >= 2
    opt(n, s) = min( 1 + opt(n - 1, s - 1),                              # record step a: keep its graph
                     min over 2 <= y < n of  y + opt(n - y, s - 1) + opt(y, s) )   # as HSM

which gives ``opt(n, s) = n`` for ``n <= s + 1`` and ``n(n+1)/2 - 1`` for ``s = 1``, as in the notes (tested).
In this framework "storing a step's internal activations" is keeping the autograd graph of that one step alive
(``Record``); its real size is the step's saved tensors, which for an LSTM is several states' worth: the slot
count models alpha = 1, the byte budget counts states only.

Both tables are built lazily with numpy, a row at a time (O(t^2 m) work: about 0.1 s for t = 1000, m = 50,
about 2 s for the worst case t = 1000, m = 998) and cached for the process.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from baselines.schedules import Plan, check_length, split_tree_plan

_INF = 1 << 29          # larger than any cost in the tables (t(t+1)/2 < 2^29 for t < 32000)
_MAX_T = 30000
_TABLES: dict = {}      # policy -> (C, D)


def _check_t(t, name="t") -> int:
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
        raise ValueError(f"{name} must be a non-negative int (number of steps), got {t!r}")
    if t > _MAX_T:
        raise ValueError(f"{name}={t} is too long for the cost tables (at most {_MAX_T} steps)")
    return int(t)


def _check_slots(slots) -> int:
    if isinstance(slots, bool) or not isinstance(slots, numbers.Integral) or slots < 1:
        raise ValueError(f"slots must be an int >= 1 (stored states, the initial one included), got {slots!r}")
    return int(slots)


def _build(T: int, M: int, mixed: bool, shortcut: bool = True):
    """Cost and argmin tables ``C[t, m]``, ``D[t, m]`` for ``t <= T``, ``m <= M`` (see the module docstring)."""
    C = np.full((T + 1, M + 1), _INF, dtype=np.int32)
    D = np.zeros((T + 1, M + 1), dtype=np.int32)
    C[0, :] = 0
    if T >= 1:
        C[1, :] = 1
    ar = np.arange(T + 1, dtype=np.int32)
    for t in range(2, T + 1):
        k = min(M, t - 2) if shortcut else M      # columns m >= t - 1 have the closed form
        if k >= 1:
            vals = C[t - 1:0:-1, 0:k] + C[1:t, 1:k + 1]          # C(t - y, m - 1) + C(y, m), y = 1 .. t-1
            vals += ar[1:t, None]                                   # + y
            if mixed:
                vals[0, :] -= 1                                     # y = 1 is "record": 1 + opt(t - 1, s - 1)
            idx = vals.argmin(axis=0)                               # first minimum: the smallest y
            best = vals[idx, np.arange(k)]
            np.minimum(best, _INF, out=best)
            C[t, 1:k + 1] = best
            D[t, 1:k + 1] = idx + 1
        if k < M:
            C[t, k + 1:] = t if mixed else 2 * t - 1
            D[t, k + 1:] = 1
    return C, D


def _table(policy: str, t: int, m: int):
    C, D = _TABLES.get(policy, (None, None))
    if C is None or C.shape[0] <= t or C.shape[1] <= m:
        T = max(t, 0 if C is None else C.shape[0] - 1)
        M = max(m, 0 if C is None else C.shape[1] - 1)
        C, D = _build(T, M, mixed=(policy == "mixed"))
        _TABLES[policy] = (C, D)
    return C, D


def optimal_cost(t: int, slots: int) -> int:
    """BPTT-HSM's minimal forward step evaluations C(t, m) to backpropagate ``t`` steps with ``slots`` slots."""
    t, m = _check_t(t), _check_slots(slots)
    if t == 0:
        return 0
    if m >= t - 1:
        return 2 * t - 1
    C, _ = _table("hsm", t, m)
    return int(C[t, m])


def optimal_split(t: int, slots: int) -> int:
    """D(t, m): how many steps to advance before keeping the next state (the smallest optimal y, 1 <= y < t)."""
    t, m = _check_t(t), _check_slots(slots)
    if t < 2:
        raise ValueError(f"a split needs t >= 2 steps, got t={t}")
    if m >= t - 1:
        return 1
    _, D = _table("hsm", t, m)
    return int(D[t, m])


def mixed_cost(t: int, slots: int) -> int:
    """Minimal forward step evaluations of the mixed policy (Maddison's recurrence, alpha = 1)."""
    t, m = _check_t(t), _check_slots(slots)
    if t == 0:
        return 0
    if m >= t - 1:
        return t
    C, _ = _table("mixed", t, m)
    return int(C[t, m])


def mixed_split(t: int, slots: int) -> int:
    """The mixed policy's choice: 1 = record the first step's graph; y >= 2 = advance y steps and keep that state."""
    t, m = _check_t(t), _check_slots(slots)
    if t < 2:
        raise ValueError(f"a split needs t >= 2 steps, got t={t}")
    if m >= t - 1:
        return 1
    _, D = _table("mixed", t, m)
    return int(D[t, m])


def hsm_plan(T: int, slots: int) -> Plan:
    """The optimal BPTT-HSM plan for ``T`` steps and ``slots`` slots (its forward steps equal ``optimal_cost``)."""
    T, m = check_length(T), _check_slots(slots)
    return split_tree_plan(T, m, lambda n, k: optimal_split(n, min(k, n)), policy="hsm",
                           predicted=optimal_cost(T, m))


def mixed_plan(T: int, slots: int) -> Plan:
    """The mixed (states + recorded step graphs) plan; its forward steps equal ``mixed_cost``."""
    T, m = check_length(T), _check_slots(slots)
    return split_tree_plan(T, m, lambda n, k: mixed_split(n, min(k, n)), policy="mixed",
                           predicted=mixed_cost(T, m), record_at_one=True)


def relative_time(forward_steps: int, T: int, backward_cost: float = 2.0) -> float:
    """Time model of the paper's headline: (forward steps + T backward steps) / BPTT's (T + T backward steps),
    a backward step costing ``backward_cost`` forward steps."""
    T = check_length(T)
    return (forward_steps + backward_cost * T) / (T + backward_cost * T)


def resolve_slots(T: int, slots=None, budget=None, budget_bytes=None, state_bytes: int | None = None) -> int:
    """The slot count from exactly one budget form.

    - ``slots``: an int >= 1, used as is (more than ``T - 1`` slots cannot be used; the cost is then ``2T - 1``);
    - ``budget``: a fraction of ``T`` in (0, 1]: ``max(1, floor(budget * T + 0.5))`` slots (round half up);
    - ``budget_bytes``: bytes for stored states: ``budget_bytes // state_bytes`` slots, where ``state_bytes`` is the
      size of one stored state (``Carry.nbytes()``); it must hold at least one state.
    An impossible budget raises ValueError naming it and what is required.
    """
    T = check_length(T)
    given = {k: v for k, v in (("slots", slots), ("budget", budget), ("budget_bytes", budget_bytes)) if v is not None}
    if len(given) != 1:
        raise ValueError("gruslys needs exactly one budget: slots= (states kept, state 0 included), budget= (a "
                         "fraction of the segment length in (0, 1]) or budget_bytes= (bytes for stored states); got "
                         + (", ".join(f"{k}={v!r}" for k, v in given.items()) or "none"))
    if slots is not None:
        if isinstance(slots, bool) or not isinstance(slots, numbers.Integral) or slots < 1:
            raise ValueError(f"gruslys: slots={slots!r} is impossible; need an int >= 1 (state 0 takes one slot)")
        return int(slots)
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not math.isfinite(budget) \
                or not 0 < budget <= 1:
            raise ValueError(f"gruslys: budget={budget!r} is impossible; need a fraction of the segment length T in "
                             f"(0, 1] (e.g. 0.05 keeps 5% of T's states)")
        return max(1, math.floor(budget * T + 0.5))
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, numbers.Integral) or budget_bytes < 0:
        raise ValueError(f"gruslys: budget_bytes={budget_bytes!r} is impossible; need a non-negative int of bytes")
    if state_bytes is None or state_bytes < 1:
        raise ValueError("gruslys: budget_bytes needs the size of one stored state (state_bytes >= 1)")
    n = int(budget_bytes) // int(state_bytes)
    if n < 1:
        raise ValueError(f"gruslys: budget_bytes={budget_bytes} cannot hold one stored state of this model and batch; "
                         f"need at least {state_bytes} bytes")
    return n


__all__ = ["optimal_cost", "optimal_split", "mixed_cost", "mixed_split", "hsm_plan", "mixed_plan", "relative_time",
           "resolve_slots"]
