"""Data for neural machine translation: Multi30K en->de, a synthetic parallel corpus, batching and BLEU.

Preprocessing follows the reversible-RNN paper: the Moses tokenizer (``sacremoses``) with aggressive
dash splitting and no HTML escaping, then lower-casing. Aggressive dash splitting turns
``well-known`` into ``well @-@ known``; the ``@-@`` tokens stay in the vocabulary and in BLEU
(as in the paper's tokenised BLEU) and :func:`detokenize` glues them back (``well-known``).

Tokenising the 29,000 training pairs takes a few seconds, so tokenised files are cached as pickles
in ``cache_dir`` (default ``$REVBENCH_CACHE``, else ``$XDG_CACHE_HOME/revbench``, else
``~/.cache/revbench``), keyed by the file's SHA-256, the language and the tokenizer settings and
version. The shared data folder is never written to. Delete the cache folder to rebuild it;
``use_cache=False`` bypasses it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import random
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import torch

from revbench.tasks.data import DataError, MissingDataError, dataset_dir, sha256_file
from revbench.tasks.data import verify as verify_files

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
PAD_INDEX, UNK_INDEX, BOS_INDEX, EOS_INDEX = 0, 1, 2, 3
SPECIALS = (PAD, UNK, BOS, EOS)
DASH_TOKEN = "@-@"

# split name -> file stem of the WMT16 Multi30K task-1 release
MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test2016"}

# bump when tokenisation changes, so old cache entries are not reused
_TOKENIZER_SETTINGS = "moses;aggressive_dash_splits=True;escape=False;lower={lower};v1"


# ------------------------------------------------------------------------------- tokenisation
def _sacremoses():
    try:
        import sacremoses
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "Multi30K tokenisation needs sacremoses: pip install 'revbench[nmt]' (or pip install sacremoses)"
        ) from exc
    return sacremoses


@lru_cache(maxsize=None)
def _tokenizer(lang: str):
    return _sacremoses().MosesTokenizer(lang=lang)


@lru_cache(maxsize=None)
def _detokenizer(lang: str):
    return _sacremoses().MosesDetokenizer(lang=lang)


def tokenize(sentence: str, lang: str, lower: bool = True) -> list[str]:
    """Moses-tokenise one sentence (aggressive dash splits, no escaping), then lower-case it."""
    tokens = _tokenizer(lang).tokenize(sentence.strip(), aggressive_dash_splits=True, escape=False)
    return [t.lower() for t in tokens] if lower else tokens


def detokenize(tokens: Sequence[str], lang: str) -> str:
    """Inverse of :func:`tokenize` up to case: glue ``a @-@ b`` back to ``a-b``, then Moses-detokenise.

    Gluing ``@-@`` here (instead of relying on the detokenizer) keeps the round trip independent of
    the sacremoses version. A ``@-@`` at either end of the sentence becomes a plain ``-``.
    """
    glued: list[str] = []
    join_next = False
    for tok in tokens:
        if tok == DASH_TOKEN:
            if glued:
                glued[-1] += "-"
            else:
                glued.append("-")
            join_next = True
            continue
        if join_next:
            glued[-1] += tok
            join_next = False
        else:
            glued.append(tok)
    return _detokenizer(lang).detokenize(glued)


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("REVBENCH_CACHE"):
        return Path(os.environ["REVBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "revbench"


def tokenize_file(
    path: str | os.PathLike,
    lang: str,
    lower: bool = True,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> list[list[str]]:
    """Tokenise every line of ``path``; cached on disk (see the module docstring).

    An unreadable or unwritable cache is ignored (the file is just tokenised again).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"data file {str(path)!r} is missing")
    settings = _TOKENIZER_SETTINGS.format(lower=lower)
    cache_file = None
    if use_cache:
        version = getattr(_sacremoses(), "__version__", "unknown")
        key = hashlib.sha256(f"{sha256_file(path)}|{lang}|{settings}|sacremoses={version}".encode()).hexdigest()[:24]
        cache_file = _cache_root(cache_dir) / "tokenized" / f"{path.name}.{key}.pkl"
        try:
            with open(cache_file, "rb") as fh:
                cached = pickle.load(fh)
            if isinstance(cached, list):
                return cached
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
            pass
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    tokens = [tokenize(line, lang, lower) for line in lines]
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                pickle.dump(tokens, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cache_file)
        except OSError:
            pass
    return tokens


