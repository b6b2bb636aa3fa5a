"""Word-level language-model corpora and how training cuts them into segments.

* ``Dictionary`` / ``Corpus`` / ``load_corpus`` give word-level PTB and WikiText-2 exactly as
  pytorch/examples ``word_language_model`` and AWD-LSTM read them: each line split on whitespace
  plus one ``<eos>``; the vocabulary comes from the training split only. Where the files live and
  how they are checked: ``revbench.tasks.datasets``.
* ``synthetic_corpus`` builds a corpus from a random sparse Markov chain (no files needed); it is
  what the default run and the tests use.
* ``batchify`` and ``lm_segments`` cut a token stream into AWD-LSTM style training segments.
"""
from __future__ import annotations

import math
import os
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import torch

from revbench.tasks.datasets import DataError, MissingDataError, dataset_dir
from revbench.tasks.datasets import verify as verify_files

EOS = "<eos>"
UNK = "<unk>"

# Files of each word-level corpus: split -> file name, inside ``<root>/<name>/``.
LM_DATASETS: dict[str, dict[str, str]] = {
    "ptb": {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"},
    "wikitext-2": {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
}


# ------------------------------------------------------------------------------ word-level corpora
class Dictionary:
    """Word <-> id map. Ids are given in order of first appearance (as in pytorch/examples)."""

    def __init__(self, words: Iterable[str] = ()):
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []
        for w in words:
            self.add_word(w)

    def add_word(self, word: str) -> int:
        idx = self.word2idx.get(word)
        if idx is None:
            idx = self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return idx

    def __len__(self) -> int:
        return len(self.idx2word)

    def __contains__(self, word: object) -> bool:
        return word in self.word2idx

    @property
    def eos(self) -> int:
        return self.word2idx[EOS]

    @property
    def unk(self) -> int | None:
        """Id of ``<unk>`` or None if the vocabulary has none."""
        return self.word2idx.get(UNK)

    def encode(self, words: Iterable[str]) -> list[int]:
        """Ids of ``words``; unknown words map to ``<unk>`` (KeyError naming the word if there is none)."""
        w2i, unk = self.word2idx, self.unk
        try:
            return [w2i[w] for w in words]
        except KeyError as exc:
            if unk is None:
                raise DataError(f"word {exc.args[0]!r} is not in the vocabulary and the vocabulary has no {UNK}") from None
            return [w2i.get(w, unk) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.idx2word[int(i)] for i in ids]


@dataclass
class Corpus:
    """A word-level corpus: 1-D LongTensors of token ids for each split, and the dictionary.

    ``info`` holds extra facts (for the synthetic corpus: the chain's entropy rate and so the
    lowest achievable perplexity).
    """

    name: str
    dictionary: Dictionary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    info: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.dictionary)


def _read_tokens(path: Path) -> list[str]:
    """All tokens of a text file: each line split on whitespace, then ``<eos>``. A file that is not UTF-8 text
    (or cannot be read) is a :class:`DataError` naming it."""
    tokens: list[str] = []
    extend, append = tokens.extend, tokens.append
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                extend(line.split())
                append(EOS)
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {str(path)!r} is not UTF-8 text ({exc.reason}): is it corrupt, or not a "
                        "corpus file?") from None
    except OSError as exc:
        raise DataError(f"data file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    return tokens


def _encode_split(tokens: list[str], dictionary: Dictionary, path: Path) -> torch.Tensor:
    w2i = dictionary.word2idx
    try:
        ids = [w2i[w] for w in tokens]
    except KeyError as exc:
        unk = dictionary.unk
        if unk is None:
            raise DataError(
                f"{str(path)!r} contains the word {exc.args[0]!r}, which never occurs in the training split, "
                f"and the vocabulary has no {UNK} to map it to"
            ) from None
        ids = [w2i.get(w, unk) for w in tokens]
    return torch.tensor(ids, dtype=torch.long)


def read_word_corpus(folder: str | os.PathLike, files: dict[str, str], name: str = "corpus") -> Corpus:
    """Read a word-level corpus from ``folder`` (``files``: split -> file name for train/valid/test).

    The dictionary is built from the train split; valid/test words missing from it map to ``<unk>``
    when the vocabulary has one, and are an error otherwise.
    """
    folder = Path(folder)
    for split in ("train", "valid", "test"):
        if split not in files:
            raise ValueError(f"files must name a 'train', 'valid' and 'test' file; got {sorted(files)}")
        if not (folder / files[split]).is_file():
            raise MissingDataError(f"data file {str(folder / files[split])!r} is missing")
    train_tokens = _read_tokens(folder / files["train"])
    dictionary = Dictionary(train_tokens)
    splits = {"train": torch.tensor([dictionary.word2idx[w] for w in train_tokens], dtype=torch.long)}
    for split in ("valid", "test"):
        path = folder / files[split]
        splits[split] = _encode_split(_read_tokens(path), dictionary, path)
    return Corpus(name=name, dictionary=dictionary, **splits)


def load_corpus(name: str, data_dir: str | os.PathLike | None = None, verify: bool = True, **synthetic_kwargs) -> Corpus:
    """Load ``"ptb"``, ``"wikitext-2"`` (from the data directory) or ``"synthetic"`` (built in memory).

    ``data_dir`` defaults to ``$REVBENCH_DATA``; ``verify=False`` skips the SHA256SUMS check (for a
    user's own copy without checksums). Extra keyword arguments go to :func:`synthetic_corpus`.
    """
    key = name.lower()
    if key == "synthetic":
        return synthetic_corpus(**synthetic_kwargs)
    if synthetic_kwargs:
        raise TypeError(f"unexpected arguments for corpus {name!r}: {sorted(synthetic_kwargs)}")
    if key not in LM_DATASETS:
        raise ValueError(f"unknown corpus {name!r}; choose one of {sorted(LM_DATASETS) + ['synthetic']}")
    files = LM_DATASETS[key]
    folder = dataset_dir(key, data_dir, files.values())
    if verify:
        verify_files(folder, files.values())
    return read_word_corpus(folder, files, name=key)


# ------------------------------------------------------------------------------ synthetic corpus
def synthetic_corpus(
    vocab_size: int = 200,
    train_tokens: int = 50_000,
    valid_tokens: int | None = None,
    test_tokens: int | None = None,
    branching: int = 4,
    mean_sentence_len: float = 12.0,
    seed: int = 0,
) -> Corpus:
    """A corpus drawn from a random sparse Markov chain over ``vocab_size`` words (``<eos>`` included).

    Each word ``w1 .. w{V-1}`` may be followed by ``branching`` fixed successor words (random, with
    Dirichlet(1) weights) or by ``<eos>`` (probability ``1/mean_sentence_len``); after ``<eos>`` a
    sentence starts with one of ``branching`` start words. So the text has learnable bigram
    structure: a unigram model sits near perplexity ~V, a model that learns the chain reaches
    ``info["perplexity_floor"]`` (exp of the chain's entropy rate, about ``branching``).

    Splits are consecutive pieces of one stream (same distribution). Deterministic for a ``seed``.
    ``valid_tokens``/``test_tokens`` default to a tenth of ``train_tokens`` (at least 1,000).
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be at least 3 (<eos> and two words), got {vocab_size}")
    if branching < 1 or branching > vocab_size - 1:
        raise ValueError(f"branching must be in 1..vocab_size-1 ({vocab_size - 1}), got {branching}")
    if mean_sentence_len <= 1:
        raise ValueError(f"mean_sentence_len must be > 1, got {mean_sentence_len}")
    if train_tokens < 2:
        raise ValueError(f"train_tokens must be at least 2, got {train_tokens}")
    valid_tokens = max(1000, train_tokens // 10) if valid_tokens is None else valid_tokens
    test_tokens = max(1000, train_tokens // 10) if test_tokens is None else test_tokens
    if valid_tokens < 2 or test_tokens < 2:
        raise ValueError("valid_tokens and test_tokens must be at least 2")

    g = torch.Generator().manual_seed(seed)
    V, k, p_end = vocab_size, branching, 1.0 / mean_sentence_len
    # successors[i]: k distinct word ids (1..V-1) for state i (state 0 = <eos> = sentence start)
    successors = torch.stack([torch.randperm(V - 1, generator=g)[:k] + 1 for _ in range(V)])
    gamma = -torch.log(torch.rand(V, k, generator=g).clamp_min(1e-12))  # Exp(1) = Gamma(1) -> Dirichlet(1)
    probs = gamma / gamma.sum(1, keepdim=True)
    probs[1:] *= 1.0 - p_end  # words end the sentence with probability p_end; <eos> never follows <eos>

    # sample the stream with inverse-CDF lookups on precomputed cumulative tables
    succ_l = successors.tolist()
    cum_l = [list(accumulate(row)) for row in probs.tolist()]
    total = train_tokens + valid_tokens + test_tokens
    u = torch.rand(total, generator=g, dtype=torch.float64).tolist()
    out = [0] * total
    state = 0
    for t in range(total):
        cum = cum_l[state]
        j = bisect_right(cum, u[t])
        state = succ_l[state][j] if j < k else 0
        out[t] = state
    stream = torch.tensor(out, dtype=torch.long)

    # entropy rate sum_i pi_i H(P_i) of the chain (stationary pi by power iteration on the sparse chain)
    dense_rows = torch.zeros(V, k + 1, dtype=torch.float64)
    dense_rows[:, :k] = probs.double()
    dense_rows[1:, k] = p_end
    targets = torch.cat([successors, torch.zeros(V, 1, dtype=torch.long)], 1)
    pi = torch.full((V,), 1.0 / V, dtype=torch.float64)
    for _ in range(2000):
        new = torch.zeros(V, dtype=torch.float64).index_add_(0, targets.reshape(-1), (pi[:, None] * dense_rows).reshape(-1))
        done = torch.abs(new - pi).max() < 1e-13
        pi = new
        if done:
            break
    p = dense_rows.clamp_min(1e-300)
    row_entropy = -(dense_rows * torch.log(p)).sum(1)
    entropy_rate = float((pi * row_entropy).sum())

    dictionary = Dictionary([EOS] + [f"w{i}" for i in range(1, V)])
    a, b = train_tokens, train_tokens + valid_tokens
    return Corpus(
        name="synthetic",
        dictionary=dictionary,
        train=stream[:a].clone(),
        valid=stream[a:b].clone(),
        test=stream[b:].clone(),
        info={
            "generator": "sparse Markov chain",
            "seed": seed,
            "branching": k,
            "mean_sentence_len": mean_sentence_len,
            "entropy_rate_nats": entropy_rate,
            "perplexity_floor": math.exp(entropy_rate),
        },
    )


# ----------------------------------------------------------------------------- batching for LM
def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D token stream into ``batch_size`` contiguous columns: an (N, B) LongTensor.

    ``N = len(data) // batch_size``; the remainder is dropped (as in pytorch/examples). Column b
    holds tokens ``data[b*N:(b+1)*N]``, so reading down a column follows the text.
    """
    if data.dim() != 1:
        raise ValueError(f"batchify expects a 1-D token tensor, got shape {tuple(data.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = data.size(0) // batch_size
    if n < 2:
        raise ValueError(f"{data.size(0)} tokens are too few for batch_size {batch_size} (need at least 2 per column)")
    return data[: n * batch_size].view(batch_size, n).t().contiguous()


class Segment(NamedTuple):
    """One training segment: ``targets`` are ``inputs`` shifted one step down the stream; both (T, B)."""

    inputs: torch.Tensor
    targets: torch.Tensor


def variable_bptt_length(
    bptt: int = 70,
    generator: torch.Generator | None = None,
    p_full: float = 0.95,
    std: float = 5.0,
    min_len: int = 5,
    max_extra: int = 20,
) -> int:
    """Draw one AWD-LSTM segment length.

    ``base = bptt`` with probability ``p_full`` else ``bptt / 2``; ``len = int(Normal(base, std))``
    (truncated toward zero, as AWD-LSTM's ``int(np.random.normal(...))``), clamped to
    ``[min_len, bptt + max_extra]``. The upper cap (absent in AWD-LSTM, where it is a rare OOM risk)
    is 4 standard deviations above ``bptt`` by default, so it almost never binds.
    """
    base = bptt if float(torch.rand((), generator=generator)) < p_full else bptt / 2.0
    length = int(base + std * float(torch.randn((), generator=generator)))
    return max(min_len, min(length, bptt + max_extra))


def lm_segments(
    source: torch.Tensor,
    bptt: int = 70,
    variable: bool = True,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    **length_kwargs,
) -> Iterator[Segment]:
    """Iterate over (inputs, targets) segments of a batchified (N, B) stream, front to back.

    With ``variable=True`` each segment length is drawn by :func:`variable_bptt_length` (AWD-LSTM);
    otherwise it is ``bptt``. The last segment is shortened to fit. Segments tile the stream: the
    inputs concatenate to ``source[:-1]`` and the targets to ``source[1:]``. AWD-LSTM scales the
    learning rate by ``inputs.size(0) / bptt`` per segment; that is left to the trainer.

    Randomness comes from ``generator``, else a new generator seeded with ``seed``, else torch's
    global RNG (so ``torch.manual_seed`` makes it repeatable).
    """
    if source.dim() != 2:
        raise ValueError(f"lm_segments expects a batchified (N, B) tensor, got shape {tuple(source.shape)}")
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1, got {bptt}")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    n = source.size(0)
    i = 0
    while i < n - 1:
        length = variable_bptt_length(bptt, generator, **length_kwargs) if variable else bptt
        length = min(length, n - 1 - i)
        yield Segment(source[i : i + length], source[i + 1 : i + 1 + length])
        i += length
