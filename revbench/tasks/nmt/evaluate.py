"""Scores of a trained encoder-decoder: :func:`evaluate_loss` (perplexity) and :func:`bleu_on` (tokenised corpus
BLEU of ``revbench.tasks.nmt.bleu.bleu``)."""
from __future__ import annotations

import math

import torch

from revbench.models.seq2seq import Seq2Seq, evaluate_batch
from revbench.tasks.nmt.batches import length_batches
from revbench.tasks.nmt.bleu import bleu
from revbench.tasks.nmt.decode import translate


@torch.no_grad()
def evaluate_loss(model: Seq2Seq, pairs, batch_size: int = 64) -> dict:
    """Mean target-token cross-entropy and perplexity of ``pairs`` (eval mode, no dropout)."""
    was = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for b in length_batches(pairs, batch_size, shuffle=False):
            s, n = evaluate_batch(model, b.src, b.src_lengths, b.tgt_in, b.tgt_out, b.tgt_lengths)
            total, tokens = total + s, tokens + n
    finally:
        model.train(was)
    loss = total / max(tokens, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 100.0)), "tokens": tokens}


def bleu_on(model, split, vocab, beam_size=1, length_penalty=0.0, replace_unk=True, batch_size=64):
    """(BleuResult, hypotheses) of ``split`` against its tokenised, lower-cased references."""
    hyps = translate(model, split, vocab, beam_size, batch_size, length_penalty, replace_unk)
    return bleu(hyps, split.tgt_tokens), hyps
