"""Tests for the NMT data (revbench.tasks.nmt): Moses tokenisation round trip, Multi30K loading and its cache,
vocabulary, the synthetic parallel corpus, length batching and tokenised BLEU."""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("sacremoses", reason="sacremoses is needed for Moses tokenisation (pip install 'revbench[nmt]')")
pytest.importorskip("sacrebleu", reason="sacrebleu is needed for BLEU (pip install 'revbench[nmt]')")

from revbench.tasks.nmt import tokenization as nmt_tokenization  # noqa: E402
from revbench.tasks.datasets import ChecksumError, MissingDataError, read_sha256sums, sha256_file  # noqa: E402
from revbench.models.seq2seq.inputs import make_batch  # noqa: E402
from revbench.tasks.nmt.batches import length_batches  # noqa: E402
from revbench.tasks.nmt.bleu import bleu  # noqa: E402
from revbench.tasks.nmt.corpus import load_multi30k, load_parallel, synthetic_parallel  # noqa: E402
from revbench.tasks.nmt.tokenization import detokenize, tokenize  # noqa: E402
from revbench.models.seq2seq.inputs import BOS_INDEX, EOS_INDEX, PAD_INDEX, UNK_INDEX  # noqa: E402
from revbench.tasks.nmt.vocab import Vocab  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


def real_data_dir() -> Path | None:
    env = os.environ.get("REVBENCH_DATA")
    for c in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2] / "shared" / "data"]:
        if (c / "multi30k").is_dir():
            return c
    return None


REAL = real_data_dir()


# ------------------------------------------------------------------------------ tokenisation
ROUND_TRIP = {
    "en": [
        "A three-year-old girl's dog is running through the grass.",
        'The children\'s well-known teacher says: "Don\'t run!"',
        "A woman -- wearing a red coat -- walks her dog.",
        "It's 5-10 o'clock; ok: (yes) [no], they're here?",
        "Two young, White males are outside near many bushes.",
    ],
    "de": [
        "Ein 3-jähriges Kind spielt im Schnee.",
        "Der bekannte Lehrer der Kinder sagt: „Nicht rennen!“",
        "Ein Mann in einem roten Hemd steht in der Nähe eines T-Shirt-Stands.",
        "Zwei Männer (beide in Schwarz) laufen -- schnell -- über die Straße, oder?",
    ],
}


@pytest.mark.parametrize("lang,sentence", [(lang, s) for lang, ss in ROUND_TRIP.items() for s in ss])
def test_tokenize_detokenize_round_trip(lang, sentence):
    cased = tokenize(sentence, lang, lower=False)
    assert detokenize(cased, lang) == sentence
    lowered = tokenize(sentence, lang)
    assert lowered == [t.lower() for t in cased]
    assert detokenize(lowered, lang) == sentence.lower()


def test_tokenize_aggressive_dashes_apostrophes_no_escaping():
    toks = tokenize('A well-known man\'s "dog" & cat <3', "en")
    assert toks == ["a", "well", "@-@", "known", "man", "'s", '"', "dog", '"', "&", "cat", "<", "3"]
    assert "&amp;" not in toks and "&quot;" not in toks


def test_retokenising_a_detokenised_sentence_is_stable():
    # detokenisation is not always the exact inverse (Moses puts a space in "3: 30"), but the tokens survive
    toks = tokenize("A T-shirt-wearing man, e.g. at 3:30 p.m.!", "en")
    assert tokenize(detokenize(toks, "en"), "en") == toks
    assert detokenize(["@-@", "a"], "en") == "-a"


