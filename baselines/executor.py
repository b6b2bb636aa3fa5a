"""One executor for every checkpointing plan, and a counting stand-in for a segment.

``execute(plan, seg, carry0)`` runs a :class:`baselines.schedules.Plan` over anything with the step API of
``revbench.models.segment.Segment`` (``advance``, ``leaf``, ``backward``, ``counters``; see SEGMENT.md) and returns the
per-step losses, the final state and what it counted:

- ``forward_steps``: step evaluations it ran (with or without autograd). It must equal the plan's own figure,
  the cost model's prediction when the plan has one, and the increase of ``seg.counters["forward_steps"]``;
  any difference raises ``PlanError``.
- ``stored_states_peak``: most states held in slots at once (state 0 included, the working state not).
- ``recorded_steps_peak``: most kept one-step graphs at once (mixed policy).
- ``slots_peak``: most slots in use at once (stored states + kept graphs): what a budget bounds.
- ``graph_steps_peak``: most steps whose autograd graph was alive at once (an autograd stretch plus kept graphs):
  the activation side of the memory.

The executor checks the plan as it goes: a start state that is not held, a step backpropagated twice or not at
all, a gradient taken at the wrong state, or a slot budget exceeded raise ``PlanError`` naming the action.

``CountingSegment`` runs plans without torch: states are step indices, and it checks that gradients flow as in
real autograd (each stretch backpropagated from the gradient of exactly the state it ends at, every step once).
``simulate(plan)`` runs a plan over it and returns the counts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from baselines.schedules import Backward, BackwardRecorded, Forward, Free, Plan, PlanError, Record


@dataclass
class ExecutionStats:
    """What the executor counted while running a plan (definitions in the module docstring)."""
    forward_steps: int = 0
    stored_states_peak: int = 0
    recorded_steps_peak: int = 0
    slots_peak: int = 0
    graph_steps_peak: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Execution:
    """The result of ``execute``: per-step losses, the final state (Carry(T)) and the counts."""
    losses: list            # per step, detached, in step order
    final: object           # Carry(T)
    stats: ExecutionStats
    initial_grads: object = None  # the gradient with respect to state 0 (only with grad_initial=True)


def execute(plan: Plan, seg, carry0, check_budget: bool = True, grad_final=None,
            grad_initial: bool = False) -> Execution:
    """Run ``plan`` over ``seg`` from ``carry0`` (state 0). See the module docstring.

    ``grad_final``: the gradient arriving at state T from later computation (``seg.backward``'s ``grads_end``
    format; None: nothing comes after the segment). ``grad_initial=True``: state 0 gets a leaf too, and the
    gradient with respect to it is returned in ``Execution.initial_grads`` (chaining an encoder to a decoder)."""
    if plan.T != seg.T:
        raise PlanError(f"the plan is for T={plan.T} steps but the segment has T={seg.T}")
    run = _Run(plan, seg, carry0, check_budget, grad_final, grad_initial)
    counter0 = seg.counters["forward_steps"]
    handlers = {Forward: run.forward, Backward: run.backward, Record: run.record,
                BackwardRecorded: run.backward_recorded, Free: run.free}
    run.note()
    for i, action in enumerate(plan.actions):
        handler = handlers.get(type(action))
        if handler is None:
            raise PlanError(f"plan {plan.policy!r}, action {i}: unknown action {action!r}")
        run.where = f"plan {plan.policy!r}, action {i} ({action})"
        handler(action)          # temporaries die with the call: only slots and the working state stay alive
        run.note()
    return run.result(seg.counters["forward_steps"] - counter0)


class _Run:
    """The executor's state while a plan runs (see the module docstring)."""

    def __init__(self, plan, seg, carry0, check_budget, grad_final=None, grad_initial=False):
        self.plan, self.seg, self.check_budget, self.T = plan, seg, check_budget, plan.T
        self.grad_initial = grad_initial
        self.stats = ExecutionStats()
        self.stored = {0: carry0}
        self.records = {}                   # step -> (input leaf or None, loss, output carry)
        self.work = None                    # (index, carry): the working state
        self.adj_at, self.adj = plan.T, grad_final  # gradient waiting at state adj_at (None at T: nothing later)
        self.losses = [None] * plan.T
        self.final = None
        self.where = f"plan {plan.policy!r}"

    # ------------------------------------------------------------------ bookkeeping
    def source(self, t):
        if t in self.stored:
            return self.stored[t]
        if self.work is not None and self.work[0] == t:
            return self.work[1]
        raise PlanError(f"{self.where}: state {t} is not held (stored: {sorted(self.stored)}, working state: "
                        f"{None if self.work is None else self.work[0]})")

    def note(self, graph_steps: int = 0):
        st = self.stats
        used = len(self.stored) + len(self.records)
        st.stored_states_peak = max(st.stored_states_peak, len(self.stored))
        st.recorded_steps_peak = max(st.recorded_steps_peak, len(self.records))
        st.slots_peak = max(st.slots_peak, used)
        st.graph_steps_peak = max(st.graph_steps_peak, len(self.records) + graph_steps)
        if self.check_budget and self.plan.slots is not None and used > self.plan.slots:
            raise PlanError(f"{self.where}: plan {self.plan.policy!r} uses {used} slots, more than its budget of "
                            f"{self.plan.slots}")

    def check_range(self, a, b):
        if not 0 <= a < b <= self.T:
            raise PlanError(f"{self.where}: need 0 <= start < stop <= T={self.T}")

    def keep(self, t, carry):
        if t in self.stored:
            raise PlanError(f"{self.where}: state {t} is already stored")
        self.stored[t] = carry

    def take_loss(self, t, loss):
        if self.losses[t] is not None:
            raise PlanError(f"{self.where}: step {t} is backpropagated twice")
        self.losses[t] = loss.detach()

    def leaf(self, a, src):
        if a == 0 and not self.grad_initial:
            return None                                   # no gradient is needed for state 0
        return self.seg.leaf(src)

    # ------------------------------------------------------------------ actions
    def forward(self, action: Forward):
        a, b = action.start, action.stop
        self.check_range(a, b)
        carry = self.source(a)
        for t in range(a, b):
            carry, _ = self.seg.advance(t, carry, grad=False, loss=False)    # no loss: thrown away
        self.stats.forward_steps += b - a
        self.work = (b, carry)
        if b == self.T:
            self.final = carry
        if action.store:
            self.keep(b, carry)

    def backward(self, action: Backward):
        a, b = action.start, action.stop
        self.check_range(a, b)
        if b != self.adj_at:
            raise PlanError(f"{self.where}: the gradient is at state {self.adj_at}, not at state {b}")
        src = self.source(a)
        leaf = self.leaf(a, src)
        carry, stretch = (leaf if leaf is not None else src), []
        del src
        if self.work is not None and self.work[0] == a and a not in self.stored:
            self.work = None                              # a transient start is used once
        for t in range(a, b):
            carry, loss = self.seg.advance(t, carry, grad=True)
            stretch.append(loss)
        self.stats.forward_steps += b - a
        self.note(graph_steps=b - a)
        if b == self.T:
            self.final = carry
        self.seg.backward(stretch, carry, self.adj)
        for t, loss in zip(range(a, b), stretch):
            self.take_loss(t, loss)
        self.adj_at, self.adj = a, (leaf.grads() if leaf is not None else None)
        self.work = None

    def record(self, action: Record):
        a = action.step
        if not 0 <= a < self.adj_at:
            raise PlanError(f"{self.where}: step {a} is not before the gradient's state {self.adj_at}")
        if a in self.records:
            raise PlanError(f"{self.where}: step {a} is already recorded")
        src = self.source(a)
        self.stored.pop(a, None)                           # the record takes over state a's slot
        leaf = self.leaf(a, src)
        out, loss = self.seg.advance(a, leaf if leaf is not None else src, grad=True)
        self.stats.forward_steps += 1
        self.records[a] = (leaf, loss, out)
        self.work = (a + 1, out)
        if a + 1 == self.T:
            self.final = out
        if action.store:
            self.keep(a + 1, out)

    def backward_recorded(self, action: BackwardRecorded):
        a = action.step
        if a not in self.records:
            raise PlanError(f"{self.where}: step {a} has no kept graph")
        if self.adj_at != a + 1:
            raise PlanError(f"{self.where}: the gradient is at state {self.adj_at}, not at state {a + 1}")
        leaf, loss, out = self.records.pop(a)
        self.seg.backward([loss], out, self.adj)
        self.take_loss(a, loss)
        self.adj_at, self.adj = a, (leaf.grads() if leaf is not None else None)
        if self.work is not None and self.work[0] > a:
            self.work = None

    def free(self, action: Free):
        if action.index not in self.stored:
            raise PlanError(f"{self.where}: state {action.index} is not stored")
        del self.stored[action.index]
        if self.work is not None and self.work[0] == action.index:
            self.work = None

    # ------------------------------------------------------------------ end
    def result(self, counted: int) -> Execution:
        plan, st = self.plan, self.stats
        missing = [t for t, l in enumerate(self.losses) if l is None]
        if missing or self.adj_at != 0:
            raise PlanError(f"plan {plan.policy!r} ended with the gradient at state {self.adj_at}; steps never "
                            f"backpropagated: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if self.records:
            raise PlanError(f"plan {plan.policy!r} ended with kept graphs of steps {sorted(self.records)}")
        if self.final is None:
            raise PlanError(f"plan {plan.policy!r} never reached state T={self.T}")
        if not st.forward_steps == counted == plan.forward_steps:
            raise PlanError(f"plan {plan.policy!r}: forward steps disagree: executor {st.forward_steps}, segment "
                            f"counters {counted}, plan {plan.forward_steps}")
        if plan.predicted_forward_steps is not None and plan.predicted_forward_steps != st.forward_steps:
            raise PlanError(f"plan {plan.policy!r}: {st.forward_steps} forward steps, but its cost model predicts "
                            f"{plan.predicted_forward_steps}")
        return Execution(losses=self.losses, final=self.final, stats=st,
                         initial_grads=self.adj if self.grad_initial else None)


# ---------------------------------------------------------------------------------------------- counting segment
class _Adjoint:
    """The gradient with respect to state ``t`` (a marker)."""

    def __init__(self, t):
        self.t = t


class _Carry:
    """State ``t``; ``origin`` is the leaf its autograd graph starts from (None: no graph), ``start`` that step."""

    def __init__(self, t, graph=False, origin=None, start=None):
        self.t, self.graph, self.origin, self.start = t, graph, origin, start
        self.grad = None

    def grads(self):
        if self.grad is None:
            raise PlanError(f"the gradient of state {self.t} was read before any backward reached it")
        return self.grad


class _Loss:
    """The loss of step ``t``, attached to the graph of ``carry`` (the state the step produced)."""

    def __init__(self, t, carry):
        self.t, self.origin, self.start, self.graph = t, carry.origin, carry.start, carry.graph

    def detach(self):
        return float(self.t + 1)     # a distinct value per step, so the sum checks the order too


class CountingSegment:
    """A segment of ``T`` abstract steps with the step API of ``revbench.models.segment.Segment``, no torch.

    It counts ``advance`` calls in ``counters["forward_steps"]`` and checks the gradient flow: ``advance(t, c)``
    needs ``c`` to be state ``t``; ``backward(losses, carry_end, grads)`` needs ``carry_end``'s graph to run
    from one leaf (or from state 0 with no leaf) through exactly the steps of ``losses``, and ``grads`` to be the
    gradient of state ``carry_end.t`` (None only for state T); every step may be backpropagated once.
    """

    def __init__(self, T: int):
        self.T = T
        self.counters = {"forward_steps": 0, "reverse_steps": 0}
        self.done = [False] * T

    def start(self, state=None):
        return _Carry(0)

    def advance(self, t, carry, grad=False, loss=True):
        if carry.t != t:
            raise PlanError(f"advance({t}) was given state {carry.t}")
        if not 0 <= t < self.T:
            raise PlanError(f"advance({t}) is outside the segment of {self.T} steps")
        self.counters["forward_steps"] += 1
        if grad:
            if carry.graph:
                out = _Carry(t + 1, True, carry.origin, carry.start)
            else:
                out = _Carry(t + 1, True, None, t)
        else:
            out = _Carry(t + 1)
        return out, _Loss(t, out)

    def leaf(self, carry):
        c = _Carry(carry.t, True, None, carry.t)
        c.origin = c
        return c

    def backward(self, losses, carry_end=None, grads_end=None):
        if carry_end is None or not carry_end.graph:
            raise PlanError("backward needs the stretch's end state with its graph")
        a, b = carry_end.start, carry_end.t
        if b == self.T:
            if grads_end is not None:
                raise PlanError("a gradient was passed for the final state")
        elif not isinstance(grads_end, _Adjoint) or grads_end.t != b:
            raise PlanError(f"the stretch ends at state {b} but was given the gradient of "
                            f"{getattr(grads_end, 't', grads_end)!r}")
        steps = [l.t for l in losses]
        if steps != list(range(a, b)) or any(l.origin is not carry_end.origin or not l.graph for l in losses):
            raise PlanError(f"backward over steps {steps} does not match the graph of steps {a}..{b - 1}")
        if carry_end.origin is None and a != 0:
            raise PlanError(f"a graph from step {a} without a leaf: the gradient of state {a} would be lost")
        for t in range(a, b):
            if self.done[t]:
                raise PlanError(f"step {t} is backpropagated twice")
            self.done[t] = True
        if carry_end.origin is not None:
            if carry_end.origin.grad is not None:
                raise PlanError(f"the leaf of state {a} received a gradient twice")
            carry_end.origin.grad = _Adjoint(a)

    def finish(self):
        missing = [t for t, d in enumerate(self.done) if not d]
        if missing:
            raise PlanError(f"steps never backpropagated: {missing[:10]}")

    def final_state(self, carry):
        if carry.t != self.T:
            raise PlanError(f"the final state is state {carry.t}, not state {self.T}")
        return carry.t


def simulate(plan: Plan, check_budget: bool = True) -> ExecutionStats:
    """Run ``plan`` over a ``CountingSegment`` (no torch); returns what the executor counted."""
    seg = CountingSegment(plan.T)
    run = execute(plan, seg, seg.start(), check_budget=check_budget)
    seg.finish()
    seg.final_state(run.final)
    return run.stats


__all__ = ["ExecutionStats", "Execution", "execute", "CountingSegment", "simulate"]
