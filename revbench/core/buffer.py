"""The information buffer: where forgetting puts the bits it destroys, so reversal can restore them.

Design
------
The live part of a layer's buffer is an int32 tensor of *live elements*, each a streaming-rANS state ``x`` kept in
the interval I = [L, 2**16 * L) with L = 2**RZ = 2**10 (so x < 2**26 fits int32; the arithmetic runs in int64).
One live element serves ``GROUP`` = 4 hidden units and every part of the layer (h1 and h2, and c1 and c2): a
part's update over a half of width n is applied in ``ceil(n / m)`` blocks of m = ceil(n / GROUP) consecutive units,
unit ``j * m + i`` of block j going through live element i, one block after the other (the reverse undoes the
blocks in the opposite order). Sharing one live word between 4 units and all parts divides its fixed cost: a
live element costs 32 bits and holds up to 16 of information, so the unavoidable overhead is at most
32 / GROUP = 8 bits per unit (about 6 on average), whatever the sequence length.

For one unit, before the multiplication by the quantised gate z (Algorithm 1 grows x by about 2**RZ / z), an
element whose x is at or above ``2**16 * L * z / 2**RZ = z << 16`` emits its low 16 bits as one word and shifts
right by 16. This normalisation keeps x in I after the multiplication, and is decodable without any flag:
during reversal, after the inverse multiplication an element whose x fell below L is exactly one that emitted a
word at that point, so it pops its word back. L >= 2**RZ is what makes that exact (L * z / 2**RZ must be an
integer for every z in [1, 2**RZ]). Only the elements that overflowed emit, so the words follow the information
each unit actually forgot, not the worst unit of the batch.

Words (16 bits) are stored in a ``WordStack`` of int16 chunks. The first chunk holds 1/16 of a word per buffer
unit (so a partly filled chunk wastes at most one bit per unit); later chunks grow with the stack to 1/64 of its
capacity (a partly filled last chunk wastes at most 1/64 of the words). Emptied chunks are freed during reversal.

Allocated bits = 32 * live elements + 16 * chunk capacity: exactly the storage the tensors hold. Above the
information forgotten (its floor) they exceed it by the live words' unused part (a live element holds
log2(x / L) in [0, 16) bits in its 32: 4 to 8 bits per unit), plus chunk rounding: under one bit per unit for the
first chunk, under 1/64 of the words after that.

Padded positions use z = 2**RZ, for which the operation is the identity on both h and x and no word is emitted.

``stack.reference`` (optional, see ``revbench.core.buffer_reference``) is fed every forward multiplication so
that the reference implementation's whole-chunk buffer can be simulated on the same gates.
"""
from __future__ import annotations

import torch

from revbench.core.fixedpoint import GATE_ONE, RZ, div_with_buffer, mul_with_buffer

LOW_BITS = RZ                       # L = 2**10: the lower end of the live interval (must be >= RZ)
WORD_BITS = 16
LOW = 1 << LOW_BITS
HIGH = LOW << WORD_BITS             # the live interval is [LOW, HIGH) = [2**10, 2**26)
GROUP = 4                           # hidden units per live element
LIVE_DTYPE = torch.int32
WORD_DTYPE = torch.int16
_WORD_MASK = (1 << WORD_BITS) - 1
_THRESHOLD_SHIFT = WORD_BITS + LOW_BITS - RZ   # emit when x >= z << this  (= 2**16 * L * z / 2**RZ)
_WORD_OFFSET = 1 << (WORD_BITS - 1)
_FIRST_CHUNK_PER_UNIT = 16          # the first chunk holds chunk_words / 16 words
_GROWTH = 64                        # later chunks hold 1/64 of the capacity so far


class BufferCorruptError(RuntimeError):
    """Reversal found a buffer inconsistent with the forward pass (wrong order, or a state not produced here)."""