# --------------------------------------------------------------------------------- vocabulary
class Vocab:
    """Token <-> id map with ``<pad>``=0, ``<unk>``=1, ``<s>``=2, ``</s>``=3, then words.

    Words are ordered by descending frequency, ties alphabetically (deterministic).
    """

    def __init__(self, words: Iterable[str] = ()):
        self.itos: list[str] = list(SPECIALS)
        for w in words:
            if w not in SPECIALS:
                self.itos.append(w)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be distinct")

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        """Vocabulary of the words occurring at least ``min_freq`` times (at most ``max_size`` words)."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts = Counter(w for s in sentences for w in s)
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max_size]
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens`` (no ``<s>``/``</s>`` added); unknown words map to ``<unk>``."""
        stoi = self.stoi
        return [stoi.get(t, UNK_INDEX) for t in tokens]

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Tokens of ``ids``; with ``strip_special`` stop at ``</s>`` and drop ``<pad>``/``<s>``."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if strip_special:
                if i == EOS_INDEX:
                    break
                if i in (PAD_INDEX, BOS_INDEX):
                    continue
            out.append(self.itos[i])
        return out


# ------------------------------------------------------------------------------ corpora
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
    and lower-cased (cached, see the module docstring), and numericalised with vocabularies built
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


# ---------------------------------------------------------------------------------- batching
class _BatchFields(NamedTuple):
    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_lengths: torch.Tensor


class Batch(_BatchFields):
    """A padded batch; unpacks as ``src, src_lengths, tgt_in, tgt_out, tgt_lengths``.

    * ``src`` (S, B): source ids (no ``<s>``/``</s>``), padded with ``<pad>``; columns are sorted by
      decreasing source length (ready for ``pack_padded_sequence(enforce_sorted=True)``).
    * ``src_lengths`` (B,): true source lengths (CPU LongTensor).
    * ``tgt_in`` (T, B): ``<s> y1 .. yn`` and ``tgt_out`` (T, B): ``y1 .. yn </s>``, padded.
    * ``tgt_lengths`` (B,): ``n + 1``, the number of real positions in ``tgt_in``/``tgt_out``.
    * ``indices`` (B,) attribute (not unpacked): position of each column's pair in the input list,
      to put decoded outputs back in corpus order.
    """

    indices: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """The same batch with every tensor on ``device`` (lengths stay on the CPU for packing)."""
        moved = Batch(
            self.src.to(device, non_blocking=non_blocking),
            self.src_lengths,
            self.tgt_in.to(device, non_blocking=non_blocking),
            self.tgt_out.to(device, non_blocking=non_blocking),
            self.tgt_lengths,
        )
        moved.indices = self.indices
        return moved


def _pad(seqs: Sequence[Sequence[int]], pad_index: int) -> torch.Tensor:
    out = torch.full((max(len(s) for s in seqs), len(seqs)), pad_index, dtype=torch.long)
    for j, s in enumerate(seqs):
        out[: len(s), j] = torch.as_tensor(s, dtype=torch.long)
    return out


