"""Neural machine translation with the reversible encoder-decoder: training, decoding, evaluation.

* :class:`NMTConfig` and :data:`CONFIGS` (``tiny`` for tests, ``small`` for a CPU, ``paper`` for the paper's
  Multi30K setting: 1 layer, H = emb = 300, batch 64, SGD with gradient-norm clipping at 5, uniform init
  +-0.1, dropout 0.4, lr 1.0 LSTM / 0.5 RevLSTM / 0.2 GRU and RevGRU, halved whenever the validation
  perplexity gets worse, as the reference's OpenNMT trainer did).
* :func:`train`: trains into an output folder with an atomic, resumable checkpoint (temporary file +
  ``os.replace``); a resumed run gives the same parameters as an uninterrupted one (the batch order of an
  epoch is a function of the seed and the epoch; the global RNG, which draws dropout masks, is checkpointed).
* :func:`greedy_decode` / :func:`beam_search` and :func:`translate` (with the reference's ``-replace_unk``:
  an output ``<unk>`` becomes the source word with the highest attention weight), :func:`bleu_on` (tokenised
  corpus BLEU of ``revbench.tasks.nmt.data.bleu``).
* :func:`measure_step_memory`: the live-tensor peak of one training step (``revbench.measure.memory``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from revbench.tasks.nmt.data import (BOS_INDEX, EOS_INDEX, UNK_INDEX, ParallelCorpus, bleu, length_batches, load_parallel,
                       make_batch)
from revbench.models.seq2seq import Decoder, Seq2Seq, encode, evaluate_batch, get_method, select_carry

PAPER_LR = {"lstm": 1.0, "revlstm": 0.5, "nf-revlstm": 0.5, "gru": 0.2, "revgru": 0.2, "nf-revgru": 0.2}
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
RESULTS = "results.json"


class CheckpointError(ValueError):
    """An output folder's checkpoint cannot be used (another configuration, or it exists without --resume)."""


