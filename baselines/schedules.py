"""Checkpointing policies as plans: lists of small actions that one executor runs.

Every memory strategy that recomputes answers two questions: which states are
kept, and which stretches are re-run with autograd when the backward pass needs
them. A :class:`Plan` spells the answer out as a list of actions over step
indices of a segment of ``T`` steps (state ``t`` is the state *before* step
``t``; state 0 is the segment's initial state, state ``T`` the final one):

``Forward(start, stop, store)``
    advance from state ``start`` to state ``stop`` without autograd; with
    ``store=True`` keep the state reached in a slot.
``Backward(start, stop)``
    re-run steps ``start .. stop-1`` with autograd from state ``start`` and
    backpropagate the gradient waiting at state ``stop`` down to ``start``
    (all ``stop - start`` steps' activations are alive at once).
``Record(step, store)``
    run one step with autograd and keep its graph (the step's internal
    activations) in a slot until the gradient reaches it; the record takes
    over the slot of state ``step`` (which is dropped: the graph holds what the
    step's backward needs). With ``store=True`` state ``step + 1`` is kept too.
``BackwardRecorded(step)``
    backpropagate the gradient waiting at state ``step + 1`` through the kept
    graph of ``step`` and drop it.
``Free(index)``
    drop stored state ``index``.

The executor (``baselines.executor``) holds state 0 in a slot at the start and
one *working* state: the last state an action reached. A ``Forward``,
``Backward`` or ``Record`` starts from a stored state or from the working
state; the working state is not counted as a slot (the convention of Gruslys
et al.'s ``m``: the state a recomputation is advancing is transient). Slots in
use = stored states + kept step graphs.

Store-all BPTT is one action, ``Backward(0, T)``. Chen et al.'s plans are in
``baselines.checkpointing``, Gruslys et al.'s in ``baselines.gruslys``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class PlanError(ValueError):
    """A plan that cannot run: a state it needs is not held, a step is backpropagated twice, ..."""


@dataclass(frozen=True)
class Forward:
    """Advance state ``start`` to state ``stop`` without autograd; ``store`` keeps state ``stop`` in a slot."""
    start: int
    stop: int
    store: bool = False

    @property
    def steps(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Backward:
    """Re-run steps ``start .. stop-1`` with autograd and backpropagate from state ``stop`` to state ``start``."""
    start: int
    stop: int

    @property
    def steps(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Record:
    """Run step ``step`` with autograd and keep its graph in the slot of state ``step`` (which is dropped)."""
    step: int
    store: bool = False

    @property
    def steps(self) -> int:
        return 1


@dataclass(frozen=True)
class BackwardRecorded:
    """Backpropagate from state ``step + 1`` through the kept graph of ``step``, then drop the graph."""
    step: int

    @property
    def steps(self) -> int:
        return 0


@dataclass(frozen=True)
class Free:
    """Drop stored state ``index``."""
    index: int

    @property
    def steps(self) -> int:
        return 0


Action = Forward | Backward | Record | BackwardRecorded | Free


@dataclass(frozen=True)
class Plan:
    """A checkpointing policy for one segment of ``T`` steps.

    ``policy`` names the generator (e.g. ``"hsm"``), ``slots`` is the slot budget the plan was made for (None when
    the policy has no budget), ``predicted_forward_steps`` the cost model's figure (None when there is none): the
    executor checks it against what it counts.
    """
    T: int
    actions: tuple
    policy: str
    slots: int | None = None
    predicted_forward_steps: int | None = None
    params: dict = field(default_factory=dict)

    @property
    def forward_steps(self) -> int:
        """Step evaluations the plan asks for (with or without autograd), read off its actions."""
        return sum(a.steps for a in self.actions)

    def __len__(self) -> int:
        return len(self.actions)


def check_length(T) -> int:
    """``T`` as a positive int, or a ValueError naming it."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"a plan needs a segment length T >= 1 (an int), got {T!r}")
    return T


def store_all_plan(T: int) -> Plan:
    """Plain BPTT: one autograd stretch over the whole segment (every step's activations alive at once)."""
    T = check_length(T)
    return Plan(T=T, actions=(Backward(0, T),), policy="store-all", predicted_forward_steps=T)


def split_tree_plan(T: int, slots: int | None, split, policy: str, predicted=None, record_at_one=False) -> Plan:
    """A plan from a split rule: the shape shared by Gruslys' policies and recursive checkpointing.

    To backpropagate ``n`` steps from stored state ``a`` with ``m`` slots (``a``'s slot included): if ``n == 1``
    run that step with autograd and backpropagate it; else take ``y = split(n, m)``, advance ``y`` steps without
    autograd and keep state ``a + y`` (working state only, when one step is left after it), solve
    ``(n - y, m - 1)`` from there, then ``(y, m)`` from ``a``. With ``record_at_one``, ``y == 1`` means "record
    step ``a``" (the mixed policy): the step's graph takes ``a``'s slot, ``(n - 1, m - 1)`` is solved from
    ``a + 1``, then the recorded step is backpropagated. A subproblem consumes its start state (frees it last).

    Iterative (an explicit stack): policies with many slots nest ``T`` levels deep.
    """
    T = check_length(T)
    actions = []
    # stack items: ("solve", a, n, m, stored) or ("do", action)
    stack = [("solve", 0, T, slots, True)]
    while stack:
        item = stack.pop()
        if item[0] == "do":
            actions.append(item[1])
            continue
        _, a, n, m, stored = item
        if n == 1:
            actions.append(Backward(a, a + 1))
            if stored:
                actions.append(Free(a))
            continue
        y = split(n, m)
        if not 1 <= y < n:
            raise PlanError(f"{policy}: split rule gave y={y!r} for n={n}, m={m}; need 1 <= y < n")
        keep = n - y > 1
        if record_at_one and y == 1:
            # the record takes over a's slot; a is not needed afterwards
            todo = [("do", Record(a, store=keep)), ("solve", a + 1, n - 1, None if m is None else m - 1, keep),
                    ("do", BackwardRecorded(a))]
        else:
            todo = [("do", Forward(a, a + y, store=keep)), ("solve", a + y, n - y, None if m is None else m - 1, keep),
                    ("solve", a, y, m, stored)]
        stack.extend(reversed(todo))
    return Plan(T=T, actions=tuple(actions), policy=policy, slots=slots, predicted_forward_steps=predicted)