def make_batch(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], indices: Sequence[int] | None = None) -> Batch:
    """Pad a list of (src ids, tgt ids) pairs into a :class:`Batch` (sorted by decreasing src length)."""
    if not pairs:
        raise ValueError("cannot make a batch from zero sentence pairs")
    idx = list(range(len(pairs))) if indices is None else list(indices)
    for k, (src, tgt) in zip(idx, pairs):
        if len(src) == 0:
            raise ValueError(f"sentence pair {k} has an empty source sentence")
    order = sorted(range(len(pairs)), key=lambda j: -len(pairs[j][0]))  # stable: ties keep input order
    srcs = [list(pairs[j][0]) for j in order]
    tgts = [list(pairs[j][1]) for j in order]
    batch = Batch(
        _pad(srcs, PAD_INDEX),
        torch.tensor([len(s) for s in srcs], dtype=torch.long),
        _pad([[BOS_INDEX] + t for t in tgts], PAD_INDEX),
        _pad([t + [EOS_INDEX] for t in tgts], PAD_INDEX),
        torch.tensor([len(t) + 1 for t in tgts], dtype=torch.long),
    )
    batch.indices = torch.tensor([idx[j] for j in order], dtype=torch.long)
    return batch


def length_batches(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    pool_batches: int = 50,
) -> Iterator[Batch]:
    """Yield padded batches of ``batch_size`` pairs (the last may be smaller) grouped by length.

    With ``shuffle``: pairs are shuffled, cut into pools of ``pool_batches * batch_size``, each
    pool is sorted by (src length, tgt length) and cut into batches, and the batch order is
    shuffled (torchtext BucketIterator style): batches hold similar lengths, so little padding,
    yet differ from epoch to epoch. Without ``shuffle``: all pairs are sorted by length
    (deterministic; use ``batch.indices`` to restore corpus order). Randomness comes from
    ``generator`` (else torch's global RNG).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pool_batches < 1:
        raise ValueError(f"pool_batches must be >= 1, got {pool_batches}")
    n = len(pairs)
    if n == 0:
        return
    length_key = lambda i: (len(pairs[i][0]), len(pairs[i][1]), i)  # noqa: E731
    if shuffle:
        order = torch.randperm(n, generator=generator).tolist()
        pool = pool_batches * batch_size
        chunks: list[list[int]] = []
        for start in range(0, n, pool):
            sorted_pool = sorted(order[start : start + pool], key=length_key)
            chunks.extend(sorted_pool[i : i + batch_size] for i in range(0, len(sorted_pool), batch_size))
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    else:
        order = sorted(range(n), key=length_key)
        chunks = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    for chunk in chunks:
        yield make_batch([pairs[i] for i in chunk], chunk)


# -------------------------------------------------------------------------------------- BLEU
@dataclass
class BleuResult:
    """Corpus BLEU (0-100) with sacrebleu's signature and the n-gram statistics behind it."""

    score: float
    signature: str
    precisions: list[float]
    brevity_penalty: float
    sys_len: int
    ref_len: int

    def __str__(self) -> str:
        return f"BLEU = {self.score:.2f} ({self.signature})"


def bleu(hypotheses: Sequence[Sequence[str] | str], references: Sequence[Sequence[str] | str]) -> BleuResult:
    """Corpus BLEU of tokenised hypotheses against one tokenised reference each.

    Items are token lists or space-joined strings of the tokenised, lower-cased text (as in
    ``ParallelSplit.tgt_tokens``, ``@-@`` included). sacrebleu runs with ``tokenize="none"`` and
    ``lowercase=True``, which is multi-bleu.perl on tokenised text, the BLEU the paper reports. It is
    NOT comparable with detokenised SacreBLEU (signature ``tok:13a``); the returned signature says
    which one this is.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("BLEU needs at least one sentence")
    try:
        from sacrebleu.metrics import BLEU
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError("BLEU needs sacrebleu: pip install 'revbench[nmt]'") from exc

    def text(x):
        return x if isinstance(x, str) else " ".join(x)

    metric = BLEU(tokenize="none", lowercase=True, force=True)
    res = metric.corpus_score([text(h) for h in hypotheses], [[text(r) for r in references]])
    return BleuResult(
        score=float(res.score),
        signature=str(metric.get_signature()),
        precisions=[float(p) for p in res.precisions],
        brevity_penalty=float(res.bp),
        sys_len=int(res.sys_len),
        ref_len=int(res.ref_len),
    )
