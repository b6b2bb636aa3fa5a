"""What the encoder-decoder reads: the ids of its special tokens, a padded batch of sentence pairs
(:class:`Batch`) and :func:`make_batch`. A translation vocabulary numbers its words after these ids."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

PAD_INDEX, UNK_INDEX, BOS_INDEX, EOS_INDEX = 0, 1, 2, 3   # <pad>, <unk>, <s>, </s>


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