@dataclass
class NMTConfig:
    """Everything a training run depends on (saved in the checkpoint; a resume must match)."""

    data: str = "multi30k"                 # "multi30k" or "synthetic"
    cell: str = "revgru"
    context: str = "emb+h:20"
    max_forget_bits: int | None = 3
    method: str = "reversible"             # "reversible", "bptt", "checkpoint" or "gruslys"
    method_options: dict = dataclasses.field(default_factory=dict)   # e.g. {"segments": 4}, {"budget": 0.1}
    num_layers: int = 1
    hidden_size: int = 300
    emb_size: int = 300
    batch_size: int = 64
    epochs: int = 80
    lr: float | None = None                # None: the paper's rate for the cell (PAPER_LR)
    lr_decay: float = 0.5                  # multiply the rate by this when validation perplexity gets worse
    clip: float = 5.0                      # gradient-norm clipping
    dropout: float = 0.4
    init_range: float = 0.1
    loss_norm: str = "sents"               # loss = sum of token cross-entropies / sentences (OpenNMT) or tokens
    min_freq: int = 1                      # vocabulary: words seen at least this often in train
    max_train: int | None = None           # use only the first N training pairs (None: all)
    beam_size: int = 5
    length_penalty: float = 0.0            # beam score / length**alpha (0: raw log-probability, OpenNMT's default)
    replace_unk: bool = True
    seed: int = 1
    save_every: int = 200                  # checkpoint every N training steps (and at every epoch end)
    dtype: str = "float32"
    synthetic_train: int = 2000            # synthetic corpus sizes
    synthetic_vocab: int = 30

    def resolved_lr(self) -> float:
        return float(self.lr) if self.lr is not None else PAPER_LR[self.cell]

    def make_method(self):
        """The configured training method (``revbench.models.seq2seq.get_method``)."""
        return get_method(self.method, normalize=self.loss_norm, **self.method_options)

    def validate(self) -> "NMTConfig":
        from revbench.core.cells import CELL_TYPES, REVERSIBLE_CELLS, validate_max_forget_bits
        from revbench.models.seq2seq import ContextSpec

        if self.data not in ("multi30k", "synthetic"):
            raise ValueError(f"data must be 'multi30k' or 'synthetic', got {self.data!r}")
        if self.cell not in CELL_TYPES:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELL_TYPES)}")
        ContextSpec.parse(self.context)
        if self.cell in REVERSIBLE_CELLS:
            validate_max_forget_bits(self.max_forget_bits)
        if not isinstance(self.method_options, dict):
            raise ValueError(f"method_options must be a dict of the method's options, got {self.method_options!r}")
        self.make_method()                 # an unknown method or a bad option is a clear ValueError
        if self.method == "reversible" and self.cell not in REVERSIBLE_CELLS:
            raise ValueError(f"method 'reversible' needs a reversible cell, not {self.cell!r}; use --method bptt")
        for name in ("num_layers", "hidden_size", "emb_size", "batch_size", "epochs", "min_freq", "beam_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.loss_norm not in ("sents", "tokens"):
            raise ValueError(f"loss_norm must be 'sents' or 'tokens', got {self.loss_norm!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.max_train is not None and self.max_train < 1:
            raise ValueError(f"max_train must be a positive int or None, got {self.max_train!r}")
        return self


# Named configurations: field overrides of NMTConfig's defaults (which are the paper's Multi30K setting).
CONFIGS = {
    "paper": {},
    # CPU-sized: a quarter of the paper's width, a vocabulary of words seen twice, a few epochs
    "small": dict(hidden_size=128, emb_size=128, min_freq=2, epochs=3, save_every=100),
    # for tests and smoke runs: the synthetic corpus, a tiny model, a higher rate so one epoch learns
    "tiny": dict(data="synthetic", hidden_size=32, emb_size=16, batch_size=16, epochs=1, lr=1.0, dropout=0.1,
                 loss_norm="tokens",
                 context="emb+h:4", beam_size=3, save_every=0, synthetic_train=400),
}


def make_config(name: str = "paper", **overrides) -> NMTConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown NMT configuration {name!r}; choose one of {', '.join(CONFIGS)}")
    fields = {f.name for f in dataclasses.fields(NMTConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown NMT configuration field(s) {', '.join(bad)}")
    values = {**CONFIGS[name], **overrides}
    return NMTConfig(**values).validate()


# ------------------------------------------------------------------------------------------------ data/model
def load_corpus(config: NMTConfig, data_dir=None) -> ParallelCorpus:
    if config.data == "synthetic":
        return load_parallel("synthetic", num_train=config.synthetic_train, num_valid=100, num_test=100,
                             vocab_size=config.synthetic_vocab, seed=config.seed)
    return load_parallel("multi30k", data_dir=data_dir, min_freq=config.min_freq)


def build_model(config: NMTConfig, corpus: ParallelCorpus) -> Seq2Seq:
    model = Seq2Seq(len(corpus.src_vocab), len(corpus.tgt_vocab), config.emb_size, config.hidden_size,
                    config.num_layers, cell=config.cell, max_forget_bits=config.max_forget_bits,
                    context=config.context, dropout=config.dropout, init_range=config.init_range)
    return model.to(getattr(torch, config.dtype))


def train_pairs(config: NMTConfig, corpus: ParallelCorpus):
    pairs = corpus.train.pairs()
    pairs = [p for p in pairs if len(p[0]) > 0]
    return pairs[:config.max_train] if config.max_train else pairs


def epoch_batches(config: NMTConfig, pairs, epoch: int):
    """The batches of an epoch: a deterministic function of (seed, epoch), so a resume sees the same order."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return list(length_batches(pairs, config.batch_size, shuffle=True, generator=g))


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_loss(model: Seq2Seq, pairs, batch_size: int = 64) -> dict:
    """Mean target-token cross-entropy and perplexity of ``pairs`` (eval mode, no dropout)."""
    was = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for b in length_batches(pairs, batch_size, shuffle=False):
            s, n = evaluate_batch(model, b.src, b.src_lengths, b.tgt_in, b.tgt_out, b.tgt_lengths)
            total, tokens = total + s, tokens + n
    finally:
        model.train(was)
    loss = total / max(tokens, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 100.0)), "tokens": tokens}


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


def bleu_on(model, split, vocab, beam_size=1, length_penalty=0.0, replace_unk=True, batch_size=64):
    """(BleuResult, hypotheses) of ``split`` against its tokenised, lower-cased references."""
    hyps = translate(model, split, vocab, beam_size, batch_size, length_penalty, replace_unk)
    return bleu(hyps, split.tgt_tokens), hyps


# ------------------------------------------------------------------------------------------------ memory
def representative_batch(pairs, batch_size: int):
    """A batch of typical lengths: ``batch_size`` pairs from the middle of the length-sorted training set."""
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1]), i))
    mid = max(0, len(order) // 2 - batch_size // 2)
    chosen = order[mid:mid + batch_size]
    return make_batch([pairs[i] for i in chosen], chosen)


def measure_step_memory(model: Seq2Seq, batch, method: str, loss_norm: str = "sents", seed: int = 0) -> dict:
    """Live-tensor peak of one training step (``revbench.measure.memory.LiveTensorMeter``): bytes of tensors created
    during the step and alive at once, with the parameter gradients allocated beforehand (so they are not
    counted). Returns ``live_peak_bytes``, its split and the step's paper-style stats. Gradients are cleared.

    Per side, the live bytes each forward pass leaves behind for its backward pass: ``enc_held_bytes`` (live
    at the end of the encoder's forward pass minus live at the start of the step: the encoder's graph or
    buffers, stored states and the attention context) and ``dec_held_bytes`` (live at the end of the decoder's
    forward pass minus live at the end of the encoder's). The backward pass's working set (the one step or
    stretch being recomputed) is in ``live_peak_bytes`` only."""
    from revbench.measure.memory import LiveTensorMeter

    params = list(model.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    m = get_method(method, normalize=loss_norm)
    meter = LiveTensorMeter(params=params)
    meter.prepare()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    model.train()
    marks = {}
    try:
        with meter:
            out = m.step_batch(model, batch, on_phase=lambda name: marks.setdefault(name, meter.current_bytes))
    finally:
        torch.set_rng_state(state)
        for p in params:
            p.grad = None
    figs = meter.figures()
    held = {"enc_held_bytes": marks["encoded"] - marks["start"], "dec_held_bytes": marks["decoded"] - marks["encoded"]}
    return {"method": method, **figs, **held, "stats": out.stats}


# ------------------------------------------------------------------------------------------------ training
def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _atomic_json(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")
    os.replace(tmp, path)


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return str(x)


_SAVING_KEYS = ("enc_state_bits_baseline", "enc_buffer_bits_actual", "enc_buffer_bits_ideal", "enc_context_bits_actual",
                "enc_context_bits_ideal", "dec_state_bits_baseline", "dec_buffer_bits_actual", "dec_buffer_bits_ideal")


def _new_epoch_acc():
    return {"loss_sum": 0.0, "tokens": 0, "steps": 0, "time_s": 0.0, **{k: 0.0 for k in _SAVING_KEYS},
            "missing": []}


def _accumulate(acc, out):
    st = out.stats
    acc["loss_sum"] += float(out.loss) * st["loss_divisor"]
    acc["tokens"] += st["tgt_tokens"]
    acc["steps"] += 1
    for k in _SAVING_KEYS:
        v = st.get(k)
        if v is None:
            if k not in acc["missing"]:
                acc["missing"].append(k)
        else:
            acc[k] += float(v)


def savings_of(acc) -> dict:
    """Encoder/decoder savings over an epoch: ratio of summed baseline bits to summed buffer (+ stored context)
    bits; None where the method/cell has no buffer figures."""
    miss = set(acc.get("missing", []))

    def ratio(num, *dens):
        if num in miss or any(d in miss for d in dens):
            return None
        den = sum(acc[d] for d in dens)
        return acc[num] / den if den > 0 else math.inf

    return {
        "enc_saving_actual": ratio("enc_state_bits_baseline", "enc_buffer_bits_actual", "enc_context_bits_actual"),
        "enc_saving_ideal": ratio("enc_state_bits_baseline", "enc_buffer_bits_ideal", "enc_context_bits_ideal"),
        "dec_saving_actual": ratio("dec_state_bits_baseline", "dec_buffer_bits_actual"),
        "dec_saving_ideal": ratio("dec_state_bits_baseline", "dec_buffer_bits_ideal"),
    }


def _progress(total, desc, enabled):
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def train(config: NMTConfig, out_dir, resume: bool = False, corpus: ParallelCorpus | None = None, data_dir=None,
          progress: bool | None = None, stop_after_steps: int | None = None, evaluate: bool = True,
          log=print) -> dict | None:
    """Train ``config`` into ``out_dir`` (``config.json``, ``checkpoint.pt``, ``best.pt`` (the epoch with the best
    validation perplexity, which the test evaluation uses), ``results.json``, ``test.hyp.txt``).
    Returns the results dict, or None when ``stop_after_steps`` interrupted the run (after
    writing a checkpoint; ``resume=True`` continues it). ``progress``: tqdm bar (default: only on a TTY)."""
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if progress is None:
        progress = sys.stderr.isatty()
    t_start = time.perf_counter()
    corpus = corpus or load_corpus(config, data_dir)
    pairs = train_pairs(config, corpus)
    cfg = asdict(config)
    if ckpt_path.exists() and not resume:
        raise CheckpointError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
    torch.manual_seed(config.seed)
    model = build_model(config, corpus)
    opt = torch.optim.SGD(model.parameters(), lr=config.resolved_lr())
    state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "lr": config.resolved_lr(), "last_val_ppl": None,
             "history": [], "acc": _new_epoch_acc(), "train_time_s": 0.0}
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["config"] != cfg:
            diff = sorted(k for k in cfg if ck["config"].get(k) != cfg[k])
            raise CheckpointError(f"{ckpt_path} was written by another configuration (differs in: {', '.join(diff)})")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        torch.set_rng_state(ck["rng"])
        log(f"resumed from {ckpt_path}: epoch {state['epoch'] + 1}, batch {state['batch_in_epoch']}, "
            f"step {state['step']}")
    _atomic_json(cfg, out / "config.json")
    method = config.make_method()
    params = list(model.parameters())

    def save():
        _atomic_save({"config": cfg, "model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                      "rng": torch.get_rng_state()}, ckpt_path)

    while state["epoch"] < config.epochs:
        epoch = state["epoch"]
        batches = epoch_batches(config, pairs, epoch)
        bar = _progress(len(batches), f"epoch {epoch + 1}/{config.epochs}", progress)
        if bar is not None:
            bar.update(state["batch_in_epoch"])
        acc = state["acc"]
        for g in opt.param_groups:
            g["lr"] = state["lr"]
        for i in range(state["batch_in_epoch"], len(batches)):
            t0 = time.perf_counter()
            model.train()
            for p in params:
                p.grad = None
            res = method.step_batch(model, batches[i])
            torch.nn.utils.clip_grad_norm_(params, config.clip)
            opt.step()
            _accumulate(acc, res)
            dt = time.perf_counter() - t0
            acc["time_s"] += dt
            state["train_time_s"] += dt
            state["step"] += 1
            state["batch_in_epoch"] = i + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ppl=f"{math.exp(min(acc['loss_sum'] / max(acc['tokens'], 1), 100)):.1f}")
            if not math.isfinite(float(res.loss)):
                raise FloatingPointError(f"the training loss became {float(res.loss)} at step {state['step']}; "
                                         f"lower the learning rate")
            if config.save_every and state["step"] % config.save_every == 0:
                save()
            if stop_after_steps is not None and state["step"] >= stop_after_steps:
                save()
                if bar is not None:
                    bar.close()
                return None
        if bar is not None:
            bar.close()
        val = evaluate_loss(model, corpus.valid.pairs(), config.batch_size)
        train_loss = acc["loss_sum"] / max(acc["tokens"], 1)
        entry = {"epoch": epoch + 1, "lr": state["lr"], "train_loss": train_loss,
                 "train_ppl": math.exp(min(train_loss, 100)), "val_loss": val["loss"], "val_ppl": val["ppl"],
                 "steps": acc["steps"], "epoch_time_s": acc["time_s"], **savings_of(acc)}
        state["history"].append(entry)
        log(f"epoch {epoch + 1}/{config.epochs}: train ppl {entry['train_ppl']:.2f}, val ppl {val['ppl']:.2f}, "
            f"lr {state['lr']:g}, {acc['time_s']:.0f} s" + "".join(
                f", {k} {v:.2f}" for k, v in savings_of(acc).items() if v is not None))
        if state.get("best_val_ppl") is None or val["ppl"] < state["best_val_ppl"]:
            state["best_val_ppl"] = val["ppl"]
            state["best_epoch"] = epoch + 1
            _atomic_save({"config": cfg, "model": model.state_dict(), "epoch": epoch + 1}, out / BEST)
        if state["last_val_ppl"] is not None and val["ppl"] > state["last_val_ppl"]:
            state["lr"] *= config.lr_decay
        state["last_val_ppl"] = val["ppl"]
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        state["acc"] = _new_epoch_acc()
        save()
    results = {"config": cfg, "history": state["history"], "steps": state["step"],
               "train_time_s": state["train_time_s"], "final": state["history"][-1] if state["history"] else None,
               "best_epoch": state.get("best_epoch"), "best_val_ppl": state.get("best_val_ppl")}
    if (out / BEST).exists():               # evaluate the model with the best validation perplexity
        model.load_state_dict(torch.load(out / BEST, map_location="cpu", weights_only=False)["model"])
    if evaluate:
        t0 = time.perf_counter()
        test = corpus.test
        g, _ = bleu_on(model, test, corpus.tgt_vocab, 1, replace_unk=config.replace_unk,
                       batch_size=config.batch_size)
        b, hyps = bleu_on(model, test, corpus.tgt_vocab, config.beam_size, config.length_penalty, config.replace_unk,
                          batch_size=config.batch_size)
        tl = evaluate_loss(model, test.pairs(), config.batch_size)
        results.update({"test_bleu_greedy": g.score, "test_bleu_beam": b.score, "bleu_signature": b.signature,
                        "test_ppl": tl["ppl"], "eval_time_s": time.perf_counter() - t0})
        tmp = out / ".test.hyp.txt.tmp"
        tmp.write_text("".join(" ".join(h) + "\n" for h in hyps), encoding="utf-8")
        os.replace(tmp, out / "test.hyp.txt")
        log(f"test BLEU greedy {g.score:.2f}, beam {config.beam_size}: {b.score:.2f} ({b.signature})")
    results["wall_time_s"] = time.perf_counter() - t_start
    _atomic_json(results, out / RESULTS)
    return results


# ------------------------------------------------------------------------------------------------ Table 3 grid
@dataclass(frozen=True)
class GridPoint:
    """One cell of the reproduction grid: a cell type, a context and a forgetting limit."""

    cell: str
    context: str
    max_forget_bits: int | None = None

    @property
    def reversible(self) -> bool:
        return self.cell.startswith("rev") or self.cell.startswith("nf-rev")

    @property
    def id(self) -> str:
        k = "" if not self.reversible else ("-knone" if self.max_forget_bits is None else f"-k{self.max_forget_bits}")
        return f"{self.cell}-{self.context.replace(':', '').replace('+', '_')}{k}"

    @property
    def method(self) -> str:
        return "reversible" if self.reversible else "bptt"

    @classmethod
    def parse(cls, text: str) -> "GridPoint":
        """``cell/context/k`` (k an int or 'none'), e.g. ``revgru/emb+h:20/3`` or ``gru/all``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3):
            raise ValueError(f"bad grid point {text!r}: write cell/context[/k], e.g. revgru/emb+h:20/3 or gru/all")
        k = None
        if len(parts) == 3 and parts[2].lower() not in ("none", "nolimit", "no-limit"):
            try:
                k = int(parts[2])
            except ValueError:
                raise ValueError(f"bad forgetting limit {parts[2]!r} in grid point {text!r}: "
                                 f"an int or 'none'") from None
        return cls(parts[0], parts[1], k)


# In priority order: the paper's headline setting, the baseline, then the other contexts and limits.
GRID = {
    "small": [GridPoint("revgru", "emb+h:20", 3), GridPoint("gru", "all"), GridPoint("revgru", "h:20", 3),
              GridPoint("revgru", "emb", 3), GridPoint("revgru", "emb+h:20", 2), GridPoint("revgru", "emb+h:20", 5),
              GridPoint("revgru", "emb+h:20", None), GridPoint("revgru", "all", 3),
              GridPoint("revlstm", "emb+h:20", 3), GridPoint("lstm", "all")],
    "paper": [GridPoint(c, x, k) for c in ("revgru", "revlstm") for x in ("h:20", "h:100", "all", "emb", "emb+h:20")
              for k in (1, 2, 3, 5, None)] + [GridPoint("gru", "all"), GridPoint("lstm", "all")],
}
GRID["tiny"] = [GridPoint("revgru", "emb+h:4", 3), GridPoint("gru", "all")]


# Methods whose live-tensor peak every grid point measures (with their default options; reversible only for
# reversible cells): plain BPTT, Chen's sqrt(T) checkpointing, Gruslys' policy at a 5% slot budget.
MEMORY_METHODS = ("bptt", "checkpoint", "gruslys", "reversible")


def point_memory(config: NMTConfig, corpus, run_dir: Path) -> dict:
    """Live-tensor peaks of one training step of the trained model on a representative batch, for every method
    of ``MEMORY_METHODS`` that applies (same dropout masks)."""
    torch.manual_seed(config.seed)
    model = build_model(config, corpus)
    if (run_dir / BEST).exists():
        model.load_state_dict(torch.load(run_dir / BEST, map_location="cpu", weights_only=False)["model"])
    batch = representative_batch(train_pairs(config, corpus), config.batch_size)
    out = {"batch_src_len": int(batch.src.shape[0]), "batch_tgt_len": int(batch.tgt_in.shape[0]),
           "batch_size": int(batch.src.shape[1])}
    rev = config.cell.startswith(("rev", "nf-rev"))
    for name in (m for m in MEMORY_METHODS if rev or m != "reversible"):
        r = measure_step_memory(model, batch, name, config.loss_norm, seed=config.seed)
        out[f"{name}_live_peak_bytes"] = r["live_peak_bytes"]
        out[f"{name}_live_peak_other_bytes"] = r.get("live_peak_other_bytes")
        out[f"{name}_enc_held_bytes"], out[f"{name}_dec_held_bytes"] = r["enc_held_bytes"], r["dec_held_bytes"]
        if name == "reversible":
            out["step_stats"] = {k: v for k, v in r["stats"].items() if "saving" in k or "bits" in k}
    if "reversible_live_peak_bytes" in out and out["reversible_live_peak_bytes"]:
        out["allocator_saving"] = out["bptt_live_peak_bytes"] / out["reversible_live_peak_bytes"]
        for side in ("enc", "dec"):
            held = out[f"reversible_{side}_held_bytes"]
            out[f"{side}_allocator_saving"] = out[f"bptt_{side}_held_bytes"] / held if held > 0 else math.inf
    return out


def reproduce(config_name: str, out_dir, points=None, data_dir=None, budget_minutes: float | None = None,
              overrides: dict | None = None, force: bool = False, command: str | None = None,
              keep_checkpoints: bool = False, log=print) -> dict:
    """Run the Table 3 grid for ``config_name`` into ``out_dir/runs/<point>/`` in priority order, then write
    ``grid.json``, ``README.md`` and ``index.html`` (after every point, so partial results are always there).
    A point with a ``results.json`` is not rerun (unless ``force``); one with a checkpoint is resumed; no new
    point starts once ``budget_minutes`` have passed. A completed point's ``checkpoint.pt``/``best.pt`` (model
    weights) are deleted unless ``keep_checkpoints``; its ``results.json`` and ``test.hyp.txt`` stay."""
    from revbench.measure.memory import environment_info

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    pts = list(points) if points is not None else list(GRID.get(config_name, GRID["small"]))
    base = make_config(config_name, **overrides)
    corpus = load_corpus(base, data_dir)
    t0 = time.perf_counter()
    prev = {}
    if (out / "grid.json").exists():
        try:
            prev = json.loads((out / "grid.json").read_text())
        except (OSError, ValueError):
            prev = {}
    summary = {"config_name": config_name, "overrides": overrides, "command": command,
               "environment": environment_info("cpu"), "threads": torch.get_num_threads(), "points": [],
               "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "sessions": prev.get("sessions", []) if isinstance(prev, dict) else []}
    entries = {}
    for p in pts:
        entries[p.id] = {"id": p.id, "cell": p.cell, "context": p.context, "max_forget_bits": p.max_forget_bits,
                         "method": p.method, "status": "not started"}
    summary["points"] = list(entries.values())
    for p in pts:
        e = entries[p.id]
        run_dir = out / "runs" / p.id
        cfg = make_config(config_name, **{**overrides, "cell": p.cell, "context": p.context,
                                          "max_forget_bits": p.max_forget_bits if p.reversible else None,
                                          "method": p.method})
        done = run_dir / RESULTS
        if done.exists() and not force:
            res = json.loads(done.read_text())
            if "memory" in res:
                e.update(_point_entry(res), status="completed (earlier session)")
                continue
        elif budget_minutes is not None and (time.perf_counter() - t0) / 60 > budget_minutes:
            e["status"] = f"not started: the time budget of {budget_minutes:g} min was used"
            continue
        else:
            if force and run_dir.exists():
                for f in (CHECKPOINT, BEST, RESULTS):
                    if (run_dir / f).exists():
                        (run_dir / f).unlink()
            log(f"== {p.id}: {cfg.cell}, context {cfg.context}, k={cfg.max_forget_bits}, method {cfg.method}")
            res = train(cfg, run_dir, resume=(run_dir / CHECKPOINT).exists(), corpus=corpus, log=log)
        tm = time.perf_counter()
        res["memory"] = point_memory(cfg, corpus, run_dir)
        res["memory_time_s"] = time.perf_counter() - tm
        _atomic_json(res, done)
        if not keep_checkpoints:
            for f in (CHECKPOINT, BEST):
                if (run_dir / f).exists():
                    (run_dir / f).unlink()
        e.update(_point_entry(res), status="completed")
        summary["elapsed_s"] = time.perf_counter() - t0
        write_grid_report(summary, out)
    summary["elapsed_s"] = time.perf_counter() - t0
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    summary["sessions"].append({"started": summary["started"], "finished": summary["finished"],
                                "elapsed_s": summary["elapsed_s"], "command": command})
    write_grid_report(summary, out)
    return summary


def _point_entry(res: dict) -> dict:
    fin = res.get("final") or {}
    mem = res.get("memory", {})
    return {"epochs": len(res.get("history", [])), "steps": res.get("steps"), "train_time_s": res.get("train_time_s"),
            "wall_time_s": res.get("wall_time_s"), "eval_time_s": res.get("eval_time_s"),
            "val_ppl": res.get("best_val_ppl"), "test_ppl": res.get("test_ppl"),
            "bleu_greedy": res.get("test_bleu_greedy"), "bleu_beam": res.get("test_bleu_beam"),
            "bleu_signature": res.get("bleu_signature"),
            **{k: fin.get(k) for k in ("enc_saving_actual", "enc_saving_ideal", "dec_saving_actual",
                                       "dec_saving_ideal")},
            **{f"{m}_live_peak_bytes": mem.get(f"{m}_live_peak_bytes") for m in MEMORY_METHODS},
            "allocator_saving": mem.get("allocator_saving"),
            "enc_allocator_saving": mem.get("enc_allocator_saving"),
            "dec_allocator_saving": mem.get("dec_allocator_saving"),
            "memory_batch": f"B={mem.get('batch_size')}, S={mem.get('batch_src_len')}, T={mem.get('batch_tgt_len')}"
            if mem else None}


_CELL_NAMES = {"revgru": "RevGRU", "revlstm": "RevLSTM", "nf-revgru": "NF-RevGRU", "nf-revlstm": "NF-RevLSTM",
               "gru": "GRU", "lstm": "LSTM"}


def _k_label(k):
    return "no limit" if k is None else f"{k} bit"


def _fmt(x, d=2):
    if x is None:
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{d}f}"


def grid_tables(summary: dict):
    """(paper-shaped table, detail table) as pandas DataFrames of the completed points."""
    import pandas as pd

    done = [e for e in summary["points"] if e["status"].startswith("completed")]
    ks = []
    for e in summary["points"]:
        if e["cell"] in _CELL_NAMES and e["cell"].startswith(("rev", "nf-rev")) and e["max_forget_bits"] not in ks:
            ks.append(e["max_forget_bits"])
    ks.sort(key=lambda k: 99 if k is None else k)
    rows = {}
    for e in done:
        rev = e["cell"].startswith(("rev", "nf-rev"))
        key = f"{_CELL_NAMES.get(e['cell'], e['cell'])} · {e['context']}" + ("" if rev else " (baseline)")
        row = rows.setdefault(key, {"model · context": key})
        text = _fmt(e.get("bleu_beam"))
        if rev:
            text += f" ({_fmt(e.get('enc_saving_actual'), 1)} / {_fmt(e.get('dec_saving_actual'), 1)})"
            row[_k_label(e["max_forget_bits"])] = text
        else:
            row["baseline"] = text
    cols = ["model · context"] + [_k_label(k) for k in ks] + ["baseline"]
    paper = pd.DataFrame(list(rows.values()), columns=cols)
    paper = paper[[c for c in cols if c == "model · context" or paper[c].notna().any()]]
    detail = pd.DataFrame([{
        "point": e["id"], "cell": e["cell"], "context": e["context"],
        "k": "n/a" if not e["cell"].startswith(("rev", "nf-rev")) else _k_label(e["max_forget_bits"]),
        "method": e["method"], "epochs": e.get("epochs"), "steps": e.get("steps"),
        "train min": None if e.get("train_time_s") is None else e["train_time_s"] / 60,
        "val ppl": e.get("val_ppl"), "test ppl": e.get("test_ppl"),
        "BLEU greedy": e.get("bleu_greedy"), "BLEU beam": e.get("bleu_beam"),
        "enc saving actual": e.get("enc_saving_actual"), "enc saving ideal": e.get("enc_saving_ideal"),
        "dec saving actual": e.get("dec_saving_actual"), "dec saving ideal": e.get("dec_saving_ideal"),
        **{f"{m} peak MiB": None if e.get(f"{m}_live_peak_bytes") is None else e[f"{m}_live_peak_bytes"] / 2**20
           for m in MEMORY_METHODS},
        "allocator saving": e.get("allocator_saving"),
        "enc allocator saving": e.get("enc_allocator_saving"),
        "dec allocator saving": e.get("dec_allocator_saving"),
    } for e in done])
    return paper, detail


def _markdown(df) -> str:
    if df is None or len(df) == 0:
        return "_no completed grid points yet_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("n/a")
            elif isinstance(v, float):
                cells.append(_fmt(v, 2))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _describe_setup(summary) -> dict:
    cfg = make_config(summary["config_name"], **summary.get("overrides", {}))
    return {"config": cfg, "env": summary.get("environment", {})}


def write_grid_report(summary: dict, out_dir) -> None:
    """``grid.json``, ``README.md`` and a self-contained ``index.html`` from a reproduce() summary."""
    from revbench.report.page import CSS, check_self_contained, dataframe_to_html_table, note_html
    import html as _html

    out = Path(out_dir)
    _atomic_json(summary, out / "grid.json")
    paper, detail = grid_tables(summary)
    setup = _describe_setup(summary)
    cfg, env = setup["config"], setup["env"]
    done = [e for e in summary["points"] if e["status"].startswith("completed")]
    status_lines = [f"- `{e['id']}`: {e['status']}" for e in summary["points"]]
    elapsed = summary.get("elapsed_s")
    sessions = summary.get("sessions", [])
    machine = (f"{env.get('device_name')} ({env.get('cpu_count')} cores visible, torch threads "
               f"{summary.get('threads')}), {env.get('platform')}, Python {env.get('python_version')}, "
               f"torch {env.get('torch_version')}, commit {env.get('commit')}, host {env.get('hostname')}")
    lr = cfg.lr if cfg.lr is not None else "per cell (GRU/RevGRU 0.2, LSTM 1.0, RevLSTM 0.5)"
    setting = (f"{cfg.num_layers} layer, hidden {cfg.hidden_size}, embedding {cfg.emb_size}, batch {cfg.batch_size}, "
               f"{cfg.epochs} epochs, SGD lr {lr}"
               f" halved when validation perplexity rises, loss normalised by {cfg.loss_norm}, clip {cfg.clip}, "
               f"dropout {cfg.dropout}, init +-{cfg.init_range}, vocabulary: words seen >= {cfg.min_freq} times, "
               f"training pairs: {cfg.max_train or 'all'}, beam {cfg.beam_size}, replace_unk {cfg.replace_unk}")
    md = [f"# NMT (Multi30K en->de): the paper's Table 3 on a CPU-sized model\n",
          "Generated by `revbench reproduce nmt` (the same code as `python -m revbench.cli.nmt reproduce`); do not "
          "edit by hand: rerun the command (completed points are kept, so it continues the grid).\n",
          f"- command: `{summary.get('command') or 'revbench reproduce nmt --config ' + summary['config_name']}`",
          f"- configuration `{summary['config_name']}`: {setting}",
          f"- machine: {machine}",
          f"- sessions: " + "; ".join(f"{x['started']} -> {x['finished']} ({_fmt(x['elapsed_s'] / 60, 1)} min)"
                                      for x in sessions)
          + ("" if summary.get("finished") else
             f"{'; ' if sessions else ''}running since {summary.get('started')} ({_fmt((elapsed or 0) / 60, 1)} min)"),
          f"- completed grid points: {len(done)} of {len(summary['points'])}\n",
          "## Table 3 shape: test2016 BLEU (beam) with (encoder saving / decoder saving)\n",
          "Savings are the paper-style *actual* ratios over the last training epoch: 32-bit hidden (and cell) "
          "states of every valid token, divided by the bits allocated for the information buffer (64 per live "
          "buffer element + 32 per allocated word slot, peak over the batch's forward pass) plus, for the "
          "encoder, the stored attention slice (its int32 store) or, for context `all`, every top-layer hidden "
          "state. Columns are the forgetting limits; `baseline` rows are ordinary GRU/LSTM with attention over "
          "all hidden states, trained with BPTT.\n", _markdown(paper),
          "## Every completed point\n",
          "`ideal` savings divide by the information actually forgotten (sum of -log2 z) instead of the allocated "
          "bits. `peak MiB`: live-tensor peak (revbench.measure.memory.LiveTensorMeter, parameter gradients allocated "
          "beforehand) of one training step of the trained model on one representative batch (the middle of the "
          "length-sorted training set), with every method: BPTT, checkpointing (Chen et al., sqrt(T) pieces per "
          "side), Gruslys et al.'s policy (5% slot budget per side) and the reversible method; `allocator saving` "
          "is BPTT's peak over the reversible method's. `enc`/`dec allocator saving`: per side, the live bytes "
          "its forward pass leaves for the backward pass (graph or buffers, stored states, the context for the "
          "encoder), BPTT's over the reversible method's. Times: training only (evaluation excluded), wall-clock on a machine that may be shared with other "
          "work, so only roughly comparable.\n", _markdown(detail),
          "## Status of each grid point\n", "\n".join(status_lines), "\n",
          "## Differences from the paper\n", _DIFFERENCES.format(epochs=cfg.epochs, hidden=cfg.hidden_size,
                                                                 min_freq=cfg.min_freq, cap=cfg.hidden_size / 20), ""]
    text = "\n".join(md)
    tmp = out / ".README.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / "README.md")

    esc = _html.escape
    fmt2 = {c: (lambda v: _fmt(v, 2)) for c in detail.columns if c not in ("point", "cell", "context", "k", "method",
                                                                           "epochs", "steps")}
    body = [f"<h1>NMT (Multi30K en&rarr;de): Table 3 on a CPU-sized model</h1>",
            f"<p class=\"sub\">{esc(setting)}</p>",
            f"<p class=\"how\">Machine: {esc(machine)}. Command: <code>{esc(summary.get('command') or '')}</code>. "
            f"Completed {len(done)} of {len(summary['points'])} points.</p>",
            "<h2>Test2016 BLEU (beam) with (encoder saving / decoder saving)</h2>",
            dataframe_to_html_table(paper) if len(paper) else note_html("no completed grid points yet"),
            "<p class=\"how\">Paper-style actual savings over the last training epoch (see README.md).</p>",
            "<h2>Every completed point</h2>",
            dataframe_to_html_table(detail, formats=fmt2) if len(detail) else note_html("no completed points"),
            "<h2>Status</h2><ul>" + "".join(f"<li><code>{esc(e['id'])}</code>: {esc(e['status'])}</li>"
                                              for e in summary["points"]) + "</ul>"]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>revbench NMT</title>"
            f"<style>{CSS}</style></head><body><main>" + "".join(body) + "</main></body></html>\n")
    check_self_contained(page, "NMT report")
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out / "index.html")


_DIFFERENCES = """- Model size and training length: hidden = embedding = {hidden} (paper 300) and {epochs} epochs (the
  reference scripts train 80), so BLEU is far below the paper's (it compares settings with each other, not
  with the paper). The savings depend on how much the trained gates forget, so they move with training too.
- Encoder savings are capped by the stored slice: a slice of D units costs 32 bits per token and unit, like
  the baseline's state, so the encoder saving cannot exceed H / D ({hidden} / 20 = {cap:.1f} for `h:20` at
  this size; 300 / 20 = 15 at the paper's). Context `emb` stores nothing and shows the buffer alone.
- Vocabulary: words seen at least {min_freq} time(s) in train (the reference kept every word); unknown output
  words are replaced by the most-attended source word (the reference's `-replace_unk`).
- Dropout: locked masks (one per sentence, shared by all steps) on the source/target embeddings, between
  layers and on the attentional state, sampled once per batch so the reverse pass replays them; the
  reference also dropped the slice itself (`-dropouts`), which we do not.
- Buffer: the streaming buffer of `revbench.core.buffer` (32-bit words emitted only by the units that overflow)
  instead of the reference's whole-[batch, units] chunk pushes. Its live part (64 bits per sentence and
  half-unit) costs as much as one step of the 32-bit state, so with Multi30K's ~13-token sentences the
  *actual* saving of a side cannot exceed about 13 however little the gates forget; the *ideal* figures
  show the information forgotten.
- Padding: padded target steps leave the decoder state and buffer unchanged (the reference's decoder
  masking was a no-op), so savings count only valid tokens.
- BLEU: tokenised, lower-cased corpus BLEU (sacrebleu with tokenize='none', = multi-bleu.perl) on test2016.
  Beam search ranks hypotheses by raw log-probability (length penalty 0, OpenNMT's default), so a weakly
  trained model can prefer very short outputs (a lone "."): its beam BLEU can fall below its greedy BLEU
  (`--length-penalty` changes the ranking).
- Memory per method: the whole step's live peak of every method is close to the reversible method's here,
  because one decoder step's vocabulary-sized logits and their gradients (recomputed by every saving
  method) dominate a short-sentence step; the per-side held bytes show what each method keeps for the
  backward pass."""


__all__ = ["NMTConfig", "CONFIGS", "PAPER_LR", "CheckpointError", "make_config", "load_corpus", "build_model",
           "train_pairs", "epoch_batches", "evaluate_loss", "greedy_decode", "beam_search", "translate", "bleu_on",
           "representative_batch", "measure_step_memory", "savings_of", "train", "GridPoint", "GRID", "reproduce",
           "write_grid_report", "grid_tables"]
