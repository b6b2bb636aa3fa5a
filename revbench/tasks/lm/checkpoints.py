"""What a language-model training run leaves to read back: its checkpoint (``load_checkpoint``), its log
(``read_log``), and the errors about an output folder that already holds a run."""
from __future__ import annotations

import json
from pathlib import Path

import torch

CHECKPOINT_FORMAT = "revbench.lm-checkpoint/1"


class CheckpointMismatchError(ValueError):
    """``--resume`` found a checkpoint made with a different configuration."""


class OutputExistsError(FileExistsError):
    """The output folder already holds a run and ``resume`` was not asked for."""


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a revbench language-model checkpoint")
    return ckpt


def read_log(path: Path) -> list[dict]:
    """All records of a ``log.jsonl``."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