# ------------------------------------------------------------------------------ Multi30K
@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def test_load_fixture_multi30k(cache_dir):
    c = load_multi30k(FIXTURES, cache_dir=cache_dir)
    assert (len(c.train), len(c.valid), len(c.test)) == (6, 2, 2)
    assert c.train.src_tokens[2][:6] == ["a", "three", "@-@", "year", "@-@", "old"]
    assert c.test.tgt_tokens[0][-7:] == ["eines", "t", "@-@", "shirt", "@-@", "stands", "."]
    # vocabulary from train only: specials first, every train word present
    assert c.src_vocab.itos[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert all(w in c.src_vocab for s in c.train.src_tokens for w in s)
    assert "stand" not in c.src_vocab  # occurs only in test2016.en
    test_src = dict(zip(c.test.src_tokens[0], c.test.src_ids[0]))
    assert test_src["stand"] == UNK_INDEX and test_src["man"] == c.src_vocab.stoi["man"]
    assert c.train.src_ids[0] == c.src_vocab.encode(c.train.src_tokens[0])


def test_min_freq_maps_rare_words_to_unk(cache_dir):
    full = load_multi30k(FIXTURES, cache_dir=cache_dir)
    rare = load_multi30k(FIXTURES, cache_dir=cache_dir, min_freq=2)
    counts = Counter(w for s in full.train.src_tokens for w in s)
    assert len(rare.src_vocab) == 4 + sum(1 for c in counts.values() if c >= 2) < len(full.src_vocab)
    ids = rare.train.src_ids[0]
    for w, i in zip(rare.train.src_tokens[0], ids):
        assert (i == UNK_INDEX) == (counts[w] < 2)


def test_tokenisation_cache_is_used(cache_dir, monkeypatch):
    first = load_multi30k(FIXTURES, cache_dir=cache_dir)
    assert list((cache_dir / "tokenized").glob("*.pkl"))

    def boom(*a, **k):
        raise AssertionError("tokenize called although the cache is warm")

    monkeypatch.setattr(nmt_tokenization, "tokenize", boom)
    second = load_multi30k(FIXTURES, cache_dir=cache_dir)
    assert second.train.tgt_tokens == first.train.tgt_tokens and second.test.src_ids == first.test.src_ids
    with pytest.raises(AssertionError, match="cache is warm"):
        load_multi30k(FIXTURES, cache_dir=cache_dir, use_cache=False)


def test_cache_ignores_a_corrupt_entry(cache_dir):
    first = load_multi30k(FIXTURES, cache_dir=cache_dir)
    for p in (cache_dir / "tokenized").glob("*.pkl"):
        p.write_bytes(b"not a pickle")
    again = load_multi30k(FIXTURES, cache_dir=cache_dir)
    assert again.train.src_tokens == first.train.src_tokens


def test_multi30k_checksum_failure_names_file_and_hashes(tmp_path, cache_dir):
    folder = tmp_path / "multi30k"
    shutil.copytree(FIXTURES / "multi30k", folder)
    expected = read_sha256sums(folder)["val.de"]
    (folder / "val.de").write_text("Kaputt.\nKaputt.\n", encoding="utf-8")
    with pytest.raises(ChecksumError) as exc:
        load_multi30k(tmp_path, cache_dir=cache_dir)
    actual = sha256_file(folder / "val.de")
    assert "val.de" in str(exc.value) and expected in str(exc.value) and actual in str(exc.value)


def test_multi30k_missing_file_and_unparallel_files(tmp_path, cache_dir):
    folder = tmp_path / "multi30k"
    shutil.copytree(FIXTURES / "multi30k", folder)
    (folder / "test2016.en").unlink()
    with pytest.raises(MissingDataError, match=r"test2016\.en"):
        load_multi30k(tmp_path, cache_dir=cache_dir)
    shutil.copy(FIXTURES / "multi30k" / "test2016.en", folder / "test2016.en")
    with open(folder / "test2016.de", "a", encoding="utf-8") as fh:
        fh.write("Eine Zeile zu viel.\n")
    with pytest.raises(ValueError, match="not parallel"):
        load_multi30k(tmp_path, cache_dir=cache_dir, verify=False)


@pytest.mark.skipif(REAL is None, reason="Multi30K not found (set REVBENCH_DATA or provide ../shared/data)")
def test_real_multi30k_sizes(tmp_path):
    c = load_multi30k(REAL, cache_dir=tmp_path)
    assert (len(c.train), len(c.valid), len(c.test)) == (29_000, 1_014, 1_000)
    assert all(len(s) > 0 for s in c.train.src_tokens) and all(len(t) > 0 for t in c.train.tgt_tokens)
    assert all(t == t.lower() for s in c.train.tgt_tokens[:500] for t in s)


# ------------------------------------------------------------------------------- vocabulary
def test_vocab_order_and_decode():
    v = Vocab.build([["b", "a", "b"], ["c", "a", "b"]], min_freq=1)
    assert v.itos == ["<pad>", "<unk>", "<s>", "</s>", "b", "a", "c"]
    assert v.encode(["a", "zzz"]) == [5, UNK_INDEX]
    assert v.decode([BOS_INDEX, 4, 5, EOS_INDEX, 6, PAD_INDEX]) == ["b", "a"]
    assert v.decode([4, PAD_INDEX], strip_special=False) == ["b", "<pad>"]
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build([["a"]], min_freq=0)


# ------------------------------------------------------------------------ synthetic parallel
def test_synthetic_parallel_is_deterministic_and_a_reversed_mapping():
    a = synthetic_parallel(num_train=50, num_valid=5, num_test=5, vocab_size=20, seed=1)
    b = load_parallel("synthetic", num_train=50, num_valid=5, num_test=5, vocab_size=20, seed=1)
    assert a.train.src_tokens == b.train.src_tokens and a.test.tgt_ids == b.test.tgt_ids
    mapping = {}
    for src, tgt in zip(a.train.src_tokens, a.train.tgt_tokens):
        assert len(src) == len(tgt) and 3 <= len(src) <= 12
        for s, t in zip(src, reversed(tgt)):
            assert mapping.setdefault(s, t) == t  # one fixed translation per word
    assert len(set(mapping.values())) == len(mapping)  # a bijection
    c = synthetic_parallel(num_train=50, num_valid=5, num_test=5, vocab_size=20, seed=2)
    assert c.train.src_tokens != a.train.src_tokens


# ---------------------------------------------------------------------------------- batching
def test_make_batch_pads_and_shifts_target():
    pairs = [([5, 6], [7, 8, 9]), ([5, 6, 7, 8], [9]), ([4], [4, 5])]
    b = make_batch(pairs)
    src, src_len, tgt_in, tgt_out, tgt_len = b  # unpacks as five tensors
    assert src_len.tolist() == [4, 2, 1] and b.indices.tolist() == [1, 0, 2]
    assert src.t().tolist() == [[5, 6, 7, 8], [5, 6, PAD_INDEX, PAD_INDEX], [4, PAD_INDEX, PAD_INDEX, PAD_INDEX]]
    assert tgt_in.t().tolist() == [[BOS_INDEX, 9, 0, 0], [BOS_INDEX, 7, 8, 9], [BOS_INDEX, 4, 5, 0]]
    assert tgt_out.t().tolist() == [[9, EOS_INDEX, 0, 0], [7, 8, 9, EOS_INDEX], [4, 5, EOS_INDEX, 0]]
    assert tgt_len.tolist() == [2, 4, 3]
    # the padding mask agrees with the lengths
    assert ((tgt_out != PAD_INDEX).sum(0) == tgt_len).all() and ((src != PAD_INDEX).sum(0) == src_len).all()
    moved = b.to("cpu")
    assert torch.equal(moved.indices, b.indices) and all(torch.equal(x, y) for x, y in zip(moved, b))
    with pytest.raises(ValueError, match="pair 1"):
        make_batch([([1], [2]), ([], [3])])


def test_length_batches_cover_all_pairs_and_group_lengths():
    corpus = synthetic_parallel(num_train=1000, num_valid=1, num_test=1, min_len=1, max_len=30, seed=0)
    pairs = corpus.train.pairs()
    g = torch.Generator().manual_seed(0)
    batches = list(length_batches(pairs, 32, shuffle=True, generator=g, pool_batches=100))
    seen = torch.cat([b.indices for b in batches]).tolist()
    assert sorted(seen) == list(range(len(pairs)))
    for b in batches:
        for j, k in enumerate(b.indices.tolist()):
            assert b.src[: b.src_lengths[j], j].tolist() == list(pairs[k][0])
            assert b.tgt_out[: b.tgt_lengths[j] - 1, j].tolist() == list(pairs[k][1])
    spread = sum(int(b.src_lengths.max() - b.src_lengths.min()) for b in batches) / len(batches)
    # random batches of 32 over lengths 1..30 span about 27; length grouping keeps them within ~1
    rand = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(1)).tolist()
    lens = [len(pairs[i][0]) for i in rand]
    rand_spread = sum(max(lens[i : i + 32]) - min(lens[i : i + 32]) for i in range(0, len(lens), 32)) / len(batches)
    assert spread <= 2 and rand_spread > 10 * max(spread, 1)


