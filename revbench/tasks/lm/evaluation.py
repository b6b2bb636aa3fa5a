"""Perplexity of a language model on a batchified stream: eval mode, forward only, state carried."""
from __future__ import annotations

import math

import torch

from revbench.models.lm import RNNLM
from revbench.models.segment import Segment
from revbench.tasks.lm.corpus import lm_segments


@torch.no_grad()
def evaluate(model: RNNLM, source: torch.Tensor, bptt: int, carry_state: bool = True) -> dict:
    """Perplexity of ``model`` on a batchified (N, B) stream: eval mode, forward only, state carried from
    segment to segment (or reset to zero for each segment with ``carry_state=False``).

    Returns ``{"loss": mean cross-entropy per token (nats), "ppl": exp(loss), "tokens": count}``.
    """
    was_training = model.training
    model.eval()
    try:
        state = model.init_state(source.size(1))
        total, tokens = 0.0, 0
        for inputs, targets in lm_segments(source, bptt, variable=False):
            seg = Segment(model, inputs, targets)
            carry = seg.start(state if carry_state else model.init_state(source.size(1)))
            seg_loss = 0.0
            for t in range(seg.T):
                carry, loss_t = seg.advance(t, carry, grad=False)
                seg_loss += float(loss_t)
            total += seg_loss * seg.n_tokens
            tokens += seg.n_tokens
            state = seg.final_state(carry)
    finally:
        model.train(was_training)
    loss = total / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": tokens}
