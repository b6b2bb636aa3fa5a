"""Inference with the encoder-decoder: the loss of a batch without a graph, encoding a source, step-by-step
decoding, reordering carries, and the rows a search decodes (:class:`DecodingRows`: greedy decoding and beam search
in ``revbench.tasks.nmt.decode`` step them)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from revbench.core.state import Carry, LayerState
from revbench.models.seq2seq.batch import BatchRun, attention_logits
from revbench.models.seq2seq.side import Side


@torch.no_grad()
def evaluate_batch(model, src, src_lengths, tgt_in, tgt_out, tgt_lengths) -> tuple[float, int]:
    """Forward only (no graph, the model's current mode): (sum of target-token cross-entropies, target tokens)."""
    run = BatchRun(model, src, src_lengths, tgt_in, tgt_out, tgt_lengths, normalize="sents")
    carry = run.enc.start(model.init_state(run.B))
    D = model.context.hidden_dim(model.hidden_size)
    outs = []
    for s in range(run.S):
        carry, out = run.enc.advance(s, carry)
        if D:
            outs.append(out[:, :D])
    ctx = run.context(torch.stack(outs) if D else None)
    dec = run.dec.start_from(carry)
    total = 0.0
    for t in range(run.T):
        dec, top = run.dec.advance(t, dec)
        total += float(run.step_loss(t, top, ctx)) * run.divisor
    return total, run.n_tgt


@dataclass
class Encoded:
    """A source batch run through the encoder (no graph): the context, its mask and the final state."""
    ctx: torch.Tensor            # (S, B, C)
    src_mask: torch.Tensor       # (S, B) bool
    final: Carry


@torch.no_grad()
def encode(model, src, src_lengths) -> Encoded:
    """Run the encoder for inference (no dropout; exact fixed-point forward with the buffer words dropped,
    since nothing is reversed here)."""
    dev = model.device
    src = src.to(dev)
    S, B = src.shape
    lengths = torch.as_tensor(src_lengths).to(dev)
    src_mask = torch.arange(S, device=dev).unsqueeze(1) < lengths.unsqueeze(0)
    run = Side(model.enc_cells, lambda t: F.embedding(src[t], model.src_emb.weight), [None] * (model.num_layers - 1),
                src_mask, False, B, model.float_dtype(), dev, slice_dim=model.context.slice_dim)
    carry = run.start(model.init_state(B))
    D = model.context.hidden_dim(model.hidden_size)
    outs = []
    for s in range(S):
        carry, out = run.advance(s, carry)
        if D:
            outs.append(out[:, :D])
    parts = ([F.embedding(src, model.src_emb.weight)] if model.context.emb else []) + ([torch.stack(outs)] if D else [])
    ctx = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    return Encoded(ctx, src_mask, carry)


class Decoder:
    """Step-by-step decoding from an ``Encoded`` source (eval mode, no graph): ``start()`` then ``step``."""

    def __init__(self, model, batch_size: int):
        self.model = model
        self.side = Side(model.dec_cells, None, [None] * (model.num_layers - 1), None, False, batch_size,
                          model.float_dtype(), model.device)

    def start(self, enc: Encoded) -> Carry:
        return self.side.start_from(enc.final)

    @torch.no_grad()
    def step(self, tokens, carry: Carry, ctx, src_mask):
        """Feed ``tokens`` (B,): returns (next carry, log-probabilities (B, V), attention weights (S, B))."""
        x = F.embedding(tokens, self.model.tgt_emb.weight)
        carry, top = self.side.advance(None, carry, x=x)
        logits, alpha = attention_logits(self.model, top, ctx, src_mask, return_alpha=True)
        return carry, torch.log_softmax(logits.float(), dim=-1), alpha


def select_carry(carry: Carry, index) -> Carry:
    """The carry of batch rows ``index`` (beam search reordering); buffers included (they are state)."""
    def sel(t):
        return None if t is None else t.index_select(0, index)
    return Carry(tuple(LayerState(None if ls.ints is None else tuple(sel(p) for p in ls.ints),
                                  tuple(sel(f) for f in ls.floats), sel(ls.bx)) for ls in carry.layers))


class DecodingRows:
    """The model's side of a search: each source of a batch decoded in ``copies`` rows (row ``b * copies + k``),
    one token per row and step. A search only calls ``step`` and ``keep``, so any object with these two methods
    (a fixed table of log-probabilities in the tests) can stand in for the model."""

    def __init__(self, model, src, src_lengths, copies: int = 1):
        enc = encode(model, src, src_lengths)
        B = src.shape[1]
        self.batch_size, self.copies, self.device = B, copies, model.device
        self.decoder = Decoder(model, B * copies)
        self.carry = self.decoder.start(enc)
        if copies > 1:
            rep = torch.arange(B, device=model.device).repeat_interleave(copies)
            self.ctx, self.mask = enc.ctx[:, rep], enc.src_mask[:, rep]
            self.carry = select_carry(self.carry, rep)
        else:
            self.ctx, self.mask = enc.ctx, enc.src_mask

    def step(self, tokens):
        """Feed one token per row (``B * copies``,): (log-probabilities of the next token (rows, V), the source
        position each row attended to most (rows,))."""
        self.carry, logp, alpha = self.decoder.step(tokens, self.carry, self.ctx, self.mask)
        return logp, alpha.argmax(0)

    def keep(self, rows):
        """Continue from rows ``rows`` (one index per row: beam search's reordering)."""
        self.carry = select_carry(self.carry, rows)
