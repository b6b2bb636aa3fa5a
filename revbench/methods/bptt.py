"""Plain backpropagation through time: every step's graph is kept (the reference every method is checked against)."""
from __future__ import annotations

import torch

from revbench.core.protocol import ChainResult, Method


class BPTT(Method):
    """Autograd through the step loop. On a model with several chains (the encoder-decoder) it is one graph
    through all of them (``single_graph``): nothing is recomputed anywhere."""

    name = "bptt"
    single_graph = True

    def run_chain(self, chain, start, *, end=None, grad_end=None, grad_start=False):
        carry = chain.leaf(start) if grad_start else start
        leaf, losses = carry, []
        for t in range(chain.T):
            carry, loss = chain.advance(t, carry, grad=True)
            losses.append(loss)
        chain.backward(losses, carry, grad_end)
        return ChainResult(loss=torch.stack(losses).sum().detach(), final=carry,
                           start_grads=leaf.grads() if grad_start else None, stats={"stored_states_peak": chain.T})
