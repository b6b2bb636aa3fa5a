"""Decoding with a trained encoder-decoder: :func:`greedy_decode`, :func:`beam_search` and :func:`translate`.

:func:`translate` has the reference's ``-replace_unk``: an output ``<unk>`` becomes the source word with the
highest attention weight.
"""
from __future__ import annotations

import torch

from revbench.models.seq2seq import Decoder, Seq2Seq, encode, select_carry
from revbench.tasks.nmt.batches import length_batches
from revbench.models.seq2seq.inputs import BOS_INDEX, EOS_INDEX, UNK_INDEX


def _max_len(src_lengths) -> int:
    return int(src_lengths.max()) * 2 + 10


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src, src_lengths, max_len: int | None = None):
    """Greedy decoding of a batch: per column (ids without </s>, attended source position per id)."""
    model.eval()
    max_len = max_len or _max_len(src_lengths)
    enc = encode(model, src, src_lengths)
    B = src.shape[1]
    dec = Decoder(model, B)
    carry = dec.start(enc)
    tokens = torch.full((B,), BOS_INDEX, dtype=torch.long, device=model.device)
    done = torch.zeros(B, dtype=torch.bool, device=model.device)
    words, positions = [], []
    for _ in range(max_len):
        carry, logp, alpha = dec.step(tokens, carry, enc.ctx, enc.src_mask)
        tokens = logp.argmax(-1)
        words.append(tokens)
        positions.append(alpha.argmax(0))
        done |= tokens == EOS_INDEX
        if bool(done.all()):
            break
    W, P = torch.stack(words, 1).tolist(), torch.stack(positions, 1).tolist()
    out = []
    for w, p in zip(W, P):
        n = w.index(EOS_INDEX) if EOS_INDEX in w else len(w)
        out.append((w[:n], p[:n]))
    return out


@torch.no_grad()
def beam_search(model: Seq2Seq, src, src_lengths, beam_size: int = 5, max_len: int | None = None,
                length_penalty: float = 0.0):
    """Batched beam search: per column (ids without </s>, attended source position per id) of the best finished
    hypothesis by log-probability / length**length_penalty (the best live one if none finished)."""
    model.eval()
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    max_len = max_len or _max_len(src_lengths)
    dev = model.device
    B, K = src.shape[1], beam_size
    enc = encode(model, src, src_lengths)
    rep = torch.arange(B, device=dev).repeat_interleave(K)
    ctx, mask = enc.ctx[:, rep], enc.src_mask[:, rep]
    dec = Decoder(model, B * K)
    carry = select_carry(dec.start(enc), rep)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0
    tokens = torch.full((B * K,), BOS_INDEX, dtype=torch.long, device=dev)
    hist_w = torch.zeros((B * K, 0), dtype=torch.long, device=dev)
    hist_p = torch.zeros((B * K, 0), dtype=torch.long, device=dev)
    finished: list[list] = [[] for _ in range(B)]
    done = [False] * B
    base = (torch.arange(B, device=dev) * K).unsqueeze(1)
    for step in range(max_len):
        carry, logp, alpha = dec.step(tokens, carry, ctx, mask)
        V = logp.shape[-1]
        cand = (scores.reshape(-1, 1) + logp).reshape(B, K * V)
        top, ids = cand.topk(K, dim=1)
        rows = (base + torch.div(ids, V, rounding_mode="floor")).reshape(-1)
        words = (ids % V).reshape(-1)
        pos = alpha.argmax(0)
        hist_w = torch.cat([hist_w[rows], words.unsqueeze(1)], 1)
        hist_p = torch.cat([hist_p[rows], pos[rows].unsqueeze(1)], 1)
        carry = select_carry(carry, rows)
        scores = top.clone()
        eos = (words.reshape(B, K) == EOS_INDEX) & torch.isfinite(top)
        for b, k in eos.nonzero().tolist():
            if not done[b]:
                L = step + 1
                norm = float(top[b, k]) / (L ** length_penalty if length_penalty else 1.0)
                r = b * K + k
                finished[b].append((norm, hist_w[r, :-1].tolist(), hist_p[r, :-1].tolist()))
            scores[b, k] = float("-inf")
        for b in range(B):
            if done[b]:
                continue
            best_live = float(scores[b].max())
            if len(finished[b]) >= K or best_live == float("-inf"):
                done[b] = True
            elif finished[b] and length_penalty == 0.0 and max(f[0] for f in finished[b]) >= best_live:
                done[b] = True                        # raw log-probabilities only decrease: nothing can beat it
        if all(done):
            break
        tokens = words
    out = []
    for b in range(B):
        if finished[b]:
            _, w, p = max(finished[b], key=lambda f: f[0])
        else:
            k = int(scores[b].argmax())
            w, p = hist_w[b * K + k].tolist(), hist_p[b * K + k].tolist()
        out.append((w, p))
    return out


def translate(model: Seq2Seq, split, vocab, beam_size: int = 1, batch_size: int = 64, length_penalty: float = 0.0,
              replace_unk: bool = True) -> list[list[str]]:
    """Translate every source sentence of ``split`` (corpus order): greedy for beam_size 1, else beam search.
    With ``replace_unk`` an output ``<unk>`` is replaced by the source word it attended to most."""
    pairs = [(s, t) for s, t in zip(split.src_ids, split.tgt_ids)]
    hyps: list[list[str] | None] = [None] * len(pairs)
    for b in length_batches(pairs, batch_size, shuffle=False):
        if beam_size == 1:
            res = greedy_decode(model, b.src, b.src_lengths)
        else:
            res = beam_search(model, b.src, b.src_lengths, beam_size, length_penalty=length_penalty)
        for col, (ids, pos) in zip(b.indices.tolist(), res):
            toks = []
            for i, p in zip(ids, pos):
                if i == UNK_INDEX and replace_unk and p < len(split.src_tokens[col]):
                    toks.append(split.src_tokens[col][p])
                else:
                    toks.extend(vocab.decode([i]))
            hyps[col] = toks
    return hyps
