"""Training methods and their registry.

A method turns (model, segment inputs/targets, initial state) into a loss,
gradients in ``model.parameters()`` (accumulated, exactly as after
``loss.backward()``), the final state and a dict of stats. The registry maps a
name to a class; ``get(name, **options)`` returns a configured instance.

Built in: ``"bptt"`` (plain autograd through the step loop: the reference every
other method is checked against) and ``"reversible"`` (MacKay et al.'s
reversible truncated BPTT). The baselines package adds ``"bptt-fused"``,
``"checkpoint"`` and ``"gruslys"``; they are imported on first use. Third-party
methods register with ``@register("name")`` or the ``revbench.methods`` entry
point group.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import torch

from revbench.core.protocol import StepOutput
from revbench.models.segment import Segment

_REGISTRY: dict[str, type] = {}
# methods that live in other modules, imported on first use
_LAZY = {
    "bptt-fused": "baselines.plan_methods",
    "checkpoint": "baselines.plan_methods",
    "gruslys": "baselines.plan_methods",
}


@dataclass
class StepOutput:
    loss: torch.Tensor          # mean cross-entropy over the segment's target tokens (detached, float)
    state: list                 # final state, detached, for the next segment
    stats: dict = field(default_factory=dict)


def register(name: str):
    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a method named {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def _load(name: str) -> None:
    if name in _REGISTRY:
        return
    if name in _LAZY:
        importlib.import_module(_LAZY[name])
        return
    for ep in entry_points(group="revbench.methods"):
        if ep.name == name:
            ep.load()
            return


def available() -> list[str]:
    names = set(_REGISTRY) | set(_LAZY) | {ep.name for ep in entry_points(group="revbench.methods")}
    return sorted(names)


def parse_options(text: str) -> dict:
    """A method's options from the command line's ``--method-options`` JSON object (ValueError otherwise)."""
    import json

    try:
        opts = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--method-options is not valid JSON: {exc}") from None
    if not isinstance(opts, dict):
        raise ValueError("--method-options must be a JSON object, e.g. '{\"budget\": 0.1}'")
    return opts


def get(name: str, **options):
    """A configured method object with ``.step(model, inputs, targets, state, lengths=None)``."""
    _load(name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name](**options)


class Method:
    """Base class: subclasses implement ``run(seg, carry) -> (loss, final_carry, extra_stats)``."""

    name = "?"
    keep_words = False

    def options(self) -> dict:
        return {}

    def label(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options().items()))
        return f"{self.name}({opts})" if opts else self.name

    def check_model(self, model) -> None:
        pass

    def step(self, model, inputs, targets, state, lengths=None) -> StepOutput:
        self.check_model(model)
        seg = Segment(model, inputs, targets, lengths, keep_words=self.keep_words)
        carry = seg.start(state)
        loss, final, extra = self.run(seg, carry)
        seg.finish()
        stats = seg.stats()
        stats.update(extra)
        stats["method"] = self.name
        return StepOutput(loss=loss.detach(), state=seg.final_state(final), stats=stats)

    def run(self, seg: Segment, carry):
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.label()


@register("bptt")
class BPTT(Method):
    """Plain backpropagation through time over the step loop: every step's graph is kept."""

    def run(self, seg, carry):
        losses = []
        for t in range(seg.T):
            carry, loss = seg.advance(t, carry, grad=True)
            losses.append(loss)
        seg.backward(losses)
        return torch.stack(losses).sum(), carry, {"stored_states_peak": seg.T}


@register("reversible")
class Reversible(Method):
    """Reversible truncated BPTT (MacKay et al. 2018).

    Forward over the segment without a graph, keeping only the final state and the buffers; then for
    t = T-1 .. 0, rebuild the previous state exactly, re-run step t with autograd (output layer and loss
    of that step included) and backpropagate it with the gradient arriving from step t+1.
    """

    keep_words = True

    def __init__(self, verify: bool = True):
        self.verify = verify     # check that the buffers end empty (reversal consumed exactly what was stored)

    def check_model(self, model):
        if not model.reversible:
            raise ValueError(f"method 'reversible' needs a reversible cell (revgru, revlstm, nf-revgru, nf-revlstm); "
                             f"cell {model.cell_type!r} cannot be reversed: use 'bptt', 'checkpoint' or 'gruslys'")

    def run(self, seg, carry):
        for t in range(seg.T):
            carry, _ = seg.advance(t, carry, grad=False)
        final = carry
        total, grads = None, None
        for t in range(seg.T - 1, -1, -1):
            prev = seg.reverse(t, carry)
            leaf = seg.leaf(prev)
            nxt, loss = seg.advance(t, leaf, grad=True, known=carry)
            seg.backward([loss], nxt, grads)
            grads = leaf.grads()
            total = loss.detach() if total is None else total + loss.detach()
            carry = prev
        if self.verify and not seg.buffers_empty(carry):
            raise RuntimeError("reversal did not return the buffers to empty: the forward and reverse passes differ")
        return total, final, {"stored_states_peak": 1}
