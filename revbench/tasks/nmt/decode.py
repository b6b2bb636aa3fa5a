"""Decoding with a trained encoder-decoder: :func:`greedy_decode`, :func:`beam_search` and :func:`translate`.

Both searches run over ``DecodingRows`` (``revbench.models.seq2seq.decode``): anything with ``step(tokens) ->
(log-probabilities, attended positions)`` and ``keep(rows)``; :func:`greedy_search` and :func:`beam_search_rows`
return :class:`Hypothesis` objects with their scores. A hypothesis is scored by its log-probability (the sum
over its tokens, ``</s>`` included once it has ended) divided by ``length ** length_penalty`` (``length``: the
tokens scored, ``</s>`` included; 0: the plain log-probability, OpenNMT's default).

:func:`translate` has the reference's ``-replace_unk``: an output ``<unk>`` becomes the source word with the
highest attention weight.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from revbench.models.seq2seq import Seq2Seq
from revbench.models.seq2seq.decode import DecodingRows
from revbench.models.seq2seq.inputs import BOS_INDEX, EOS_INDEX, UNK_INDEX
from revbench.tasks.nmt.batches import length_batches


def _max_len(src_lengths) -> int:
    return int(src_lengths.max()) * 2 + 10


@dataclass
class Hypothesis:
    """One decoded sentence: ``ids`` (without ``</s>``), the source position attended to most for each id, and
    ``logprob``, the sum of the log-probabilities of ``ids`` and, when ``finished`` (it ended with ``</s>``; not:
    it was cut at the length limit), of ``</s>``."""
    ids: list[int]
    positions: list[int]
    logprob: float
    finished: bool

    @property
    def length(self) -> int:
        """Tokens scored: the ids, and ``</s>`` when finished."""
        return len(self.ids) + int(self.finished)

    def score(self, length_penalty: float = 0.0) -> float:
        return normalised(self.logprob, self.length, length_penalty)


def normalised(logprob: float, length: int, length_penalty: float) -> float:
    """What a search ranks hypotheses by: ``logprob / length ** length_penalty``."""
    return logprob / length ** length_penalty if length_penalty else logprob


def _check_beam(beam_size) -> int:
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
    return beam_size


def _check_penalty(length_penalty) -> float:
    if not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
    return float(length_penalty)


@torch.no_grad()
def greedy_search(rows, batch_size: int, max_len: int, device=None) -> list[Hypothesis]:
    """The most probable next token at every step, per row of ``rows`` (one row per source), until every row has
    produced ``</s>`` or ``max_len`` tokens."""
    tokens = torch.full((batch_size,), BOS_INDEX, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    logprob = torch.zeros(batch_size, dtype=torch.float64, device=device)
    words, positions = [], []
    for _ in range(max_len):
        logp, pos = rows.step(tokens)
        tokens = logp.argmax(-1)
        logprob += torch.where(done, 0.0, logp.gather(1, tokens.unsqueeze(1)).squeeze(1).double())
        words.append(tokens)
        positions.append(pos)
        done |= tokens == EOS_INDEX
        if bool(done.all()):
            break
    out = []
    for w, p, lp in zip(torch.stack(words, 1).tolist(), torch.stack(positions, 1).tolist(), logprob.tolist()):
        n = w.index(EOS_INDEX) if EOS_INDEX in w else len(w)
        out.append(Hypothesis(w[:n], p[:n], lp, n < len(w)))
    return out


@torch.no_grad()
def beam_search_rows(rows, batch_size: int, beam_size: int, max_len: int, length_penalty: float = 0.0,
                     device=None) -> list[Hypothesis]:
    """Beam search over ``rows`` (``beam_size`` rows per source, row ``b * beam_size + k``): per source the best
    hypothesis by ``Hypothesis.score(length_penalty)``, among those that ended with ``</s>`` (the best one cut at
    ``max_len`` if none did).

    Each step keeps the ``beam_size`` best extensions of the live hypotheses by log-probability; one that ends
    with ``</s>`` leaves the beam, finished, and the next step refills the beam from the others. A source is done
    when no live hypothesis can still beat the best finished one: log-probabilities only fall, so a live one can
    reach at most its log-probability over the most favourable length it can still have (``max_len`` for a
    positive penalty). It is not done merely because ``beam_size`` hypotheses have finished (a common shortcut):
    that would return a finished hypothesis worse than a live one that was about to end, worse even than greedy
    decoding's sentence (tests/test_beam_search.py)."""
    B, K = batch_size, _check_beam(beam_size)
    alpha = _check_penalty(length_penalty)
    scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=device)
    scores[:, 0] = 0.0                                   # one live hypothesis (<s>) per source to start
    tokens = torch.full((B * K,), BOS_INDEX, dtype=torch.long, device=device)
    hist_w = torch.zeros((B * K, 0), dtype=torch.long, device=device)
    hist_p = torch.zeros((B * K, 0), dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B
    base = (torch.arange(B, device=device) * K).unsqueeze(1)
    for step in range(max_len):
        logp, pos = rows.step(tokens)
        # the K best extensions of a source are among the K best next tokens of each of its rows
        row_top, row_words = logp.topk(min(K, logp.shape[-1]), dim=1)
        n = row_top.shape[1]
        top, ids = (scores.reshape(-1, 1) + row_top.double()).reshape(B, K * n).topk(K, dim=1)
        parent = (base + torch.div(ids, n, rounding_mode="floor")).reshape(-1)
        words = row_words.reshape(B, K * n).gather(1, ids).reshape(-1)
        hist_w = torch.cat([hist_w[parent], words.unsqueeze(1)], 1)
        hist_p = torch.cat([hist_p[parent], pos[parent].unsqueeze(1)], 1)
        rows.keep(parent)
        scores = top.clone()
        ended = (words.reshape(B, K) == EOS_INDEX) & torch.isfinite(top)
        for b, k in ended.nonzero().tolist():
            if not done[b]:
                r = b * K + k
                finished[b].append(Hypothesis(hist_w[r, :-1].tolist(), hist_p[r, :-1].tolist(), float(top[b, k]),
                                              True))
            scores[b, k] = float("-inf")                 # it leaves the beam
        for b in range(B):
            if not done[b]:
                done[b] = not _can_improve(finished[b], scores[b], step + 1, max_len, alpha)
        if all(done):
            break
        tokens = words
    out = []
    for b in range(B):
        if finished[b]:
            out.append(max(finished[b], key=lambda h: h.score(alpha)))
        else:                                            # nothing ended within max_len: the best cut hypothesis
            live = [Hypothesis(hist_w[b * K + k].tolist(), hist_p[b * K + k].tolist(), float(scores[b, k]), False)
                    for k in range(K) if math.isfinite(float(scores[b, k]))]
            out.append(max(live, key=lambda h: h.score(alpha)))
    return out


def _can_improve(finished: list[Hypothesis], live_scores, length: int, max_len: int, alpha: float) -> bool:
    """Whether a live hypothesis (log-probabilities ``live_scores``, ``length`` tokens so far) can still end with
    a better score than the best of ``finished``."""
    best_live = float(live_scores.max())
    if best_live == float("-inf") or length >= max_len:
        return False
    if not finished:
        return True
    # it ends with a log-probability <= best_live (<= 0) at a length in (length, max_len]
    reach = normalised(best_live, max_len if alpha > 0 else length + 1, alpha)
    return reach > max(h.score(alpha) for h in finished)


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src, src_lengths, max_len: int | None = None):
    """Greedy decoding of a batch: per column (ids without </s>, attended source position per id)."""
    model.eval()
    hyps = greedy_search(DecodingRows(model, src, src_lengths), src.shape[1], max_len or _max_len(src_lengths),
                         model.device)
    return [(h.ids, h.positions) for h in hyps]


@torch.no_grad()
def beam_search(model: Seq2Seq, src, src_lengths, beam_size: int = 5, max_len: int | None = None,
                length_penalty: float = 0.0):
    """Batched beam search (:func:`beam_search_rows`): per column (ids without </s>, attended source position per
    id) of the best hypothesis by log-probability / length**length_penalty."""
    model.eval()
    rows = DecodingRows(model, src, src_lengths, copies=_check_beam(beam_size))
    hyps = beam_search_rows(rows, src.shape[1], beam_size, max_len or _max_len(src_lengths), length_penalty,
                            model.device)
    return [(h.ids, h.positions) for h in hyps]


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
