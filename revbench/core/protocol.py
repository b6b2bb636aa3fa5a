"""The seam of the project: chains of steps, the methods that train over them, and what a step returns.

A *chain* is T steps of a recurrence: the language model's truncated segment, or one side (encoder or
decoder) of the encoder-decoder. Every chain has the same small API (``Chain`` below). A *method* decides
which states of a chain are kept and what is recomputed: it implements ``run_chain`` once, for any chain.
A *model kind* supplies its chains and how they connect, in ``model.run_step(method, ...)``: the language
model runs one chain per segment; the encoder-decoder runs the decoder's chain, then the encoder's, driven
by the gradient at the encoder's final state and by the attention context's gradients.
``Method.step(model, ...)`` is the one entry point for both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class MethodUnavailable(ValueError):
    """A method cannot run this configuration here (no compiler, a meter it cannot run under, ...); the message
    says why. A benchmark case skips with it; a training run stops with it."""


class Chain(Protocol):
    """What every chain offers a method (``revbench.models.segment.Segment``, the encoder-decoder's sides).

    State ``t`` is the state before step ``t``; state 0 is the chain's start, state ``T`` its end.
    """

    T: int                          # number of steps
    counters: dict                  # "forward_steps", "reverse_steps": step evaluations so far
    varies_in_length: bool          # True where T changes from batch to batch (sentences): option bounds clamp
    needs_final: bool               # the model reads state T afterwards (False: a method may free it early)

    def advance(self, t: int, carry, grad: bool = False, known=None, loss: bool = True):
        """Step t: state t -> (state t+1, the step's loss). With ``grad`` the step is recorded by autograd;
        ``known``: the exact state t+1 when already known (a replay during reversible backprop); ``loss=False``
        (without ``grad``): the caller throws the loss away, the chain may skip it and return None."""

    def reverse(self, t: int, carry):
        """Rebuild state t exactly from state t+1 (reversible cells, built with ``keep_words``)."""

    def leaf(self, carry):
        """The same exact state with fresh autograd leaves: the start of a recomputed stretch."""

    def backward(self, losses: list, carry_end, grads_end=None) -> None:
        """Backpropagate a stretch: its steps' losses plus ``grads_end`` arriving at its end state."""

    def buffers_empty(self, carry) -> bool:
        """True when the carry's information buffers hold nothing (a reversal consumed what was stored)."""


@dataclass
class ChainResult:
    """What ``Method.run_chain`` returns."""
    loss: torch.Tensor              # the sum of the chain's step losses (detached)
    final: Any                      # state T
    start_grads: list | None = None  # the gradient with respect to state 0 (only with grad_start=True)
    stats: dict = field(default_factory=dict)


@dataclass
class StepOutput:
    loss: torch.Tensor          # mean cross-entropy over the step's target tokens (detached, float)
    state: list | None          # final state, detached, for the next segment (None for the encoder-decoder)
    stats: dict = field(default_factory=dict)


class Method:
    """A training method. Subclasses implement ``run_chain``; the registry (``revbench.methods``) names them.

    Class attributes a model kind reads when it connects its chains:
    - ``keep_words``: chains keep the information buffers' emitted words (needed to reverse);
    - ``single_graph``: the method is plain autograd over the whole model (one graph through every chain);
    - ``starts_from_end``: the method's backward starts from each chain's end state, so the model runs each
      chain's forward pass first and passes ``end=`` (reversible backprop).
    """

    name = "?"
    keep_words = False
    single_graph = False
    starts_from_end = False

    def options(self) -> dict:
        return {}

    def label(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options().items()))
        return f"{self.name}({opts})" if opts else self.name

    @classmethod
    def supports(cls, cell: str, kind: str = "lm") -> tuple[bool, str]:
        """Whether this method applies to a cell type of a model kind (``"lm"``, ``"seq2seq"``: the model's
        ``kind``) and why not, without building anything."""
        return True, ""

    def check_model(self, model) -> None:
        """Raise a clear ValueError when this method cannot train ``model``."""
        ok, why = self.supports(getattr(model, "cell_type", ""), getattr(model, "kind", "lm"))
        if not ok:
            raise ValueError(why)

    def step(self, model, *args, **kwargs) -> StepOutput:
        """One training step: gradients accumulated into ``model.parameters()`` (as after ``loss.backward()``).

        Language model: ``step(lm, inputs, targets, state, lengths=None)``; encoder-decoder:
        ``step(seq2seq, batch, normalize="tokens", on_phase=None)``."""
        run_step = getattr(model, "run_step", None)
        if run_step is None:
            raise TypeError(f"method {self.name!r} trains revbench models (revbench.models.RNNLM or Seq2Seq), "
                            f"not {type(model).__name__}")
        self.check_model(model)
        return run_step(self, *args, **kwargs)

    def run_chain(self, chain, start, *, end=None, grad_end=None, grad_start: bool = False) -> ChainResult:
        """Run ``chain`` forward and backward from state ``start``: gradients reach the parameters, plus
        ``grad_end`` (the gradient arriving at state T from later computation; None: nothing comes after).
        ``end``: state T when the model already ran the forward pass (for a method that ``starts_from_end``,
        ``start`` is then only what its reversal must rebuild, and may be None). ``grad_start``: return the
        gradient with respect to state 0 in ``ChainResult.start_grads``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.label()
