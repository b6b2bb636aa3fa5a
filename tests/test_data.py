"""Tests for revbench.tasks.datasets (data-dir resolution, checksums), revbench.tasks.lm.corpus (word-level
corpora, synthetic corpus, batching, AWD-LSTM variable-length segments) and revbench.tasks.repeat.data (the
repeat task)."""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from revbench.tasks import datasets
from revbench.tasks.datasets import ChecksumError, DataError, MissingDataError, resolve_data_dir, verify
from revbench.tasks.lm.corpus import (
    EOS,
    Dictionary,
    batchify,
    lm_segments,
    load_corpus,
    read_word_corpus,
    synthetic_corpus,
    variable_bptt_length,
)
from revbench.tasks.repeat.data import REPEAT_IGNORE_INDEX, repeat_task, repeat_task_accuracy

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


def real_data_dir() -> Path | None:
    """The shared datasets: $REVBENCH_DATA, else ../shared/data from the repo root."""
    env = os.environ.get("REVBENCH_DATA")
    candidates = ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


REAL = real_data_dir()


# ------------------------------------------------------------------------ data dir resolution
def test_resolve_data_dir_prefers_argument_then_env(tmp_path, monkeypatch):
    other = tmp_path / "env"
    other.mkdir()
    monkeypatch.setenv("REVBENCH_DATA", str(other))
    assert resolve_data_dir(tmp_path) == tmp_path.resolve()
    assert resolve_data_dir() == other.resolve()


def test_load_corpus_reads_data_dir_from_environment(monkeypatch):
    monkeypatch.setenv("REVBENCH_DATA", str(FIXTURES))
    assert load_corpus("ptb").train.numel() == 56


def test_resolve_data_dir_without_any_source_explains_both_options(monkeypatch):
    monkeypatch.delenv("REVBENCH_DATA", raising=False)
    with pytest.raises(MissingDataError) as exc:
        resolve_data_dir()
    msg = str(exc.value)
    assert "--data-dir" in msg and "REVBENCH_DATA" in msg
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, ValueError)


def test_resolve_data_dir_nonexistent_folder_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(MissingDataError, match="nope"):
        resolve_data_dir(missing)


# -------------------------------------------------------------------------------- checksums
def _copy_fixture(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def test_verify_fixture_passes_and_returns_hashes():
    files = ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"]
    hashes = verify(FIXTURES / "ptb", files)
    listed = dict(
        (line.split()[1], line.split()[0]) for line in (FIXTURES / "ptb" / "SHA256SUMS").read_text().splitlines()
    )
    assert hashes == {f: listed[f] for f in files}


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path):
    folder = _copy_fixture(tmp_path, "ptb")
    expected = datasets.read_sha256sums(folder)["ptb.valid.txt"]
    with open(folder / "ptb.valid.txt", "a", encoding="utf-8") as fh:
        fh.write(" corrupted line \n")
    actual = datasets.sha256_file(folder / "ptb.valid.txt")
    assert actual != expected
    with pytest.raises(ChecksumError) as exc:
        load_corpus("ptb", tmp_path)
    msg = str(exc.value)
    assert "ptb.valid.txt" in msg and expected in msg and actual in msg
    assert isinstance(exc.value, DataError)


def test_missing_file_is_named(tmp_path):
    folder = _copy_fixture(tmp_path, "ptb")
    (folder / "ptb.test.txt").unlink()
    with pytest.raises(MissingDataError, match=r"ptb\.test\.txt"):
        load_corpus("ptb", tmp_path)
    # also without verification: the reader names the file
    with pytest.raises(MissingDataError, match=r"ptb\.test\.txt"):
        load_corpus("ptb", tmp_path, verify=False)


