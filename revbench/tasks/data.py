"""Data for language modelling and the synthetic tasks: locating, verifying and loading corpora.

What is here
------------
* ``resolve_data_dir`` finds the data root (argument, else ``$REVBENCH_DATA``).
* ``verify`` checks files against the folder's ``SHA256SUMS`` (``<sha256>  <filename>`` lines,
  as written by ``sha256sum``) and raises a :class:`DataError` naming the file and both hashes.
* ``Dictionary`` / ``Corpus`` / ``load_corpus`` give word-level PTB and WikiText-2 exactly as
  pytorch/examples ``word_language_model`` and AWD-LSTM read them: each line split on whitespace
  plus one ``<eos>``; the vocabulary comes from the training split only.
* ``synthetic_corpus`` builds a corpus from a random sparse Markov chain (no files needed); it is
  what the default run and the tests use.
* ``batchify`` and ``lm_segments`` cut a token stream into AWD-LSTM style training segments.
* ``repeat_task`` makes batches for the repeat task of the paper's section 4.

Data layout expected under the data root (see ``/work/shared/data/README.md``)::

    <root>/ptb/{ptb.train.txt, ptb.valid.txt, ptb.test.txt, SHA256SUMS}
    <root>/wikitext-2/{wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens, SHA256SUMS}
    <root>/multi30k/{train,val,test2016}.{en,de} + SHA256SUMS      (see revbench.tasks.nmt.data)

``verify=False`` skips the checksum check; use it only for your own copy of a dataset that has no
``SHA256SUMS`` (results on unverified data are not comparable with published numbers).
"""
from __future__ import annotations

import hashlib
import math
import os
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import torch

ENV_VAR = "REVBENCH_DATA"
EOS = "<eos>"
UNK = "<unk>"

# Target value at step 0 of the repeat task: PyTorch's cross-entropy default ``ignore_index``.
REPEAT_IGNORE_INDEX = -100

