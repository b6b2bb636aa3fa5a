"""Parallel corpora for translation: splits, Multi30K en->de from files and a synthetic corpus in memory."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from revbench.tasks.datasets import DataError, dataset_dir
from revbench.tasks.datasets import verify as verify_files
from revbench.tasks.nmt.tokenization import tokenize_file
from revbench.tasks.nmt.vocab import Vocab

# split name -> file stem of the WMT16 Multi30K task-1 release
MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test2016"}


@dataclass
class ParallelSplit:
    """One split: tokenised sentences (lower-cased strings) and their ids (no specials added)."""

    name: str
    src_tokens: list[list[str]]
    tgt_tokens: list[list[str]]
    src_ids: list[list[int]]
    tgt_ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.src_ids)

    def pairs(self) -> list[tuple[list[int], list[int]]]:
        """(src ids, tgt ids) per sentence pair, the input of :func:`length_batches`."""
        return list(zip(self.src_ids, self.tgt_ids))


@dataclass
class ParallelCorpus:
    """Train/valid/test splits with source and target vocabularies built from train."""

    name: str
    src_lang: str
    tgt_lang: str
    src_vocab: Vocab
    tgt_vocab: Vocab
    train: ParallelSplit
    valid: ParallelSplit
    test: ParallelSplit
    info: dict = field(default_factory=dict)


def _make_corpus(name, src_lang, tgt_lang, tokenised: dict, min_freq, max_vocab, info=None) -> ParallelCorpus:
    src_vocab = Vocab.build(tokenised["train"][0], min_freq, max_vocab)
    tgt_vocab = Vocab.build(tokenised["train"][1], min_freq, max_vocab)
    splits = {}
    for split, (src, tgt) in tokenised.items():
        splits[split] = ParallelSplit(
            name=split,
            src_tokens=src,
            tgt_tokens=tgt,
            src_ids=[src_vocab.encode(s) for s in src],
            tgt_ids=[tgt_vocab.encode(t) for t in tgt],
        )
    return ParallelCorpus(name, src_lang, tgt_lang, src_vocab, tgt_vocab, info=info or {}, **splits)


def load_multi30k(
    data_dir: str | os.PathLike | None = None,
    verify: bool = True,
    min_freq: int = 1,
    max_vocab: int | None = None,
    src_lang: str = "en",
    tgt_lang: str = "de",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> ParallelCorpus:
    """Load Multi30K task 1 (WMT16 release: train 29,000 / val 1,014 / test2016 1,000 pairs).

    Files ``<data_dir>/multi30k/{train,val,test2016}.{en,de}`` (``data_dir`` defaults to
    ``$REVBENCH_DATA``) are checked against ``SHA256SUMS`` unless ``verify=False``, Moses-tokenised
    and lower-cased (cached, see ``revbench.tasks.nmt.tokenization``), and numericalised with vocabularies built
    from train (words seen fewer than ``min_freq`` times, and unseen words, become ``<unk>``).
    """
    files = [f"{stem}.{lang}" for stem in MULTI30K_SPLITS.values() for lang in (src_lang, tgt_lang)]
    folder = dataset_dir("multi30k", data_dir, files)
    if verify:
        verify_files(folder, files)
    tokenised = {}
    for split, stem in MULTI30K_SPLITS.items():
        src = tokenize_file(folder / f"{stem}.{src_lang}", src_lang, cache_dir=cache_dir, use_cache=use_cache)
        tgt = tokenize_file(folder / f"{stem}.{tgt_lang}", tgt_lang, cache_dir=cache_dir, use_cache=use_cache)
        if len(src) != len(tgt):
            raise DataError(
                f"{stem}.{src_lang} has {len(src)} lines but {stem}.{tgt_lang} has {len(tgt)} in {str(folder)!r}; "
                "the files are not parallel"
            )
        tokenised[split] = (src, tgt)
    return _make_corpus("multi30k", src_lang, tgt_lang, tokenised, min_freq, max_vocab)


def synthetic_parallel(
    num_train: int = 2000,
    num_valid: int = 200,
    num_test: int = 200,
    vocab_size: int = 50,
    min_len: int = 3,
    max_len: int = 12,
    reverse: bool = True,
    seed: int = 0,
) -> ParallelCorpus:
    """A toy translation task needing no files: the target is the source mapped word by word.

    Source sentences are uniform random words ``s0 .. s{V-1}`` with lengths uniform in
    ``[min_len, max_len]``; target word ``t{perm[i]}`` translates ``s{i}`` for a fixed random
    permutation ``perm``, and the target order is reversed when ``reverse`` (so attention must
    align). Deterministic for a ``seed``. Vocabularies come from train, as for Multi30K.
    """
    if vocab_size < 2 or min_len < 1 or max_len < min_len:
        raise ValueError(f"need vocab_size >= 2 and 1 <= min_len <= max_len; got {vocab_size}, {min_len}, {max_len}")
    rng = random.Random(seed)
    perm = list(range(vocab_size))
    rng.shuffle(perm)

    def make(n: int):
        src, tgt = [], []
        for _ in range(n):
            words = [rng.randrange(vocab_size) for _ in range(rng.randint(min_len, max_len))]
            mapped = [f"t{perm[w]}" for w in words]
            src.append([f"s{w}" for w in words])
            tgt.append(mapped[::-1] if reverse else mapped)
        return src, tgt

    tokenised = {"train": make(num_train), "valid": make(num_valid), "test": make(num_test)}
    info = {"generator": "word-mapped " + ("reversal" if reverse else "copy"), "seed": seed}
    return _make_corpus("synthetic", "src", "tgt", tokenised, 1, None, info)


def load_parallel(name: str, data_dir=None, verify: bool = True, **kwargs) -> ParallelCorpus:
    """``"multi30k"`` (files) or ``"synthetic"`` (built in memory); kwargs go to the loader."""
    key = name.lower()
    if key == "multi30k":
        return load_multi30k(data_dir, verify, **kwargs)
    if key == "synthetic":
        return synthetic_parallel(**kwargs)
    raise ValueError(f"unknown parallel corpus {name!r}; choose 'multi30k' or 'synthetic'")