def test_missing_sha256sums_is_an_error_unless_verify_false(tmp_path):
    folder = _copy_fixture(tmp_path, "ptb")
    (folder / "SHA256SUMS").unlink()
    with pytest.raises(MissingDataError, match="SHA256SUMS"):
        load_corpus("ptb", tmp_path)
    corpus = load_corpus("ptb", tmp_path, verify=False)
    assert corpus.train.numel() > 0


def test_verify_cache_rehashes_after_the_file_changes(tmp_path):
    folder = _copy_fixture(tmp_path, "ptb")
    verify(folder, ["ptb.train.txt"])  # fills the cache
    path = folder / "ptb.train.txt"
    st = path.stat()
    text = path.read_bytes()
    path.write_bytes(text.replace(b"the", b"teh", 1))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ChecksumError, match=r"ptb\.train\.txt"):
        verify(folder, ["ptb.train.txt"])


def test_dataset_folder_can_be_given_directly():
    corpus = load_corpus("ptb", FIXTURES / "ptb")
    assert corpus.train.numel() == 56


def test_unknown_corpus_name_lists_choices():
    with pytest.raises(ValueError, match="wikitext-2"):
        load_corpus("penn", FIXTURES)


# ------------------------------------------------------------------------------ fixtures
def test_ptb_fixture_counts_and_eos_per_line():
    c = load_corpus("ptb", FIXTURES)
    # hand-counted: words per line + one <eos> per line
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == (56, 16, 14)
    assert len(c.dictionary) == 28
    d = c.dictionary
    assert d.decode(c.test.tolist()) == "the chairman of the unit sell its stock for $ N a share".split() + [EOS]
    assert int((c.train == d.eos).sum()) == 5
    assert c.train.dtype == torch.long


def test_wikitext_fixture_counts_blank_lines_get_eos():
    c = load_corpus("wikitext-2", FIXTURES)
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == (48, 15, 10)
    assert len(c.dictionary) == 29
    # 9 lines in train, 5 of them blank: every line contributes one <eos>
    assert int((c.train == c.dictionary.eos).sum()) == 9


def test_vocabulary_from_train_oov_maps_to_unk_or_errors(tmp_path):
    files = {"train": "a.txt", "valid": "b.txt", "test": "c.txt"}
    (tmp_path / "a.txt").write_text("x y <unk>\nx z\n")
    (tmp_path / "b.txt").write_text("x never\n")
    (tmp_path / "c.txt").write_text("y\n")
    c = read_word_corpus(tmp_path, files)
    d = c.dictionary
    assert c.valid.tolist() == [d.word2idx["x"], d.unk, d.eos]
    (tmp_path / "a.txt").write_text("x y\nx z\n")  # no <unk> in the vocabulary now
    with pytest.raises(DataError, match="never"):
        read_word_corpus(tmp_path, files)


def test_dictionary_roundtrip_and_first_appearance_order():
    d = Dictionary(["b", "a", "b", EOS])
    assert d.idx2word == ["b", "a", EOS] and d.eos == 2 and d.unk is None
    assert d.decode(d.encode(["a", "b"])) == ["a", "b"]
    with pytest.raises(DataError, match="'q'"):
        d.encode(["q"])


# --------------------------------------------------------------------------- real datasets
@pytest.mark.skipif(REAL is None or not (REAL / "ptb").is_dir(), reason="PTB not found (set REVBENCH_DATA or provide ../shared/data)")
def test_real_ptb_token_counts():
    c = load_corpus("ptb", REAL)
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == (929_589, 73_760, 82_430)
    assert len(c.dictionary) == 10_000
    assert "<unk>" in c.dictionary


@pytest.mark.skipif(
    REAL is None or not (REAL / "wikitext-2").is_dir(), reason="WikiText-2 not found (set REVBENCH_DATA or provide ../shared/data)"
)
def test_real_wikitext2_token_counts():
    c = load_corpus("wikitext-2", REAL)
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == (2_088_628, 217_646, 245_569)
    assert len(c.dictionary) == 33_278
    # valid/test words all occur in train: nothing was mapped to <unk> beyond the literal <unk> tokens
    unk = c.dictionary.unk
    text_unks = sum(line.split().count("<unk>") for line in open(REAL / "wikitext-2" / "wiki.valid.tokens", encoding="utf-8"))
    assert int((c.valid == unk).sum()) == text_unks


