"""Revolve and its relatives from the ``checkpoint-schedules`` package (PyPI ``checkpoint-schedules``, module
``checkpoint_schedules``; Dolci, Maddison, Ham, Pallez, Herrmann), translated into our plan actions and run by
the one executor (``baselines.executor``), registered in ``revbench.methods`` as ``"revolve"``.

The package describes a schedule as an iterator of its own actions over "steps" ``n`` (the state before step
``n``, as ours). Each maps onto our plan actions (``baselines.schedules``):

- ``Forward(n0, n1)`` without writes -> ``Forward(n0, n1)``;
- ``Forward(n0, n1, write_ics=True)`` (restart data of state ``n0`` into RAM) -> state ``n0`` kept in a slot:
  state 0 is held from the start; any other ``n0`` was reached by the previous ``Forward``/``Record``, which
  gets ``store=True``;
- ``Forward(n0, n1, write_adj_deps=True, WORK)`` followed by ``Reverse(n1, n0)`` -> ``Backward(n0, n1)`` (re-run
  with autograd, then backpropagate);
- ``Forward(n0, n0 + 1, write_adj_deps=True, RAM)`` (mixed schedule) -> ``Record(n0)``: the step's graph takes
  a slot; its later ``Move(n0, RAM, WORK)`` + ``Reverse(n0 + 1, n0)`` -> ``BackwardRecorded(n0)``;
- ``Copy(n, RAM, WORK)`` -> nothing (the next action starts from stored state ``n``); ``Move(n, RAM, WORK)`` of
  a state -> ``Free(n)`` after the next action, which starts from ``n`` (none when that action is a ``Record``:
  the record takes over the slot);
- ``EndForward``, ``EndReverse`` -> nothing. Anything else (disk storage, a copy of a recorded step, a forward
  with adjoint data not followed by its reverse) raises ``PlanError``: it does not map.

Counting. The package's ``snapshots_in_ram`` counts forward restart data held in RAM, state 0 included (it is
written like any other: ``Forward(0, n1, write_ics=True)``), and the state the forward is advancing (WORK) not:
exactly our ``slots`` (``gruslys``' meaning). A step's forward with ``write_adj_deps`` is one forward step
evaluation, as our ``Backward``'s re-run with autograd is; the package's ``Reverse`` evaluates nothing. So the
translated plan's ``forward_steps`` must equal ``baselines.gruslys.optimal_cost(T, m)`` for Revolve and
Multistage (binomial checkpointing is optimal) and ``mixed_cost(T, m)`` for the mixed schedule; the executor
checks it on every run (and ``tests/test_peers.py`` for many ``(T, m)``: an independent check of our dynamic
programme). Slots beyond ``T - 1`` cannot be used: the package is given ``min(m, T - 1)`` (at least 1).

Schedules offered (``schedule=``):

- ``"revolve"``: ``checkpoint_schedules.Revolve`` (Griewank and Walther's Revolve, via the H-Revolve authors'
  sequence generator). Its table is built in pure Python, O(T^2 m) (about 13 s at T = 1000, m = 50 on a busy
  2-core machine, cached per (T, m) for the process).
- ``"multistage"``: ``MultistageCheckpointSchedule(T, m, 0)`` (binomial checkpointing in closed form, all
  snapshots in RAM): the same cost as Revolve, built in milliseconds.
- ``"mixed"``: ``MixedCheckpointSchedule(T, m, storage=RAM)`` (Maddison 2024: a slot holds either a state or one
  step's adjoint dependencies, i.e. our recorded step graph; the package assumes both the same size, our
  ``alpha = 1``).

Not offered, because they do not map onto one level of memory: ``HRevolve``, ``DiskRevolve``,
``PeriodicDiskRevolve`` and ``TwoLevelCheckpointSchedule`` (they place snapshots on disk as well as in RAM, and
their schedules are optimal for read/write costs we do not have), ``SingleMemoryStorageSchedule`` (store
everything: that is ``bptt``), ``SingleDiskStorageSchedule`` (disk) and ``NoneCheckpointSchedule`` (no
adjoint at all).
"""
from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from functools import lru_cache

from baselines.gruslys import mixed_cost, optimal_cost, resolve_slots
from baselines.plan_methods import _PlanMethod
from baselines.schedules import (Backward, BackwardRecorded, Forward, Free, Plan, PlanError, Record,
                                 check_length)
