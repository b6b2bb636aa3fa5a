"""The information buffer: where forgetting puts the bits it destroys, so reversal can restore them.

Design (better than the reference's whole-chunk pushes)
-------------------------------------------------------
Each buffer element (one per batch element and hidden unit) holds a live int64
``x`` kept in the interval I = [L, 2**32 * L) with L = 2**20, the way a
streaming rANS coder keeps its state. Before a multiplication by the quantised
gate z (Algorithm 1 grows x by a factor of about 2**RZ / z), an element whose x
is at or above ``2**32 * L * z / 2**RZ`` emits its low 32 bits as one word and
shifts right by 32. This normalisation guarantees that after the multiplication
x is again in I, and it is decodable without any flag: during reversal, after
the inverse multiplication an element whose x fell below L is exactly one that
emitted a word at that point, so it pops its word back. Only the elements that
overflowed emit, so the allocated memory follows the information each unit
actually forgot, not the worst unit of the batch.

Words are stored in a ``WordStack`` of int32 chunks (chunk size = number of
buffer elements); allocated bits = 32 * chunk capacity + 64 * elements of x.

Padded positions use z = 2**RZ, for which the operation is the identity on
both h and x and no word is emitted.
"""
from __future__ import annotations

import torch

from revbench.core.fixedpoint import GATE_ONE, RZ, div_with_buffer, mul_with_buffer

LOW_BITS = 20                       # L = 2**20: the lower end of the live interval (must be >= RZ)
WORD_BITS = 32
LOW = 1 << LOW_BITS
_WORD_MASK = (1 << WORD_BITS) - 1
_THRESHOLD_SHIFT = WORD_BITS + LOW_BITS - RZ   # emit when x >= z << this  (= 2**32 * L * z / 2**RZ)
_INT32_OFFSET = 1 << 31


class BufferCorruptError(RuntimeError):
    """Reversal found a buffer inconsistent with the forward pass (wrong order, or a state not produced here)."""


def empty_buffer(shape, device) -> torch.Tensor:
    """The live part of a fresh buffer: every element at L (it holds no information yet)."""
    return torch.full(tuple(shape), LOW, dtype=torch.int64, device=device)


class WordStack:
    """LIFO of 32-bit words emitted by a buffer's live state, stored in preallocated int32 chunks."""

    def __init__(self, chunk_words: int, device):
        self.chunk_words = max(int(chunk_words), 1)
        self.device = device
        self.chunks: list[torch.Tensor] = []
        self.size = 0                     # words currently stored
        self.counts: list[int] = []       # words per push (metadata for consistency checks; not needed to decode)
        self.peak_chunks = 0

    def push(self, words: torch.Tensor) -> None:
        w = (words - _INT32_OFFSET).to(torch.int32)  # [0, 2**32) -> [-2**31, 2**31): an exact, defined cast
        n, off = w.numel(), 0
        while off < n:
            if self.size == len(self.chunks) * self.chunk_words:
                self.chunks.append(torch.empty(self.chunk_words, dtype=torch.int32, device=self.device))
                self.peak_chunks = max(self.peak_chunks, len(self.chunks))
            ci, pos = divmod(self.size, self.chunk_words)
            k = min(self.chunk_words - pos, n - off)
            self.chunks[ci][pos:pos + k] = w[off:off + k]
            off += k
            self.size += k
        self.counts.append(n)

    def pop(self, n: int) -> torch.Tensor:
        if not self.counts or self.counts[-1] != n:
            have = self.counts[-1] if self.counts else 0
            raise BufferCorruptError(f"reversal expected {n} buffered words at this step but the stack top holds {have}")
        self.counts.pop()
        parts = []
        end = self.size
        while end > self.size - n:
            ci = (end - 1) // self.chunk_words
            start = max(ci * self.chunk_words, self.size - n)
            parts.append(self.chunks[ci][start - ci * self.chunk_words:end - ci * self.chunk_words])
            end = start
        out = torch.cat(parts[::-1]) if len(parts) > 1 else parts[0].clone()
        self.size -= n
        keep = -(-self.size // self.chunk_words)  # ceil: free emptied chunks so memory shrinks during reversal
        del self.chunks[keep:]
        return out.to(torch.int64) + _INT32_OFFSET

    def allocated_bits(self) -> int:
        return 32 * self.chunk_words * len(self.chunks)

    def peak_allocated_bits(self) -> int:
        return 32 * self.chunk_words * self.peak_chunks

    def __len__(self) -> int:
        return self.size


def buffered_mul(h: torch.Tensor, z: torch.Tensor, x: torch.Tensor, stack: WordStack | None):
    """Normalise x (emitting words where needed), then exact h * z / 2**RZ. Returns (h', x').

    ``stack=None`` drops the emitted words: the forward values are identical, but the step cannot
    be reversed. Methods that do not reverse (plain BPTT, checkpointing) use that.
    """
    need = x >= (z << _THRESHOLD_SHIFT)
    if bool(need.any()):
        if stack is not None:
            stack.push(x[need] & _WORD_MASK)
        x = torch.where(need, x >> WORD_BITS, x)
    return mul_with_buffer(h, z, x)


def buffered_div(h: torch.Tensor, z: torch.Tensor, x: torch.Tensor, stack: WordStack):
    """Exact inverse of ``buffered_mul`` (with the same stack). Returns (h, x) as they were before it."""
    h, x = div_with_buffer(h, z, x)
    need = x < LOW
    n = int(need.sum())
    if n:
        words = stack.pop(n)
        x = x.masked_scatter(need, (x[need] << WORD_BITS) | words)
    return h, x


def is_empty(x: torch.Tensor, stack: WordStack | None) -> bool:
    """True when the buffer holds no information: every live element back at L and no words stored."""
    return bool((x == LOW).all()) and (stack is None or len(stack) == 0)


__all__ = ["LOW", "GATE_ONE", "WordStack", "BufferCorruptError", "empty_buffer", "buffered_mul",
           "buffered_div", "is_empty"]
