"""Length-bucketed batching of sentence pairs: :func:`length_batches`."""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from revbench.models.seq2seq.inputs import Batch, make_batch


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
