"""The recomputing baselines as methods (registered in ``revbench.methods``): a plan per chain length, run by
the one executor over any chain (the language model's segment, each side of the encoder-decoder).

- ``"checkpoint"``: Chen et al.'s checkpointing; ``segments=None`` (round(sqrt(T)) pieces) or an int;
  ``recursive=True`` for the bisecting O(log T)-memory form.
- ``"gruslys"``: Gruslys et al.'s optimal policy under a slot budget: exactly one of ``slots=`` (int),
  ``budget=`` (fraction of T) or ``budget_bytes=`` (bytes of stored states); none given means ``budget=0.05``.
  ``policy="hsm"`` (states only) or ``"mixed"`` (states and recorded step graphs).

The recomputing methods build a plan (``baselines.schedules``) and run it with ``baselines.executor``; they work
on every cell type (for reversible cells a stored state is the whole Carry: fixed-point integers and live buffer;
no word stack is kept). Their stats add to the segment's: ``forward_steps`` (step evaluations, recomputation
included), ``stored_states_peak`` (states in slots at once, state 0 included, the working state not),
``recorded_steps_peak``, ``slots_peak``, ``graph_steps_peak`` (steps whose autograd graph was alive at once),
``slots`` / ``segments`` (the plan's parameters).
"""
from __future__ import annotations

import numbers

import torch

from revbench.core.protocol import ChainResult, Method

from baselines.checkpointing import chen_plan, recursive_plan
from baselines.executor import execute
from baselines.gruslys import hsm_plan, mixed_plan, resolve_slots


class _PlanMethod(Method):
    """Runs a plan made per segment length (cached: plans depend only on T and the options)."""

    def __init__(self):
        self._plans = {}

    def make_plan(self, chain, carry):
        raise NotImplementedError

    def run_chain(self, chain, start, *, end=None, grad_end=None, grad_start=False):
        plan = self.make_plan(chain, start)            # ``end`` is not needed: a plan recomputes from state 0
        ex = execute(plan, chain, start, grad_final=grad_end, grad_initial=grad_start)
        stats = ex.stats.as_dict()
        stats["plan_policy"] = plan.policy
        stats.update(plan.params)
        if plan.slots is not None:
            stats["slots"] = plan.slots
        return ChainResult(loss=torch.stack(ex.losses).sum(), final=ex.final, start_grads=ex.initial_grads,
                           stats=stats)


class Checkpoint(_PlanMethod):
    """Chen et al. (2016): keep the state at each piece boundary, re-run each piece with autograd on the way back.

    ``segments``: number of pieces (None: round(sqrt(T))). ``recursive=True``: bisect down to single steps
    (O(log2 T) stored states, O(T log T) forward work); ``segments`` does not apply to it. On a chain whose
    length varies from batch to batch (a sentence), ``segments`` is an upper bound: a chain shorter than it is
    split into single steps.
    """

    name = "checkpoint"

    def __init__(self, segments: int | None = None, recursive: bool = False):
        super().__init__()
        if not isinstance(recursive, bool):
            raise ValueError(f"checkpoint: recursive must be True or False, got {recursive!r}")
        if segments is not None and (isinstance(segments, bool) or not isinstance(segments, numbers.Integral)
                                     or segments < 1):
            raise ValueError(f"checkpoint: segments must be a positive int or None (round(sqrt(T))), got {segments!r}")
        if recursive and segments is not None:
            raise ValueError("checkpoint: segments applies to the flat form only; the recursive form bisects "
                             "(drop segments= or recursive=True)")
        self.segments, self.recursive = (None if segments is None else int(segments)), recursive

    def options(self):
        opts = {}
        if self.segments is not None:
            opts["segments"] = self.segments
        if self.recursive:
            opts["recursive"] = True
        return opts

    def make_plan(self, chain, carry):
        T, k = chain.T, self.segments
        if k is not None and chain.varies_in_length:
            k = min(k, T)
        if (T, k) not in self._plans:
            self._plans[(T, k)] = recursive_plan(T) if self.recursive else chen_plan(T, k)
        return self._plans[(T, k)]


class Gruslys(_PlanMethod):
    """Gruslys et al. (2016): the recomputation-minimising policy for a fixed number of slots (dynamic programming).

    Budget: exactly one of ``slots`` (stored states, state 0 included), ``budget`` (fraction of T in (0, 1]:
    max(1, round-half-up(budget * T)) slots) or ``budget_bytes`` (divided by the bytes of one stored state of
    this model and batch, ``Carry.nbytes()``); none given means ``budget=0.05``. ``policy``: ``"hsm"`` (hidden
    states only) or ``"mixed"`` (also keeps single steps' graphs, each counted as one slot: alpha = 1).
    """

    name = "gruslys"
    POLICIES = ("hsm", "mixed")

    def __init__(self, slots: int | None = None, budget: float | None = None, budget_bytes: int | None = None,
                 policy: str = "hsm"):
        super().__init__()
        if policy not in self.POLICIES:
            raise ValueError(f"gruslys: policy must be one of {', '.join(self.POLICIES)}, got {policy!r}")
        if slots is None and budget is None and budget_bytes is None:
            budget = 0.05
        # validate the budget now; the byte form needs the state size, known per segment
        given = [v for v in (slots, budget, budget_bytes) if v is not None]
        if len(given) > 1 or budget_bytes is None:
            resolve_slots(1, slots=slots, budget=budget, budget_bytes=budget_bytes, state_bytes=1)
        elif isinstance(budget_bytes, bool) or not isinstance(budget_bytes, numbers.Integral) or budget_bytes < 1:
            raise ValueError(f"gruslys: budget_bytes={budget_bytes!r} is impossible; need a positive int of bytes, "
                             f"at least one stored state's worth")
        self.slots, self.budget, self.budget_bytes, self.policy = slots, budget, budget_bytes, policy

    def options(self):
        opts = {k: v for k, v in (("slots", self.slots), ("budget", self.budget), ("budget_bytes", self.budget_bytes))
                if v is not None}
        opts["policy"] = self.policy
        return opts

    def make_plan(self, chain, carry):
        m = resolve_slots(chain.T, slots=self.slots, budget=self.budget, budget_bytes=self.budget_bytes,
                          state_bytes=carry.nbytes() if self.budget_bytes is not None else None)
        key = (chain.T, m)
        if key not in self._plans:
            self._plans[key] = (mixed_plan if self.policy == "mixed" else hsm_plan)(chain.T, m)
        return self._plans[key]


__all__ = ["Checkpoint", "Gruslys"]
