"""The encoder-decoder's sides as chains (``revbench.core.protocol.Chain``), so that every method runs on them.

``SideChain`` wraps a ``Side`` with what step t contributes to the objective when it runs with autograd:
the decoder's attention loss (a scalar), or for the encoder a ``Pull``: its stored context units with the
gradient the decoder sent them (``dL/dcontext``), backpropagated as outputs with incoming gradients.
"""
from __future__ import annotations

import torch


class Pull:
    """A step's part of the objective given as outputs and their incoming gradients, not as a scalar loss.
    ``detach()`` returns ``zero`` (shared): the encoder's steps report no loss of their own."""

    def __init__(self, outputs: list, grads: list, zero: torch.Tensor):
        self.outputs, self.grads, self.zero = outputs, grads, zero

    def detach(self) -> torch.Tensor:
        return self.zero


def backward_outputs(outs, grads) -> None:
    """One autograd backward of several outputs: a scalar loss (gradient None) and state tensors with their
    incoming gradients; outputs without a graph or without a gradient are skipped."""
    pairs = [(o, g) for o, g in zip(outs, grads)
             if o is not None and o.requires_grad and (g is not None or o.dim() == 0)]
    if pairs:
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])


class SideChain:
    """A side of one batch in the chain API. ``step_loss(t, top)`` is step t's contribution to the objective
    (a scalar or a ``Pull``), computed only when the step runs with autograd; ``on_end`` is called once, when
    the chain first reaches state T (after that step's loss, so what is held then includes its graph)."""

    varies_in_length = True          # sentences: a side's T changes from batch to batch
    needs_final = False              # nothing reads a side's final state after its run

    def __init__(self, side, T: int, step_loss, on_end=None):
        self.side, self.T, self.step_loss, self.on_end = side, T, step_loss, on_end
        self.counters = side.counters

    def advance(self, t, carry, grad=False, known=None, loss=True):
        """Step t; the step's objective only with ``grad`` (``loss`` is accepted for the chain API)."""
        nxt, top = self.side.advance(t, carry, grad=grad, known=known)
        loss = None
        if grad:
            with torch.enable_grad():
                loss = self.step_loss(t, top)
        if t == self.T - 1 and self.on_end is not None:
            self.on_end()
            self.on_end = None
        return nxt, loss

    def reverse(self, t, carry):
        return self.side.reverse(t, carry)

    def leaf(self, carry):
        return self.side.leaf(carry)

    def buffers_empty(self, carry) -> bool:
        return self.side.buffers_empty(carry)

    def backward(self, losses, carry_end, grads_end=None) -> None:
        scalars = [l for l in losses if not isinstance(l, Pull)]
        outs, gs = [], []
        if scalars:
            outs.append(scalars[0] if len(scalars) == 1 else torch.stack(scalars).sum())
            gs.append(None)
        for l in losses:
            if isinstance(l, Pull):
                outs.extend(l.outputs)
                gs.extend(l.grads)
        floats = carry_end.floats()
        outs.extend(floats)
        gs.extend(grads_end if grads_end is not None else [None] * len(floats))
        backward_outputs(outs, gs)
