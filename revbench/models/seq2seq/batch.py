"""One batch of the encoder-decoder: validation, dropout and length masks, both sides, attention and the
per-step loss, and the paper-style memory figures of the batch."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from revbench.core.functional import IGNORE, embedding_into, linear_into
from revbench.core.state import check_float_dtype, check_lengths
from revbench.models.seq2seq.side import Side


def _validate_batch(model, src, src_lengths, tgt_in, tgt_out, tgt_lengths):
    for name, t in (("src", src), ("tgt_in", tgt_in), ("tgt_out", tgt_out)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 2 or min(t.shape) < 1:
            raise ValueError(f"{name} must be a LongTensor of token ids with shape (steps, batch), got "
                             f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    B = src.shape[1]
    if tgt_in.shape != tgt_out.shape or tgt_in.shape[1] != B:
        raise ValueError(f"tgt_in {tuple(tgt_in.shape)} and tgt_out {tuple(tgt_out.shape)} must have the same shape "
                         f"and the source's batch size {B}")
    for name, t, V in (("src", src, model.src_vocab), ("tgt_in", tgt_in, model.tgt_vocab),
                       ("tgt_out", tgt_out, model.tgt_vocab)):
        if int(t.min()) < 0 or int(t.max()) >= V:
            raise ValueError(f"{name} token ids must be in [0, {V}), got range [{int(t.min())}, {int(t.max())}]")
    out = []
    for name, lens, T in (("src_lengths", src_lengths, src.shape[0]), ("tgt_lengths", tgt_lengths, tgt_in.shape[0])):
        lens = check_lengths(name, lens)
        if lens.dim() != 1 or lens.shape[0] != B:
            raise ValueError(f"{name} must have shape ({B},), got {tuple(lens.shape)}")
        if int(lens.min()) < 1 or int(lens.max()) > T:
            raise ValueError(f"{name} must be in [1, {T}], got range [{int(lens.min())}, {int(lens.max())}]")
        out.append(lens.to(model.device))
    return out


class BatchRun:
    """One batch of a seq2seq model: its dropout masks, length masks, encoder and decoder ``_Side``s, and the
    attention/loss of one decoder step. Build one per training step (``keep_words=True`` to reverse)."""

    def __init__(self, model, src, src_lengths, tgt_in, tgt_out, tgt_lengths, keep_words: bool = False,
                 normalize: str = "tokens", on_phase=None):
        if normalize not in ("tokens", "sents"):
            raise ValueError(f"normalize must be 'tokens' (mean over target tokens) or 'sents' (sum over tokens / "
                             f"sentences, OpenNMT's default), got {normalize!r}")
        src_lengths, tgt_lengths = _validate_batch(model, src, src_lengths, tgt_in, tgt_out, tgt_lengths)
        dev = model.device
        self.model = model
        self.on_phase = on_phase
        self.src, self.tgt_in = src.to(dev), tgt_in.to(dev)
        self.S, self.B = self.src.shape
        self.T = self.tgt_in.shape[0]
        self.dtype = model.float_dtype()
        check_float_dtype(model.enc_cells, self.dtype)
        self.masks = model.sample_masks(self.B)
        self.src_mask = torch.arange(self.S, device=dev).unsqueeze(1) < src_lengths.unsqueeze(0)   # (S, B)
        self.tgt_mask = torch.arange(self.T, device=dev).unsqueeze(1) < tgt_lengths.unsqueeze(0)   # (T, B)
        self.targets = torch.where(self.tgt_mask, tgt_out.to(dev), torch.full_like(self.tgt_in, IGNORE))
        self.n_src = int(self.src_mask.sum())
        self.n_tgt = int(self.tgt_mask.sum())
        self.divisor = self.n_tgt if normalize == "tokens" else self.B
        spec = model.context
        self.enc = Side(model.enc_cells, self._src_embed, self.masks.enc_between, self.src_mask, keep_words,
                         self.B, self.dtype, dev, slice_dim=spec.slice_dim)
        self.dec = Side(model.dec_cells, self._tgt_embed, self.masks.dec_between, self.tgt_mask, keep_words,
                         self.B, self.dtype, dev)

    def phase(self, name: str) -> None:
        """Tell the ``on_phase`` callback (if any) that a phase ended: ``"encoded"`` (the encoder's forward pass:
        what it holds now is what it keeps for its backward) or ``"decoded"`` (the same for the decoder)."""
        if self.on_phase is not None:
            self.on_phase(name)

    def _src_embed(self, t):
        x = embedding_into(self.model.src_emb.weight, self.src[t], None)
        return x if self.masks.src_in is None else x * self.masks.src_in

    def _tgt_embed(self, t):
        x = embedding_into(self.model.tgt_emb.weight, self.tgt_in[t], None)
        return x if self.masks.tgt_in is None else x * self.masks.tgt_in

    def source_embeddings(self):
        """(S, B, emb) dropped source embeddings (recomputed from the tokens; gradient added into the weight)."""
        x = embedding_into(self.model.src_emb.weight, self.src, None)
        return x if self.masks.src_in is None else x * self.masks.src_in

    def context(self, hidden):
        """(S, B, C) attention context from the stored hidden part (S, B, D) (or None) and the embeddings."""
        parts = [self.source_embeddings()] if self.model.context.emb else []
        if hidden is not None:
            parts.append(hidden)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def step_loss(self, t, h_top, ctx):
        """Attention, logits and the loss of decoder step t: sum of its token cross-entropies / ``divisor``
        (the batch's target tokens, or its sentences with normalize='sents')."""
        logits = attention_logits(self.model, h_top, ctx, self.src_mask, self.masks.out)
        return F.cross_entropy(logits, self.targets[t], reduction="sum", ignore_index=IGNORE) / self.divisor

    def stats(self) -> dict:
        """Paper-style memory figures (PAPER.md 'Counting memory'), encoder and decoder separately.

        baseline bits = 32 * valid tokens * sum of hidden sizes (x2 for LSTM cells: h and c);
        buffer bits actual = peak over the forward pass of 64 per live buffer element + 32 per allocated word
        slot; ideal = sum of -log2 z_q (the applied, quantised gates) over valid steps and units. The encoder adds its stored context: the
        slice store's allocated bits (actual) and 32 * slice_dim * valid tokens (ideal), or the stored hidden
        states for context 'all' (32 * hidden * valid tokens).
        """
        m = self.model
        per_unit = sum(c.hidden_size * (2 if ("c" in c.parts or "c1" in c.parts) else 1) for c in m.enc_cells)
        s = {"src_tokens": self.n_src, "tgt_tokens": self.n_tgt, "src_len": self.S, "tgt_len": self.T,
             "batch_size": self.B}
        D = m.context.hidden_dim(m.hidden_size)
        stored_ideal = 32 * D * self.n_src
        if self.enc.slices is not None:
            stored_actual = self.enc.slices.allocated_bits()
        elif m.context.all_hidden:
            stored_actual = 32 * D * self.S * self.B
        else:
            stored_actual = stored_ideal
        for side, name, n in ((self.enc, "enc", self.n_src), (self.dec, "dec", self.n_tgt)):
            base = 32 * n * per_unit
            extra_a, extra_i = (stored_actual, stored_ideal) if name == "enc" else (0, 0)
            if not m.reversible:
                ideal = actual = None
            elif not m.enc_cells[0].forgets:       # no-forgetting cells have no buffer at all
                ideal, actual = 0.0, (0 if side.keep_words else None)
            else:
                ideal = side.ideal_total()
                actual = side.buffer_bits_peak if side.keep_words else None
            s[f"{name}_state_bits_baseline"] = base
            if name == "enc":
                s["enc_context_bits_actual"], s["enc_context_bits_ideal"] = extra_a, extra_i
            s[f"{name}_buffer_bits_ideal"] = ideal
            s[f"{name}_buffer_bits_actual"] = actual
            s[f"{name}_buffer_bits_reference"] = side.reference_bits() if (m.reversible and side.keep_words) else None
            s[f"{name}_saving_ideal"] = _ratio(base, None if ideal is None else ideal + extra_i)
            s[f"{name}_saving_actual"] = _ratio(base, None if actual is None else actual + extra_a)
        s["forward_steps"] = self.enc.counters["forward_steps"] + self.dec.counters["forward_steps"]
        s["reverse_steps"] = self.enc.counters["reverse_steps"] + self.dec.counters["reverse_steps"]
        return s


def _ratio(a, b):
    if b is None:
        return None
    return a / b if b > 0 else math.inf


def attention_logits(model, h_top, ctx, src_mask, out_mask=None, return_alpha: bool = False):
    """Luong "general" attention without input feeding: score_s = h^T W_a c_s over valid source positions,
    a = sum_s softmax(score)_s c_s, o = tanh(W_c [h; a]) (dropped), logits = generator(o). Shapes: h_top
    (B, H), ctx (S, B, C), src_mask (S, B) bool."""
    q = h_top @ model.attn.weight                                   # (B, C): h^T W_a
    scores = torch.einsum("sbc,bc->sb", ctx, q)
    scores = scores.masked_fill(~src_mask, float("-inf"))
    alpha = torch.softmax(scores, dim=0)
    a = torch.einsum("sb,sbc->bc", alpha, ctx)
    o = torch.tanh(model.combine(torch.cat([h_top, a], dim=-1)))
    if out_mask is not None:
        o = o * out_mask
    logits = linear_into(o, model.generator.weight, model.generator.bias)
    return (logits, alpha) if return_alpha else logits
