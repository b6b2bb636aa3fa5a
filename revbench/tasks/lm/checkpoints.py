"""What a language-model training run leaves to read back: its checkpoint (``checkpoint_payload`` writes one,
``load_checkpoint`` reads it and ``restore`` puts it back into a ``Trainer``), its best model (``load_best``), its
log (``read_log``), and the errors about an output folder that already holds a run.

Both ``.pt`` files are sealed (``revbench.tasks.integrity``): a SHA-256 of their contents is written with them and
checked here, so a damaged file is refused (:class:`CheckpointCorruptError`, naming the file), never trained on.
Checkpoints of format ``revbench.lm-checkpoint/1`` (and best models without a format) were written before the
digest: they are used with a one-line warning.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from revbench.tasks.integrity import CheckpointCorruptError, describe, load_model_state, load_sealed
from revbench.tasks.lm.configs import RUN_CONTROL_FIELDS

CHECKPOINT_FORMAT = "revbench.lm-checkpoint/2"
LEGACY_CHECKPOINT_FORMAT = "revbench.lm-checkpoint/1"      # no integrity digest
BEST_FORMAT = "revbench.lm-best/2"

CHECKPOINT_KEYS = ("config", "model", "optimizer", "epoch", "step_in_epoch", "global_step", "lr", "best_valid_ppl",
                   "best_epoch", "history", "segment_gen_state", "hidden", "epoch_acc", "interval_acc", "elapsed_s",
                   "torch_rng", "log_offset")
"""The keys a checkpoint must hold (``finished`` and ``cuda_rng`` are optional)."""

__all__ = ["BEST_FORMAT", "CHECKPOINT_FORMAT", "CheckpointCorruptError", "CheckpointMismatchError",
           "OutputExistsError", "checkpoint_payload", "load_best", "load_checkpoint", "read_log", "restore"]


class CheckpointMismatchError(ValueError):
    """``--resume`` found a checkpoint made with a different configuration."""


class OutputExistsError(FileExistsError):
    """The output folder already holds a run and ``resume`` was not asked for."""


def load_checkpoint(path: Path) -> dict:
    """The verified contents of a training checkpoint (``checkpoint.pt``)."""
    ckpt = load_sealed(path, "checkpoint", required=CHECKPOINT_KEYS,
                       legacy=lambda d: d.get("format") == LEGACY_CHECKPOINT_FORMAT)
    if ckpt.get("format") not in (CHECKPOINT_FORMAT, LEGACY_CHECKPOINT_FORMAT):
        raise CheckpointCorruptError(f"checkpoint {str(path)!r} is not a revbench language-model checkpoint "
                                     f"(format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
    return ckpt


def load_best(path: Path) -> dict:
    """The verified contents of a best-model file (``best.pt``: ``model``, ``epoch``, ``valid_ppl``, ``config``)."""
    best = load_sealed(path, "best model", required=("model",), legacy=lambda d: "format" not in d)
    if best.get("format", BEST_FORMAT) != BEST_FORMAT:
        raise CheckpointCorruptError(f"best model {str(path)!r} is not a revbench language-model best model "
                                     f"(format {best.get('format')!r}, expected {BEST_FORMAT!r})")
    return best


def checkpoint_payload(tr) -> dict:
    """Everything a ``revbench.tasks.lm.training.Trainer`` needs to continue bit-exactly (to be sealed)."""
    return {
        "format": CHECKPOINT_FORMAT, "config": tr.cfg.to_dict(), "model": tr.model.state_dict(),
        "optimizer": tr.opt.state_dict(), "epoch": tr.epoch, "step_in_epoch": tr.step_in_epoch,
        "global_step": tr.global_step, "lr": tr.lr, "best_valid_ppl": tr.best_valid_ppl,
        "best_epoch": tr.best_epoch, "history": tr.history, "segment_gen_state": tr.epoch_gen_state,
        "hidden": [tuple(p.detach().cpu() for p in layer) for layer in tr.hidden],
        "epoch_acc": tr.epoch_acc, "interval_acc": tr.interval_acc, "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "log_offset": tr._log_offset(), "elapsed_s": tr._elapsed(), "finished": tr.finished,
    }


def _check_compatible(tr, saved: dict) -> None:
    now = tr.cfg.to_dict()
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in now
             if k not in RUN_CONTROL_FIELDS and saved.get(k) != now[k]]
    if diffs:
        raise CheckpointMismatchError(
            f"the checkpoint in {str(tr.out)!r} was made with a different configuration ("
            + "; ".join(diffs) + "): use another --out folder, or drop --resume after removing it")


def restore(tr, ckpt: dict) -> None:
    """Put a verified checkpoint back into the trainer ``tr`` (set up, fresh state). Another configuration is a
    ``CheckpointMismatchError``; a value that does not fit is a one-line ``CheckpointCorruptError`` naming the
    file."""
    label = f"checkpoint {str(tr.ckpt_path)!r}"
    if not isinstance(ckpt["config"], dict):
        raise CheckpointCorruptError(f"{label}: its config is a {type(ckpt['config']).__name__}, not a dict")
    _check_compatible(tr, ckpt["config"])
    load_model_state(tr.model, ckpt["model"], label)
    try:
        _restore_state(tr, ckpt)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise CheckpointCorruptError(f"{label}: its training state cannot be restored ({describe(exc)})") from None


def _restore_state(tr, ckpt: dict) -> None:
    tr.opt.load_state_dict(ckpt["optimizer"])
    tr.epoch, tr.step_in_epoch, tr.global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
    tr.lr = ckpt["lr"]
    tr.best_valid_ppl, tr.best_epoch = ckpt["best_valid_ppl"], ckpt["best_epoch"]
    tr.history = ckpt["history"]
    tr.epoch_gen_state = ckpt["segment_gen_state"]
    dev = torch.device(tr.cfg.device)
    tr.hidden = [tuple(p.to(dev) for p in layer) for layer in ckpt["hidden"]]
    tr.epoch_acc, tr.interval_acc = ckpt["epoch_acc"], ckpt["interval_acc"]
    tr.elapsed_before = ckpt["elapsed_s"]
    tr.finished = ckpt.get("finished", False)
    torch.set_rng_state(ckpt["torch_rng"])
    if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    # drop log lines written after this checkpoint (a crash between checkpoint and log would duplicate them)
    if tr.log_path.exists() and tr.log_path.stat().st_size > ckpt["log_offset"]:
        with open(tr.log_path, "r+b") as fh:
            fh.truncate(ckpt["log_offset"])


def read_log(path: Path) -> list[dict]:
    """All records of a ``log.jsonl``."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