# ------------------------------------------------------------------------ synthetic corpus
def test_synthetic_corpus_is_deterministic_per_seed():
    a = synthetic_corpus(vocab_size=50, train_tokens=5000, seed=3)
    b = synthetic_corpus(vocab_size=50, train_tokens=5000, seed=3)
    c = synthetic_corpus(vocab_size=50, train_tokens=5000, seed=4)
    assert torch.equal(a.train, b.train) and torch.equal(a.valid, b.valid) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, c.train)
    assert a.info == b.info


def test_synthetic_corpus_shape_and_vocabulary():
    c = load_corpus("synthetic", vocab_size=60, train_tokens=4000, valid_tokens=500, test_tokens=700, seed=0)
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == (4000, 500, 700)
    assert len(c.dictionary) == 60 and c.dictionary.eos == 0
    for split in (c.train, c.valid, c.test):
        assert split.dtype == torch.long and int(split.min()) >= 0 and int(split.max()) < 60
    assert int((c.train == 0).sum()) > 0  # sentences end


def test_synthetic_entropy_rate_matches_empirical_bigram_entropy():
    V = 80
    c = synthetic_corpus(vocab_size=V, train_tokens=200_000, seed=1)
    s = c.train
    counts = torch.zeros(V, V).index_put_((s[:-1], s[1:]), torch.ones(s.numel() - 1), accumulate=True)
    probs = counts / counts.sum(1, keepdim=True).clamp_min(1)
    empirical = float(-(counts * probs.clamp_min(1e-30).log()).sum() / counts.sum())
    assert empirical == pytest.approx(c.info["entropy_rate_nats"], abs=0.03)
    assert c.info["perplexity_floor"] < V / 5  # strong structure: far below uniform perplexity


def test_synthetic_corpus_is_learnable_by_small_lstm_in_one_epoch():
    torch.manual_seed(0)
    V = 100
    c = synthetic_corpus(vocab_size=V, train_tokens=20_000, seed=2)
    emb, lstm, out = torch.nn.Embedding(V, 32), torch.nn.LSTM(32, 64), torch.nn.Linear(64, V)
    params = [*emb.parameters(), *lstm.parameters(), *out.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)

    def perplexity() -> float:
        total, n = 0.0, 0
        with torch.no_grad():
            for x, y in lm_segments(batchify(c.valid, 10), 35, variable=False):
                h, _ = lstm(emb(x))
                total += float(torch.nn.functional.cross_entropy(out(h).reshape(-1, V), y.reshape(-1), reduction="sum"))
                n += y.numel()
        return math.exp(total / n)

    before = perplexity()
    for x, y in lm_segments(batchify(c.train, 20), 35, seed=0):
        h, _ = lstm(emb(x))
        loss = torch.nn.functional.cross_entropy(out(h).reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = perplexity()
    assert after < before / 5
    assert after < 3 * c.info["perplexity_floor"]


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="branching"):
        synthetic_corpus(vocab_size=5, branching=5)
    with pytest.raises(ValueError, match="vocab_size"):
        synthetic_corpus(vocab_size=2)


# ------------------------------------------------------------------------------- batching
def test_batchify_columns_follow_the_text():
    data_ = torch.arange(23)
    b = batchify(data_, 4)
    assert b.shape == (5, 4) and b.is_contiguous()
    assert b[:, 1].tolist() == [5, 6, 7, 8, 9]
    assert b.t().reshape(-1).tolist() == list(range(20))


