"""Training an NMT model: :func:`train` into an output folder with an atomic, resumable checkpoint.

A resumed run gives the same parameters as an uninterrupted one (the batch order of an epoch is a function of
the seed and the epoch; the global RNG, which draws dropout masks, is checkpointed). ``checkpoint.pt`` and
``best.pt`` carry a SHA-256 of their contents (``revbench.tasks.integrity``), checked by :func:`load_checkpoint`
and :func:`load_best` whenever they are read: a damaged file is refused, never trained on (files without a
``format``, from before the digest, are used with a warning). A run removes the temporary files of its own that
a kill left in its folder. :func:`savings_of` gives the paper-style encoder/decoder savings of an epoch's
accumulated statistics.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from revbench.measure.cuda import device_problem
from revbench.tasks.integrity import CheckpointCorruptError, describe, load_model_state, load_sealed, save_sealed
from revbench.tasks.nmt.build import build_model, epoch_batches, load_corpus, train_pairs
from revbench.tasks.nmt.config import NMTConfig
from revbench.tasks.nmt.corpus import ParallelCorpus
from revbench.tasks.nmt.evaluate import bleu_on, evaluate_loss
from revbench.tasks.run_options import check_device
from revbench.util.runlock import run_lock
from revbench.util.atomic import (atomic_write_json, atomic_write_text, remove_stale_temporaries,
                                  stale_removal_note)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
RESULTS = "results.json"
OWN_FILES = (CHECKPOINT, BEST, RESULTS, "config.json", "test.hyp.txt")   # written through util.atomic
CHECKPOINT_FORMAT = "revbench.nmt-checkpoint/2"
BEST_FORMAT = "revbench.nmt-best/2"
_STATE_KEYS = ("epoch", "batch_in_epoch", "step", "lr", "last_val_ppl", "history", "acc", "train_time_s")


class CheckpointError(ValueError):
    """An output folder's checkpoint cannot be used (another configuration, or it exists without --resume)."""


def _load(path, what: str, fmt: str, required) -> dict:
    obj = load_sealed(path, what, required=required, legacy=lambda d: "format" not in d)
    if obj.get("format", fmt) != fmt:
        raise CheckpointCorruptError(f"{what} {str(path)!r} is not a revbench NMT {what} (format "
                                     f"{obj.get('format')!r}, expected {fmt!r})")
    return obj


def load_checkpoint(path) -> dict:
    """The verified contents of an NMT ``checkpoint.pt``."""
    return _load(path, "checkpoint", CHECKPOINT_FORMAT, ("config", "model", "optimizer", "state", "rng"))


def load_best(path) -> dict:
    """The verified contents of an NMT ``best.pt`` (``model``, ``config``, ``epoch``)."""
    return _load(path, "best model", BEST_FORMAT, ("model",))