# Files of each word-level corpus: split -> file name, inside ``<root>/<name>/``.
LM_DATASETS: dict[str, dict[str, str]] = {
    "ptb": {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"},
    "wikitext-2": {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
}


# ----------------------------------------------------------------------------------------- errors
class DataError(ValueError):
    """A dataset is misconfigured, corrupt or malformed (the message says which file and why)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data directory, data file or ``SHA256SUMS`` file does not exist."""


class ChecksumError(DataError):
    """A data file's SHA-256 differs from the one listed in ``SHA256SUMS``."""


# ------------------------------------------------------------------------------ locating the data
def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data root: ``data_dir`` if given, else ``$REVBENCH_DATA``.

    Raises :class:`MissingDataError` if neither is set or the folder does not exist.
    """
    source = "the data_dir argument (--data-dir)"
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise MissingDataError(
                "no data directory given: pass --data-dir PATH (data_dir=... in Python) or set the "
                f"environment variable {ENV_VAR}=PATH, where PATH holds ptb/, wikitext-2/ and/or multi30k/ "
                "(each with its SHA256SUMS). The synthetic corpora need no data directory."
            )
        data_dir, source = env, f"${ENV_VAR}"
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise MissingDataError(f"data directory {str(path)!r} (from {source}) does not exist or is not a folder")
    return path.resolve()


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None, files: Iterable[str] = ()) -> Path:
    """Folder of dataset ``name``: ``<root>/<name>``, or the root itself if it directly holds ``files``.

    The second form lets ``--data-dir`` point straight at e.g. a ``ptb/`` folder.
    """
    root = resolve_data_dir(data_dir)
    sub = root / name
    if sub.is_dir():
        return sub
    files = list(files)
    if files and all((root / f).is_file() for f in files):
        return root
    raise MissingDataError(f"dataset folder {str(sub)!r} not found (expected {name}/ under the data directory {str(root)!r})")


# ------------------------------------------------------------------------------------- checksums
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def clear_verify_cache() -> None:
    """Forget every cached file hash (files are re-hashed on next ``verify``)."""
    _HASH_CACHE.clear()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, cached in-process per (resolved path, size, mtime_ns)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    digest = _HASH_CACHE.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        _HASH_CACHE[key] = digest
    return digest


def read_sha256sums(folder: str | os.PathLike) -> dict[str, str]:
    """Parse ``folder/SHA256SUMS`` (``<hex>  <name>`` or ``<hex> *<name>`` per line) into {name: hex}."""
    sums = Path(folder) / "SHA256SUMS"
    if not sums.is_file():
        raise MissingDataError(
            f"checksum file {str(sums)!r} is missing; cannot verify the data in {str(folder)!r} "
            "(create it with `sha256sum FILES > SHA256SUMS`, or pass verify=False / --no-verify for your own copy)"
        )
    out: dict[str, str] = {}
    for lineno, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{str(sums)!r} line {lineno} is not '<sha256>  <filename>': {line!r}")
        out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def verify(folder: str | os.PathLike, files: Iterable[str]) -> dict[str, str]:
    """Check each of ``files`` (names inside ``folder``) against ``folder/SHA256SUMS``.

    Returns {name: sha256}. Raises :class:`MissingDataError` for a missing file or SHA256SUMS (or a
    file SHA256SUMS does not list) and :class:`ChecksumError` naming the file, the expected and the
    actual hash on a mismatch. Hashes are cached per (path, size, mtime), so repeated loads are fast.
    """
    folder = Path(folder)
    expected = read_sha256sums(folder)
    result: dict[str, str] = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            raise MissingDataError(f"data file {str(path)!r} is missing")
        if name not in expected:
            raise MissingDataError(f"data file {name!r} has no entry in {str(folder / 'SHA256SUMS')!r}")
        actual = sha256_file(path)
        if actual != expected[name]:
            raise ChecksumError(
                f"checksum mismatch for {str(path)!r}: expected sha256 {expected[name]}, got {actual} "
                "(the file is corrupt or a different version; re-copy it)"
            )
        result[name] = actual
    return result


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
    """All tokens of a text file: each line split on whitespace, then ``<eos>``."""
    tokens: list[str] = []
    extend, append = tokens.extend, tokens.append
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            extend(line.split())
            append(EOS)
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
        _verify(folder, files.values())
    return read_word_corpus(folder, files, name=key)


_verify = verify  # module-level alias: load_corpus's ``verify`` flag shadows the function name


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


# ------------------------------------------------------------------------------ the repeat task
def repeat_task(
    num_symbols: int,
    seq_len: int,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the repeat task (paper section 4): output at step t the input seen at step t-1.

    ``inputs`` are uniform random symbols in ``[0, num_symbols)``, shape (T, B). ``targets[t] =
    inputs[t-1]`` for t >= 1 and ``targets[0] = REPEAT_IGNORE_INDEX`` (-100, the default
    ``ignore_index`` of ``torch.nn.functional.cross_entropy``), so step 0, which has nothing to
    repeat, adds nothing to the loss or to :func:`repeat_task_accuracy`.
    """
    if num_symbols < 2:
        raise ValueError(f"num_symbols must be >= 2, got {num_symbols}")
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    inputs = torch.randint(num_symbols, (seq_len, batch_size), generator=generator, dtype=torch.long)
    targets = torch.empty_like(inputs)
    targets[0] = REPEAT_IGNORE_INDEX
    targets[1:] = inputs[:-1]
    return inputs, targets


def repeat_task_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of scored steps (targets != REPEAT_IGNORE_INDEX) whose argmax equals the target.

    ``logits``: (T, B, num_symbols); ``targets``: (T, B).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)} + (num_symbols,)")
    mask = targets != REPEAT_IGNORE_INDEX
    if not bool(mask.any()):
        raise ValueError("no scored steps (every target is REPEAT_IGNORE_INDEX)")
    return float((logits.argmax(-1)[mask] == targets[mask]).float().mean())