def live_shape(shape, group: int | None = None) -> tuple:
    """The live tensor's shape for a buffer over ``shape`` units: the last dimension divided by ``group``
    (default ``GROUP``), rounded up."""
    group = GROUP if group is None else int(group)
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    shape = tuple(shape)
    if not shape:
        raise ValueError("a buffer needs a state with at least one dimension (its units)")
    return (*shape[:-1], max(1, -(-shape[-1] // group)))


def empty_buffer(shape, device, group: int | None = None) -> torch.Tensor:
    """The live part of a fresh buffer over ``shape`` units (one live element per ``group`` units of the last
    dimension), every element at L: it holds no information yet."""
    return torch.full(live_shape(shape, group), LOW, dtype=LIVE_DTYPE, device=device)


class WordStack:
    """LIFO of 16-bit words emitted by a buffer's live state, stored in int16 chunks.

    ``chunk_words`` sizes the chunks: the first holds ``max(16, chunk_words // 16)`` words (callers pass the number
    of buffer units, B * H/2), later ones 1/64 of the capacity so far. ``reference``: an optional object with
    ``feed(h, z, mask)`` (``revbench.core.buffer_reference``) that ``buffered_mul`` feeds every multiplication.
    """

    def __init__(self, chunk_words: int, device, reference=None):
        self.first_chunk = max(int(chunk_words) // _FIRST_CHUNK_PER_UNIT, 16)
        self.device = device
        self.reference = reference
        self.chunks: list[torch.Tensor] = []
        self.used = 0                     # words used in the last chunk
        self.size = 0                     # words currently stored
        self.capacity = 0                 # words the chunks hold
        self.peak_capacity = 0
        self.counts: list[int] = []       # words per push (metadata for consistency checks; not needed to decode)

    def push(self, words: torch.Tensor) -> None:
        """Store ``words`` (int64 values in [0, 2**16))."""
        w = (words.reshape(-1) - _WORD_OFFSET).to(WORD_DTYPE)   # [0, 2**16) -> [-2**15, 2**15): an exact cast
        n, off = w.numel(), 0
        while off < n:
            if not self.chunks or self.used == self.chunks[-1].numel():
                k = max(self.first_chunk, self.capacity // _GROWTH)
                self.chunks.append(torch.empty(k, dtype=WORD_DTYPE, device=self.device))
                self.capacity += k
                self.used = 0
                self.peak_capacity = max(self.peak_capacity, self.capacity)
            c = self.chunks[-1]
            k = min(c.numel() - self.used, n - off)
            c[self.used:self.used + k] = w if k == n else w[off:off + k]
            self.used += k
            off += k
        self.size += n
        self.counts.append(n)

    def pop(self, n: int) -> torch.Tensor:
        """Remove and return the last ``n`` words pushed (int64 values in [0, 2**16)); a push may be popped in
        pieces (``buffered_div`` pops one block at a time) but a pop never reaches into an earlier push."""
        return self.pop_stored(n).to(torch.int64) + _WORD_OFFSET

    def pop_stored(self, n: int) -> torch.Tensor:
        """``pop`` as stored: int16 values ``word - 2**15``."""
        if not self.counts or self.counts[-1] < n:
            have = self.counts[-1] if self.counts else 0
            raise BufferCorruptError(f"reversal expected {n} buffered words at this step but the stack top holds {have}")
        self.counts[-1] -= n
        if not self.counts[-1]:
            self.counts.pop()
        parts, left = [], n
        while left:
            c = self.chunks[-1]
            k = min(self.used, left)
            parts.append(c[self.used - k:self.used])
            self.used -= k
            left -= k
            if self.used == 0:                 # free emptied chunks: memory shrinks during reversal
                self.chunks.pop()
                self.capacity -= c.numel()
                self.used = self.chunks[-1].numel() if self.chunks else 0
        self.size -= n
        return torch.cat(parts[::-1]) if len(parts) > 1 else parts[0]   # a view: valid until the next push

    def allocated_bits(self) -> int:
        return 16 * self.capacity

    def peak_allocated_bits(self) -> int:
        return 16 * self.peak_capacity

    def __len__(self) -> int:
        return self.size


def _blocks(width: int, m: int):
    """(start, stop) of the unit blocks that share the m live elements: [0, m), [m, 2m), ..."""
    return [(a, min(a + m, width)) for a in range(0, width, m)]


def _check_shapes(h, x):
    if x.dim() != h.dim() or h.shape[:-1] != x.shape[:-1] or x.shape[-1] < 1:
        raise ValueError(f"live buffer of shape {tuple(x.shape)} does not fit a state of shape {tuple(h.shape)} "
                         f"(expected {live_shape(h.shape)}; use empty_buffer(state.shape, device))")


def buffered_mul(h: torch.Tensor, z: torch.Tensor, x: torch.Tensor, stack: WordStack | None, mask=None):
    """Normalise the live state (emitting words where needed), then exact h * z / 2**RZ, block by block.
    Returns (h', x') with x' int32. The words of all blocks go to the stack as one push, block after block.

    ``stack=None`` drops the emitted words: the forward values are identical, but the step cannot
    be reversed. Methods that do not reverse (plain BPTT, checkpointing) use that. ``mask`` (optional, True where
    the step is real) only matters to the reference simulation of ``stack.reference``.
    """
    _check_shapes(h, x)
    if stack is not None and stack.reference is not None:
        stack.reference.feed(h, z, mask)
    m = x.shape[-1]
    live = x.to(torch.int64)
    outs, vals, needs = [], [], []
    for hb, zb, tb in zip(h.split(m, -1), z.split(m, -1), (z << _THRESHOLD_SHIFT).split(m, -1)):
        n = hb.shape[-1]
        xs = live if n == m else live[..., :n]
        need = xs >= tb                       # the elements that would overflow this block's multiplication
        if stack is not None:
            vals.append(xs.reshape(-1))
            needs.append(need.reshape(-1))
        xs = torch.where(need, xs >> WORD_BITS, xs)
        hb, xs = mul_with_buffer(hb, zb, xs)
        outs.append(hb)
        live = xs if n == m else torch.cat([xs, live[..., n:]], dim=-1)
    if stack is not None:
        words = torch.cat(vals)[torch.cat(needs)] if len(vals) > 1 else vals[0][needs[0]]
        if words.numel():
            stack.push(words & _WORD_MASK)
    h_out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
    return h_out, live.to(LIVE_DTYPE)


def buffered_div(h: torch.Tensor, z: torch.Tensor, x: torch.Tensor, stack: WordStack):
    """Exact inverse of ``buffered_mul`` (with the same stack). Returns (h, x) as they were before it."""
    _check_shapes(h, x)
    m = x.shape[-1]
    live = x.to(torch.int64)
    outs = []
    for hb, zb in zip(reversed(h.split(m, -1)), reversed(z.split(m, -1))):
        n = hb.shape[-1]
        xs = live if n == m else live[..., :n]
        hb, xs = div_with_buffer(hb, zb, xs)
        need = xs < LOW                       # exactly the elements that emitted a word here
        sel = xs[need]
        if sel.numel():
            # (x << 16) + word, with word = stored + 2**15 (int16 + int64 promotes to int64)
            xs = xs.masked_scatter(need, ((sel << WORD_BITS) | _WORD_OFFSET) + stack.pop_stored(sel.numel()))
        outs.append(hb)
        live = xs if n == m else torch.cat([xs, live[..., n:]], dim=-1)
    h_out = outs[0] if len(outs) == 1 else torch.cat(outs[::-1], dim=-1)
    return h_out, live.to(LIVE_DTYPE)


def is_empty(x: torch.Tensor, stack: WordStack | None) -> bool:
    """True when the buffer holds no information: every live element back at L and no words stored."""
    return bool((x == LOW).all()) and (stack is None or len(stack) == 0)


def live_bits(x: torch.Tensor) -> int:
    """Bits the live tensor allocates (its storage dtype's width per element)."""
    return 8 * x.numel() * x.element_size()


__all__ = ["LOW", "HIGH", "GROUP", "GATE_ONE", "WordStack", "BufferCorruptError", "empty_buffer", "live_shape",
           "buffered_mul", "buffered_div", "is_empty", "live_bits"]