def _resume(ckpt_path, cfg: dict, model, opt) -> dict:
    """Put the checkpoint back into ``model`` and ``opt`` and the global RNG; return the training state."""
    ck = load_checkpoint(ckpt_path)
    label = f"checkpoint {str(ckpt_path)!r}"
    if not isinstance(ck["config"], dict):
        raise CheckpointCorruptError(f"{label}: its config is a {type(ck['config']).__name__}, not a dict")
    if ck["config"] != cfg:
        diff = sorted(k for k in cfg if ck["config"].get(k) != cfg[k])
        raise CheckpointError(f"{ckpt_path} was written by another configuration (differs in: {', '.join(diff)})")
    load_model_state(model, ck["model"], label)
    state = ck["state"]
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointCorruptError(f"{label}: its training state lacks {', '.join(missing)}")
    try:
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"])
        if ck.get("cuda_rng") is not None and torch.cuda.is_available():   # dropout masks drawn on a GPU
            torch.cuda.set_rng_state_all(ck["cuda_rng"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise CheckpointCorruptError(f"{label}: its optimizer or RNG state cannot be restored "
                                     f"({describe(exc)})") from None
    return state


def json_default(x):
    """The ``default`` of the task's JSON files (``config.json``, ``results.json``, ``grid.json``): a tensor as a
    list, anything else as its text."""
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
          log=print, verify: bool = True, device: str = "cpu") -> dict | None:
    """Train ``config`` into ``out_dir`` (``config.json``, ``checkpoint.pt``, ``best.pt`` (the epoch with the best
    validation perplexity, which the test evaluation uses), ``results.json``, ``test.hyp.txt``).
    Returns the results dict, or None when ``stop_after_steps`` interrupted the run (after
    writing a checkpoint; ``resume=True`` continues it). ``progress``: tqdm bar (default: only on a TTY).
    ``verify=False`` skips the data's SHA256SUMS check (your own copy of Multi30K). ``device``: ``cpu``, ``cuda``
    or ``cuda:N`` (a ValueError naming it when it is not here); a run may resume on another device (its
    checkpoint holds the CUDA RNG state too, so dropout masks drawn on a GPU resume exactly on a GPU)."""
    config.validate()
    check_device(device)
    problem = device_problem(device)
    if problem:
        raise ValueError(problem)
    with run_lock(out_dir):           # one process per run folder (a second one is refused: exit 2)
        return _train(config, out_dir, resume, corpus, data_dir, progress, stop_after_steps, evaluate, log, verify,
                      device)


def _train(config, out_dir, resume, corpus, data_dir, progress, stop_after_steps, evaluate, log, verify, device):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if progress is None:
        progress = sys.stderr.isatty()
    t_start = time.perf_counter()
    cfg = asdict(config)
    if ckpt_path.exists() and not resume:
        raise CheckpointError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
    note = stale_removal_note(remove_stale_temporaries(out, OWN_FILES))
    if note:
        log(note)
    corpus = corpus or load_corpus(config, data_dir, verify=verify)
    pairs = train_pairs(config, corpus)
    torch.manual_seed(config.seed)
    model = build_model(config, corpus, device)
    opt = torch.optim.SGD(model.parameters(), lr=config.resolved_lr())
    state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "lr": config.resolved_lr(), "last_val_ppl": None,
             "history": [], "acc": _new_epoch_acc(), "train_time_s": 0.0}
    if resume and ckpt_path.exists():
        state = _resume(ckpt_path, cfg, model, opt)
        if (out / BEST).exists():
            load_best(out / BEST)                 # verified now, not after training on
        log(f"resumed from {ckpt_path}: epoch {state['epoch'] + 1}, batch {state['batch_in_epoch']}, "
            f"step {state['step']}")
    atomic_write_json(cfg, out / "config.json", indent=2, default=json_default)
    method = config.make_method()
    params = list(model.parameters())

    def save():
        save_sealed({"format": CHECKPOINT_FORMAT, "config": cfg, "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "state": state, "rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, ckpt_path)

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
            res = method.step(model, batches[i], normalize=config.loss_norm)
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
            save_sealed({"format": BEST_FORMAT, "config": cfg, "model": model.state_dict(), "epoch": epoch + 1},
                        out / BEST)
        if state["last_val_ppl"] is not None and val["ppl"] > state["last_val_ppl"]:
            state["lr"] *= config.lr_decay
        state["last_val_ppl"] = val["ppl"]
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        state["acc"] = _new_epoch_acc()
        save()
    results = {"config": cfg, "device": device, "history": state["history"], "steps": state["step"],
               "train_time_s": state["train_time_s"], "final": state["history"][-1] if state["history"] else None,
               "best_epoch": state.get("best_epoch"), "best_val_ppl": state.get("best_val_ppl")}
    if (out / BEST).exists():               # evaluate the model with the best validation perplexity
        load_model_state(model, load_best(out / BEST)["model"], f"best model {str(out / BEST)!r}")
    if evaluate:
        t0 = time.perf_counter()
        test = corpus.test
        g, _ = bleu_on(model, test, corpus.tgt_vocab, 1, replace_unk=config.replace_unk,
                       batch_size=config.batch_size)
        b, hyps = bleu_on(model, test, corpus.tgt_vocab, config.beam_size, config.length_penalty, config.replace_unk,
                          batch_size=config.batch_size)
        tl = evaluate_loss(model, test.pairs(), config.batch_size)
        # the hypothesis/reference length ratio beside each BLEU: a low beam score from short outputs explains itself
        results.update({"test_bleu_greedy": g.score, "test_bleu_beam": b.score, "bleu_signature": b.signature,
                        "test_length_ratio_greedy": g.sys_len / g.ref_len if g.ref_len else None,
                        "test_length_ratio_beam": b.sys_len / b.ref_len if b.ref_len else None,
                        "test_ppl": tl["ppl"], "eval_time_s": time.perf_counter() - t0})
        atomic_write_text(out / "test.hyp.txt", "".join(" ".join(h) + "\n" for h in hyps))
        log(f"test BLEU greedy {g.score:.2f}, beam {config.beam_size}: {b.score:.2f} ({b.signature})")
    results["wall_time_s"] = time.perf_counter() - t_start
    atomic_write_json(results, out / RESULTS, indent=2, default=json_default)
    return results