def test_length_batches_shuffle_is_deterministic_per_generator_and_sorted_without():
    pairs = synthetic_parallel(num_train=300, num_valid=1, num_test=1, seed=0).train.pairs()
    order = lambda seed: [b.indices.tolist() for b in length_batches(pairs, 16, generator=torch.Generator().manual_seed(seed))]  # noqa: E731
    assert order(3) == order(3) and order(3) != order(4)
    plain = list(length_batches(pairs, 16, shuffle=False))
    firsts = [int(b.src_lengths.max()) for b in plain]
    assert firsts == sorted(firsts)
    with pytest.raises(ValueError, match="batch_size"):
        next(length_batches(pairs, 0))


# --------------------------------------------------------------------------------------- BLEU
def test_bleu_perfect_match_is_100(cache_dir):
    c = load_multi30k(FIXTURES, cache_dir=cache_dir)
    res = bleu(c.train.tgt_tokens, c.train.tgt_tokens)
    assert res.score == pytest.approx(100.0)
    assert "tok:none" in res.signature and "case:lc" in res.signature and "nrefs:1" in res.signature


def test_bleu_partial_matches_sacrebleu_and_hand_computation(cache_dir):
    import math

    import sacrebleu

    c = load_multi30k(FIXTURES, cache_dir=cache_dir)
    refs = c.train.tgt_tokens
    hyps = [list(r) for r in refs]
    hyps[0] = hyps[0][:-3] + ["."]  # drop two words: shorter hypothesis, brevity penalty
    hyps[1][2] = "einem_anderen"  # one substituted word
    hyps[3] = hyps[3][::-1]  # scrambled order: unigrams right, higher n-grams wrong
    res = bleu(hyps, refs)
    direct = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], [[" ".join(r) for r in refs]], tokenize="none", lowercase=True, force=True)
    assert res.score == pytest.approx(direct.score)
    assert 20 < res.score < 100

    # independent computation: clipped n-gram precisions, geometric mean, brevity penalty
    def ngrams(toks, n):
        return Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))

    log_p = 0.0
    for n in range(1, 5):
        match = sum(sum((ngrams(h, n) & ngrams(r, n)).values()) for h, r in zip(hyps, refs))
        total = sum(max(len(h) - n + 1, 0) for h in hyps)
        log_p += math.log(match / total) / 4
    hyp_len, ref_len = sum(map(len, hyps)), sum(map(len, refs))
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    assert res.score == pytest.approx(100 * bp * math.exp(log_p), rel=1e-9)
    assert (res.sys_len, res.ref_len) == (hyp_len, ref_len)


def test_bleu_accepts_strings_and_checks_lengths():
    assert bleu(["a b c d e"], ["A B C D E"]).score == pytest.approx(100.0)  # case-insensitive
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])
