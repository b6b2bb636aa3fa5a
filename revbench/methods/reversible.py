"""Reversible truncated BPTT (MacKay et al. 2018): forward without a graph, backward by exact reconstruction."""
from __future__ import annotations

from revbench.core.cells import REVERSIBLE_CELLS
from revbench.core.protocol import ChainResult, Method
from revbench.core.state import same_ints


class Reversible(Method):
    """Forward over the chain without a graph, keeping only the final state and the buffers; then for
    t = T-1 .. 0, rebuild the previous state exactly, re-run step t with autograd (its output layer and loss
    included) and backpropagate it with the gradient arriving from step t+1.

    ``verify=True`` checks that the reversal ended with empty buffers and, unless ``start`` is None (allowed
    when ``end`` is given), at the integers of ``start``.
    """

    name = "reversible"
    keep_words = True
    starts_from_end = True

    def __init__(self, verify: bool = True):
        if not isinstance(verify, bool):
            raise ValueError(f"reversible: verify must be True or False, got {verify!r}")
        self.verify = verify

    @classmethod
    def supports(cls, cell, kind="lm"):
        if cell not in REVERSIBLE_CELLS:
            return False, (f"method 'reversible' needs a reversible cell ({', '.join(REVERSIBLE_CELLS)}); cell "
                           f"{cell!r} cannot be reversed: use 'bptt', 'checkpoint' or 'gruslys'")
        return True, ""

    def run_chain(self, chain, start, *, end=None, grad_end=None, grad_start=False):
        if end is None:
            end = start
            for t in range(chain.T):
                end, _ = chain.advance(t, end, grad=False, loss=False)   # its losses are not needed
        # hold the end state only if the model reads it afterwards (a language model's next segment)
        final = end if chain.needs_final else None
        # a chain whose step loss reads only the step's end state (a language model's segment) gives that loss's
        # gradient first; the cells then re-run without the output layer, whose buffers are gone by then
        split = getattr(chain, "loss_and_grads", None)
        carry, grads, total, end = end, grad_end, None, None
        for t in range(chain.T - 1, -1, -1):
            if split is not None:
                loss, from_loss = split(t, carry)
                grads = from_loss if grads is None else [_plus(a, b) for a, b in zip(grads, from_loss)]
            prev = chain.reverse(t, carry)
            leaf = chain.leaf(prev)
            if split is not None:
                nxt, _ = chain.advance(t, leaf, grad=True, known=carry, loss=False)
                chain.backward([], nxt, grads)
            else:
                nxt, loss = chain.advance(t, leaf, grad=True, known=carry)
                chain.backward([loss], nxt, grads)
            grads = leaf.grads()
            total = loss.detach() if total is None else total + loss.detach()
            carry = prev
        if self.verify:
            if not chain.buffers_empty(carry):
                raise RuntimeError("reversal did not return the buffers to empty: the forward and reverse passes "
                                   "differ")
            if start is not None and not same_ints(carry, start):
                raise RuntimeError("reversal did not rebuild the start state exactly")
        return ChainResult(loss=total, final=final, start_grads=grads if grad_start else None,
                           stats={"stored_states_peak": 1})


def _plus(a, b):
    return b if a is None else a if b is None else a + b