from revbench.core.protocol import MethodUnavailable


def _cs():
    """The checkpoint-schedules package, imported when first needed (revbench runs without it; revolve then
    reports itself unavailable with this reason)."""
    try:
        import checkpoint_schedules
    except ImportError as exc:
        raise MethodUnavailable(f"method 'revolve' needs the checkpoint-schedules package (pip install "
                                f"checkpoint-schedules): {exc}") from None
    return checkpoint_schedules

SCHEDULES = ("revolve", "multistage", "mixed")


@contextmanager
def _deep_recursion(T: int):
    """The package's Revolve generator recurses about once per step: allow that for long segments."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, 20 * T + 1000))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def package_schedule(T: int, slots: int, schedule: str = "revolve"):
    """The package's schedule object for ``T`` steps and ``slots`` snapshots in RAM (clamped to 1 .. T-1)."""
    cs = _cs()
    s = max(1, min(slots, T - 1))
    if schedule == "revolve":
        return cs.Revolve(T, s)
    if schedule == "multistage":
        return cs.MultistageCheckpointSchedule(T, s, 0)
    if schedule == "mixed":
        return cs.MixedCheckpointSchedule(T, s, storage=cs.StorageType.RAM)
    raise ValueError(f"revolve: schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def translate(actions, T: int) -> list:
    """Our plan actions for the package's action sequence over ``T`` steps (see the module docstring)."""
    cs = _cs()
    out = []
    held = {0: "state"}        # what the package holds per step: "state" (restart data) or "record" (adj deps)
    free_after = set()         # states moved to WORK: freed once the next action has started from them
    pending = None             # (n0, n1): a WORK forward with adjoint dependencies, waiting for its Reverse
    moved_record = None        # a recorded step moved to WORK, waiting for its Reverse

    def emit(action, start):
        out.append(action)
        if start in free_after:
            free_after.discard(start)
            if not isinstance(action, Record):            # a record takes over its start's slot itself
                out.append(Free(start))
                held.pop(start, None)

    def keep_reached(n):
        """State n (reached by the last Forward/Record) is to be kept: that action stores it."""
        if held.get(n) == "state":
            return
        last = next((i for i in range(len(out) - 1, -1, -1) if not isinstance(out[i], Free)), None)
        a = None if last is None else out[last]
        if isinstance(a, Forward) and a.stop == n:
            out[last] = Forward(a.start, a.stop, store=True)
        elif isinstance(a, Record) and a.step + 1 == n:
            out[last] = Record(a.step, store=True)
        else:
            raise PlanError(f"revolve: the schedule keeps state {n}, which its previous action did not reach")
        held[n] = "state"

    for act in actions:
        if pending is not None and not isinstance(act, (cs.Reverse, cs.EndForward)):
            raise PlanError(f"revolve: a forward with adjoint dependencies over {pending} is not followed by its "
                            f"reverse (got {act!r}): this schedule does not map onto our actions")
        if isinstance(act, cs.Forward):
            n0, n1 = act.n0, act.n1
            if not 0 <= n0 < n1 <= T:
                raise PlanError(f"revolve: {act!r} is outside the segment of {T} steps")
            if (act.write_ics or act.write_adj_deps) and act.storage not in (cs.StorageType.RAM, cs.StorageType.WORK):
                raise PlanError(f"revolve: {act!r} stores data on {act.storage!r}: not one level of memory")
            if act.write_ics:
                keep_reached(n0)
            if act.write_adj_deps and act.storage == cs.StorageType.WORK:
                pending = (n0, n1)
            elif act.write_adj_deps:
                if n1 != n0 + 1:
                    raise PlanError(f"revolve: {act!r} stores several steps' adjoint data: not one recorded step")
                emit(Record(n0), n0)
                held[n0] = "record"
            else:
                emit(Forward(n0, n1), n0)
        elif isinstance(act, cs.Reverse):
            n1, n0 = act.n1, act.n0
            if pending == (n0, n1):
                emit(Backward(n0, n1), n0)
                pending = None
            elif moved_record == n0 and n1 == n0 + 1:
                out.append(BackwardRecorded(n0))
                moved_record = None
            else:
                raise PlanError(f"revolve: {act!r} has no matching forward with adjoint dependencies")
        elif isinstance(act, (cs.Copy, cs.Move)):
            n = act.n
            if act.to_storage != cs.StorageType.WORK or act.from_storage != cs.StorageType.RAM:
                raise PlanError(f"revolve: {act!r} moves data between other storage levels than RAM and the "
                                f"working state: not one level of memory")
            kind = held.get(n)
            if kind == "record":
                if isinstance(act, cs.Copy):
                    raise PlanError(f"revolve: {act!r} reuses a recorded step's graph, which backward consumes")
                held.pop(n)
                moved_record = n
            elif kind == "state":
                if isinstance(act, cs.Move):
                    free_after.add(n)
            else:
                raise PlanError(f"revolve: {act!r} reads step {n}, which the schedule does not hold")
        elif isinstance(act, (cs.EndForward, cs.EndReverse)):
            continue
        else:
            raise PlanError(f"revolve: unexpected action {act!r}")
    if pending is not None or moved_record is not None or free_after:
        raise PlanError("revolve: the schedule ended with work left undone")
    return out


@lru_cache(maxsize=256)
def revolve_plan(T: int, slots: int, schedule: str = "revolve", predicted: bool = True) -> Plan:
    """The package's ``schedule`` for ``T`` steps and ``slots`` slots as our ``Plan`` (cached: plans are immutable).
    ``predicted=True`` gives the executor the cost model's figure to check (``optimal_cost``, or ``mixed_cost``
    for the mixed schedule)."""
    T = check_length(T)
    slots = resolve_slots(T, slots=slots)
    if schedule not in SCHEDULES:
        raise ValueError(f"revolve: schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    with _deep_recursion(T), warnings.catch_warnings():
        # without numba the mixed schedule falls back to memoisation (same schedule) and says so every time
        warnings.filterwarnings("ignore", message="Numba not available", category=RuntimeWarning)
        actions = translate(list(package_schedule(T, slots, schedule)), T)
    cost = None
    if predicted:
        cost = mixed_cost(T, slots) if schedule == "mixed" else optimal_cost(T, slots)
    return Plan(T=T, actions=tuple(actions), policy=f"cs-{schedule}", slots=slots, predicted_forward_steps=cost,
                params={"schedule": schedule})


class Revolve(_PlanMethod):
    """Revolve (Griewank and Walther 2000) as scheduled by the ``checkpoint-schedules`` package, run by our
    executor: the recomputation-minimising policy for ``m`` slots, like ``gruslys(policy="hsm")`` but from
    independent code.

    Budget: ``slots`` (stored states, state 0 included: the meaning of ``gruslys``' slots, and the package's
    ``snapshots_in_ram``) or ``budget`` (fraction of T in (0, 1]: max(1, round-half-up(budget * T)) slots); none
    given means ``budget=0.05``. ``schedule``: ``"revolve"`` (default), ``"multistage"`` or ``"mixed"`` (see the
    module docstring, which also says which of the package's schedules are left out and why).
    """

    name = "revolve"

    def __init__(self, slots: int | None = None, budget: float | None = None, schedule: str = "revolve"):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"revolve: schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if slots is None and budget is None:
            budget = 0.05
        try:
            resolve_slots(1, slots=slots, budget=budget)
        except ValueError as exc:
            raise ValueError(str(exc).replace("gruslys", "revolve")) from None
        self.slots, self.budget, self.schedule = slots, budget, schedule

    @classmethod
    def supports(cls, cell: str, kind: str = "lm") -> tuple[bool, str]:
        try:
            _cs()
        except MethodUnavailable as exc:
            return False, str(exc)
        return super().supports(cell, kind)

    def options(self):
        opts = {k: v for k, v in (("slots", self.slots), ("budget", self.budget)) if v is not None}
        opts["schedule"] = self.schedule
        return opts

    def make_plan(self, chain, carry):
        m = resolve_slots(chain.T, slots=self.slots, budget=self.budget)
        key = (chain.T, m)
        if key not in self._plans:
            self._plans[key] = revolve_plan(chain.T, m, self.schedule)
        return self._plans[key]


__all__ = ["Revolve", "revolve_plan", "translate", "package_schedule", "SCHEDULES"]