def test_batchify_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        batchify(torch.zeros(3, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="too few"):
        batchify(torch.arange(3), 2)


@pytest.mark.parametrize("variable", [True, False])
def test_segments_tile_the_stream(variable):
    src = batchify(torch.arange(2000), 4)  # (500, 4)
    segs = list(lm_segments(src, bptt=30, variable=variable, seed=1))
    inputs = torch.cat([s.inputs for s in segs])
    targets = torch.cat([s.targets for s in segs])
    assert torch.equal(inputs, src[:-1]) and torch.equal(targets, src[1:])
    for x, y in segs:
        assert x.shape == y.shape and x.shape[1] == 4
    if not variable:
        assert all(s.inputs.size(0) == 30 for s in segs[:-1])


def test_segments_deterministic_given_generator():
    src = batchify(torch.arange(5000), 5)
    lens = lambda g: [s.inputs.size(0) for s in lm_segments(src, 70, generator=g)]  # noqa: E731
    assert lens(torch.Generator().manual_seed(7)) == lens(torch.Generator().manual_seed(7))
    assert lens(torch.Generator().manual_seed(7)) != lens(torch.Generator().manual_seed(8))


def test_variable_bptt_length_statistics():
    g = torch.Generator().manual_seed(0)
    bptt, n = 70, 20_000
    lengths = torch.tensor([variable_bptt_length(bptt, g) for _ in range(n)], dtype=torch.float64)
    assert int(lengths.min()) >= 5 and int(lengths.max()) <= bptt + 20
    half = lengths < (bptt * 3 / 4)  # the bptt/2 branch (35 +- 5) never overlaps the full one (70 +- 5)
    assert float(half.float().mean()) == pytest.approx(0.05, abs=0.01)
    full, halfs = lengths[~half], lengths[half]
    # int() truncates toward zero, so means sit about 0.5 below the nominal centre
    assert float(full.mean()) == pytest.approx(bptt - 0.5, abs=0.3)
    assert float(halfs.mean()) == pytest.approx(bptt / 2 - 0.5, abs=0.8)
    assert float(full.std()) == pytest.approx(5.0, abs=0.3)


def test_variable_length_respects_min_and_cap():
    g = torch.Generator().manual_seed(0)
    lengths = [variable_bptt_length(6, g) for _ in range(2000)]
    assert min(lengths) == 5  # bptt/2 = 3 with std 5 often falls below 5
    assert max(lengths) <= 26


# ---------------------------------------------------------------------------- repeat task
def test_repeat_task_targets_are_previous_inputs():
    g = torch.Generator().manual_seed(0)
    x, y = repeat_task(num_symbols=7, seq_len=12, batch_size=5, generator=g)
    assert x.shape == y.shape == (12, 5) and x.dtype == y.dtype == torch.long
    assert torch.equal(y[1:], x[:-1])
    assert (y[0] == REPEAT_IGNORE_INDEX).all()
    assert int(x.min()) >= 0 and int(x.max()) < 7
    x2, _ = repeat_task(7, 12, 5, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_repeat_task_loss_ignores_step_zero_and_accuracy():
    x, y = repeat_task(5, 6, 3, torch.Generator().manual_seed(1))
    perfect = torch.full((6, 3, 5), -10.0)
    perfect[1:].scatter_(2, x[:-1].unsqueeze(-1), 10.0)  # predicts the previous input; step 0 is garbage
    loss = torch.nn.functional.cross_entropy(perfect.reshape(-1, 5), y.reshape(-1))  # default ignore_index
    assert float(loss) < 1e-6
    assert repeat_task_accuracy(perfect, y) == 1.0
    assert repeat_task_accuracy(torch.zeros(6, 3, 5).scatter_(2, ((y.clamp_min(0) + 1) % 5).unsqueeze(-1), 1.0), y) == 0.0


def test_repeat_task_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_symbols"):
        repeat_task(1, 5, 2)
    with pytest.raises(ValueError, match="seq_len"):
        repeat_task(4, 1, 2)
