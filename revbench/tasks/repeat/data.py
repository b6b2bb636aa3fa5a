"""Batches of the repeat task (paper section 4): output at step t the input seen at step t-1, and its accuracy."""
from __future__ import annotations

import torch

# Target value at step 0 of the repeat task: PyTorch's cross-entropy default ``ignore_index``.
REPEAT_IGNORE_INDEX = -100


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
