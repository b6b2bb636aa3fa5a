"""Beam search and greedy decoding (revbench.tasks.nmt.decode) on hand-made decoders whose log-probabilities are a
fixed function of the prefix, so the best sequence is known: width 1 is greedy, a beam wide enough to keep every
prefix finds the exhaustive search's best, the early stop never changes the answer, finished hypotheses do not end
the search while a live one can still beat them (which once returned a sentence worse than greedy's), </s> ends a
hypothesis and is scored once, and on the model every reported score is the sentence's log-probability."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from revbench.models.seq2seq.inputs import BOS_INDEX, EOS_INDEX
from revbench.tasks.nmt import decode
from revbench.tasks.nmt.decode import Hypothesis, beam_search_rows, greedy_search, normalised

V = 6          # ids 0..5: <pad>, <unk>, <s>, </s> and two words


class TableRows:
    """``DecodingRows`` without a model: the log-probabilities of the next token are ``table(source, prefix)``;
    the attended position is the prefix length, so positions can be checked too."""

    def __init__(self, table, batch_size: int, copies: int = 1):
        self.table, self.copies = table, copies
        self.prefixes = [() for _ in range(batch_size * copies)]
        self.calls = 0

    def step(self, tokens):
        if self.calls == 0:
            assert set(tokens.tolist()) == {BOS_INDEX}            # every row starts from <s>
        else:
            self.prefixes = [p + (t,) for p, t in zip(self.prefixes, tokens.tolist())]
        self.calls += 1
        logp = torch.tensor([self.table(r // self.copies, p) for r, p in enumerate(self.prefixes)],
                            dtype=torch.float32)
        return logp, torch.tensor([len(p) for p in self.prefixes])

    def keep(self, rows):
        self.prefixes = [self.prefixes[r] for r in rows.tolist()]


def random_table(seed: int, temperature: float = 2.0):
    """A deterministic random distribution over V tokens for every (source, prefix)."""
    def table(source, prefix):
        g = torch.Generator().manual_seed(hash((seed, source) + prefix) & 0x7FFF_FFFF)
        return torch.log_softmax(torch.randn(V, generator=g, dtype=torch.float64) * temperature, 0).tolist()
    return table


def fixed_table(probs: dict, default=None):
    """``probs``: prefix -> {token: probability}; tokens left out share what is left. ``default`` for other
    prefixes (uniform if None)."""
    def table(source, prefix):
        given = probs.get(prefix, default or {})
        rest = [t for t in range(V) if t not in given]
        left = max(1.0 - sum(given.values()), 0.0)
        p = [given.get(t, left / len(rest) if rest else 0.0) for t in range(V)]
        return [math.log(x) if x > 0 else -1e9 for x in p]
    return table


def greedy(table, B=1, max_len=8):
    return greedy_search(TableRows(table, B), B, max_len)


def beam(table, K, B=1, max_len=8, alpha=0.0):
    return beam_search_rows(TableRows(table, B, K), B, K, max_len, alpha)


def logprob_of(table, source, ids, finished=True):
    """The log-probability the table gives ``ids`` (and </s> after them when finished)."""
    toks = list(ids) + ([EOS_INDEX] if finished else [])
    return sum(table(source, tuple(toks[:i]))[t] for i, t in enumerate(toks))


def exhaustive_best(table, source, max_len, alpha):
    """The best finished sequence by normalised score over every sequence of up to max_len tokens."""
    words = [t for t in range(V) if t != EOS_INDEX]
    best = None
    for n in range(max_len):                        # n words, then </s>: n + 1 <= max_len tokens
        for ids in itertools.product(words, repeat=n):
            s = normalised(logprob_of(table, source, ids), n + 1, alpha)
            if best is None or s > best[0] + 1e-12:
                best = (s, list(ids))
    return best


# --------------------------------------------------------------------------------------------- width 1, exhaustive
@pytest.mark.parametrize("seed", range(20))
def test_beam_of_width_one_is_greedy(seed):
    table = random_table(seed)
    for g, b in zip(greedy(table, B=3), beam(table, 1, B=3)):
        assert (g.ids, g.positions, g.finished) == (b.ids, b.positions, b.finished)
        assert b.logprob == pytest.approx(g.logprob, abs=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("seed", range(8))
def test_a_beam_that_keeps_every_prefix_finds_the_best_sequence(seed, alpha):
    table, max_len = random_table(seed, temperature=1.0), 4
    K = (V - 1) ** max_len                          # every prefix fits in the beam
    greedy_h = greedy(table, B=2, max_len=max_len)
    for source, b in enumerate(beam(table, K, B=2, max_len=max_len, alpha=alpha)):
        best_score, best_ids = exhaustive_best(table, source, max_len, alpha)
        assert b.finished and b.ids == best_ids
        assert b.score(alpha) == pytest.approx(best_score, abs=1e-6)
        if greedy_h[source].finished:
            assert b.score(alpha) >= greedy_h[source].score(alpha) - 1e-9


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, -0.5])
@pytest.mark.parametrize("seed", range(12))
def test_stopping_early_never_changes_the_answer(seed, alpha, monkeypatch):
    table = random_table(seed, temperature=1.0)
    early = beam(table, 3, B=3, max_len=7, alpha=alpha)
    monkeypatch.setattr(decode, "_can_improve", lambda finished, live, length, max_len, a: length < max_len)
    full = beam(table, 3, B=3, max_len=7, alpha=alpha)
    for e, f in zip(early, full):
        assert (e.ids, e.finished) == (f.ids, f.finished) and e.logprob == pytest.approx(f.logprob, abs=1e-9)


# --------------------------------------------------------------------------------------------- scores and </s>
@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("seed", range(10))
def test_scores_are_the_log_probabilities_of_the_sequences_returned(seed, K):
    table = random_table(seed)
    for source, h in enumerate(beam(table, K, B=3)):
        assert EOS_INDEX not in h.ids and len(h.positions) == len(h.ids)
        assert h.positions == list(range(len(h.ids)))          # the row's own attention at every step
        assert h.logprob == pytest.approx(logprob_of(table, source, h.ids, h.finished), abs=1e-5)
    for source, h in enumerate(greedy(table, B=3)):
        assert h.logprob == pytest.approx(logprob_of(table, source, h.ids, h.finished), abs=1e-5)


def test_eos_ends_a_hypothesis_and_counts_in_its_length():
    # <s> -> 4 (0.6) | 5 (0.4); 4 -> </s> (0.9); 5 -> 4 (0.95) -> </s> (0.99)
    table = fixed_table({(): {4: 0.6, 5: 0.4}, (4,): {EOS_INDEX: 0.9}, (5,): {4: 0.95}, (5, 4): {EOS_INDEX: 0.99}},
                        default={EOS_INDEX: 0.5})
    g, = greedy(table)
    assert g.ids == [4] and g.finished and g.length == 2
    assert g.logprob == pytest.approx(math.log(0.6 * 0.9), abs=1e-6)
    b, = beam(table, 2)
    assert b.ids == [4] and b.logprob == pytest.approx(math.log(0.54), abs=1e-6)     # 0.54 > 0.4 * 0.95 * 0.99
    b, = beam(table, 2, alpha=1.0)         # per token: log(0.54) / 2 = -0.31 > log(0.376) / 3 = -0.33
    assert b.ids == [4] and b.score(1.0) == pytest.approx(math.log(0.54) / 2, abs=1e-6)


def test_a_short_sentence_beats_a_long_one_on_log_probability_not_per_token():
    # the beam-search length bias on a toy: '.' then </s> (0.3) against five words at 0.7 each then </s>
    probs = {(): {5: 0.3, 4: 0.7}, (5,): {EOS_INDEX: 0.999}}
    for n in range(1, 5):
        probs[(4,) * n] = {4: 0.7, EOS_INDEX: 0.01, 5: 0.2}         # no ties among the runners-up
    probs[(4,) * 5] = {EOS_INDEX: 0.999}
    table = fixed_table(probs)
    g, = greedy(table)
    assert g.ids == [4] * 5                                       # greedy never takes the 0.3 '.'
    b, = beam(table, 2)                                           # plain log-probability: 0.3 > 0.7 ** 5 = 0.17
    assert b.ids == [5] and b.logprob > g.logprob
    b, = beam(table, 2, alpha=1.0)                                # per token: 0.7 ** (5/6) > 0.3 ** (1/2)
    assert b.ids == [4] * 5


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_finished_hypotheses_do_not_end_the_search_while_a_live_one_can_beat_them(alpha):
    """Two poor hypotheses end early (</s> first: 0.25; 'a </s>': 0.24) while 'a b' (0.3) is still live and ends
    at 0.297, greedy decoding's sentence. Stopping once beam_size hypotheses have finished would return the
    empty sentence: worse than greedy under the same score."""
    table = fixed_table({(): {4: 0.6, EOS_INDEX: 0.25, 5: 0.1}, (4,): {5: 0.5, EOS_INDEX: 0.4, 4: 0.05},
                         (4, 5): {EOS_INDEX: 0.99}})
    g, = greedy(table)
    assert g.ids == [4, 5] and g.logprob == pytest.approx(math.log(0.6 * 0.5 * 0.99), abs=1e-6)
    b, = beam(table, 2, alpha=alpha)
    assert b.ids == [4, 5] and b.score(alpha) >= g.score(alpha) - 1e-9


def test_nothing_finished_returns_the_best_cut_hypothesis():
    table = fixed_table({}, default={EOS_INDEX: 0.0, 4: 0.5, 5: 0.3})      # </s> never comes
    for K in (1, 3):
        h, = beam(table, K, max_len=5)
        assert not h.finished and h.ids == [4] * 5 and h.length == 5
        assert h.logprob == pytest.approx(5 * math.log(0.5), abs=1e-5)
    h, = greedy(table, max_len=5)
    assert not h.finished and h.ids == [4] * 5


def test_sources_of_a_batch_are_searched_independently():
    table = random_table(3)
    together = beam(table, 3, B=4)
    for source in range(4):
        alone, = beam(lambda s, p: table(source, p), 3, B=1)
        assert (alone.ids, alone.finished) == (together[source].ids, together[source].finished)


def test_bad_widths_and_penalties_are_refused():
    table = random_table(0)
    for K in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="beam_size"):
            beam_search_rows(TableRows(table, 1, 1), 1, K, 5)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search_rows(TableRows(table, 1, 2), 1, 2, 5, float("nan"))


def test_hypothesis_length_counts_the_end_token():
    assert Hypothesis([7, 8], [0, 1], -1.0, True).length == 3
    assert Hypothesis([7, 8], [0, 1], -1.0, False).length == 2
    assert Hypothesis([7, 8], [0, 1], -3.0, True).score(1.0) == pytest.approx(-1.0)


# --------------------------------------------------------------------------------------------- the real model
@pytest.mark.parametrize("cell,context", [("revgru", "emb+h:3"), ("revlstm", "emb+h:3"), ("gru", "all"),
                                          ("lstm", "all")])
def test_on_the_model_scores_are_the_teacher_forced_log_probabilities(cell, context):
    """Beam search reorders the model's carries (buffers included) between steps: the log-probability it reports
    for each returned sentence equals the model's, decoding that sentence alone with no reordering."""
    from revbench.models.seq2seq import Decoder, Seq2Seq, encode
    from revbench.models.seq2seq.decode import DecodingRows

    torch.manual_seed(4)
    k = 2 if cell.startswith("rev") else None
    model = Seq2Seq(15, 12, 8, 12, 1, cell=cell, max_forget_bits=k, context=context, dropout=0.0,
                    init_range=0.8).to(torch.float64).eval()
    g = torch.Generator().manual_seed(7)
    lengths = torch.tensor([6, 4, 2])
    src = torch.randint(4, 15, (6, 3), generator=g)

    def alone(col, ids, finished):
        s = src[:lengths[col], col:col + 1]
        enc = encode(model, s, lengths[col:col + 1])
        dec = Decoder(model, 1)
        carry, tok, total = dec.start(enc), torch.tensor([BOS_INDEX]), 0.0
        for w in list(ids) + ([EOS_INDEX] if finished else []):
            carry, logp, _ = dec.step(tok, carry, enc.ctx, enc.src_mask)
            total, tok = total + float(logp[0, w]), torch.tensor([w])
        return total

    greedy_h = greedy_search(DecodingRows(model, src, lengths), 3, 9)
    for K in (1, 3):
        hyps = beam_search_rows(DecodingRows(model, src, lengths, copies=K), 3, K, 9)
        for col, h in enumerate(hyps):
            assert h.logprob == pytest.approx(alone(col, h.ids, h.finished), abs=1e-5)
            if K == 1:
                assert (h.ids, h.finished) == (greedy_h[col].ids, greedy_h[col].finished)
