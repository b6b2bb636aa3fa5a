"""``buffer_bits_reference``: the reference implementation's buffer, simulated on the gates our buffer applies.

What is simulated (MacKay et al.'s ``InformationBuffer``, reversible-rnn ``buffer.py``, HEAD 0d4b07f)
---------------------------------------------------------------------------------------------------
One buffer is an int64 tensor ``cur`` of shape (batch, units), starting at 0, shared by every part of a layer
(h1, h2; c1, c2) and, in the language model, by layers of the same width. Each multiplication of a state part
by a quantised gate z (``FixedMultiply``) does, on the elements where the step is real (mask):

1. the overflow check: if ANY real element of ``cur`` is >= 2**(63 - RZ) = 2**53, the whole ``cur`` is pushed
   onto the stack of past buffers (``torch.cat`` of a new [batch, units] int64 slice) and ``cur`` restarts at 0;
   one flag bit per multiplication records whether it pushed (8-bit bytes, a new byte every 8 multiplications);
2. ``cur = (cur * 2**RZ + (h mod 2**RZ)) // z`` (the buffer steps of Algorithm 1).

Its memory, as the reference counts it (``bit_usage``): 64 bits per element of ``cur`` and of every pushed
buffer, plus 8 bits per flag byte: ``64 * units * batch * (1 + pushes) + 8 * (1 + multiplications // 8)``.

The simulation feeds this scheme the same sequence of (h, z, mask) that our buffer sees (``buffered_mul`` calls
``feed`` before each multiplication). It keeps ``cur`` in numpy on the host (a measuring instrument: its memory is
not the method's and stays out of the torch meters) and only counts pushes. Where no mask is given every element is
real; elements with z = 2**RZ are then an identity (``(b * 2**RZ + r) // 2**RZ = b``), computed without overflow.
The reference's own trajectory would differ slightly (its buffer starts at 0 and feeds different low bits back
into h); the gates and the states are ours, so both buffers are charged for the same information.

Sharing, as in the reference code: ``attach_lm`` gives layer 0 and the last layer a buffer each and lets the
layers between share layer 0's (``rev_training/model.py``); the encoder-decoder reference shares one buffer across
all layers of the encoder (except the top layer's h1 beside the attention slice, which gets its own buffer of
width H/2 - slice) and reuses it in the decoder; ``PartRouter`` routes each part of a layer to its buffer.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager

import numpy as np

from revbench.core.fixedpoint import GATE_ONE, RZ

OVERFLOW = 1 << (63 - RZ)          # the reference's overflow_int


_SIMULATING = contextvars.ContextVar("revbench_buffer_reference", default=False)


@contextmanager
def simulating():
    """Within this block, chains that keep the buffer's words attach the reference simulation (the harness's
    measured step). Outside it they do not: timed steps and training never pay for the instrument."""
    token = _SIMULATING.set(True)
    try:
        yield
    finally:
        _SIMULATING.reset(token)


def simulation_on() -> bool:
    return _SIMULATING.get()


def _host(t) -> np.ndarray:
    return t.detach().cpu().numpy()


class ReferenceBuffer:
    """One simulated ``InformationBuffer``; ``bits()`` is what the reference's ``bit_usage`` returns."""

    def __init__(self):
        self.cur: np.ndarray | None = None   # sized by the first feed
        self.pushes = 0                       # whole buffers pushed onto the past stack
        self.multiplications = 0              # overflow_mul calls (one flag bit each)

    def feed(self, h, z, mask=None, cols=None) -> None:
        """One multiplication of the state ``h`` (int64) by the quantised gate ``z``; ``mask``: True where the
        step is real (broadcast to h); ``cols``: the columns of h this buffer holds (a slice), default all."""
        h, z = _host(h), _host(z)
        z = np.broadcast_to(z, h.shape)
        real = np.ones(h.shape, dtype=bool) if mask is None else np.broadcast_to(_host(mask).astype(bool), h.shape)
        if cols is not None:
            h, z, real = h[..., cols], z[..., cols], real[..., cols]
        if self.cur is None:
            self.cur = np.zeros(h.shape, dtype=np.int64)
        elif self.cur.shape != h.shape:
            raise ValueError(f"reference buffer of shape {self.cur.shape} fed a state of shape {h.shape}")
        if bool((self.cur[real] >= OVERFLOW).any()):
            self.pushes += 1
            self.cur = np.zeros_like(self.cur)
        self.multiplications += 1
        moving = real & (z != GATE_ONE)
        b = self.cur[moving]
        self.cur[moving] = (b * GATE_ONE + (h[moving] & (GATE_ONE - 1))) // z[moving]

    def bits(self) -> int:
        if self.cur is None:
            return 0
        return 64 * self.cur.size * (1 + self.pushes) + 8 * (1 + self.multiplications // 8)


class PartRouter:
    """Routes the multiplications of one layer to per-part reference buffers. ``targets``: one
    ``(ReferenceBuffer, cols)`` per multiplication of a step, in the order the cell applies them (RevGRU: h1, h2;
    RevLSTM: c1, h1, c2, h2); ``cols`` a slice of the part's columns or None."""

    def __init__(self, targets):
        self.targets = list(targets)
        self.calls = 0

    def feed(self, h, z, mask=None) -> None:
        buf, cols = self.targets[self.calls % len(self.targets)]
        self.calls += 1
        buf.feed(h, z, mask, cols)

    def buffers(self):
        return [b for b, _ in self.targets]


def _buffers(ref):
    return ref.buffers() if hasattr(ref, "buffers") else [ref]


def reference_bits(stacks) -> int | None:
    """Bits of the distinct reference buffers attached to ``stacks`` (None entries and stacks without a
    simulation skipped); None when there is none. The reference's bits only grow during the forward pass,
    so this is also their peak over the step."""
    seen, total = set(), None
    for st in stacks:
        ref = getattr(st, "reference", None) if st is not None else None
        if ref is None:
            continue
        for buf in _buffers(ref):
            if id(buf) not in seen:
                seen.add(id(buf))
                total = (total or 0) + buf.bits()
    return total


def attach_lm(stacks, widths) -> None:
    """The language model's sharing: layer 0 and the last layer get a buffer each, the layers between share
    layer 0's when their widths are equal (as ``rev_training/model.py`` does). ``widths``: H/2 per layer."""
    first = None
    n = len(stacks)
    for l, (st, w) in enumerate(zip(stacks, widths)):
        if st is None:
            continue
        if 0 < l < n - 1 and first is not None and first[1] == w:
            st.reference = first[0]
        else:
            st.reference = ReferenceBuffer()
            if first is None:
                first = (st.reference, w)


def call_order(cell) -> tuple:
    """The order in which a reversible cell's step multiplies its parts (``revbench.core.cells``: RevGRU h1, h2;
    RevLSTM c1, h1, c2, h2), as indices into ``cell.parts``."""
    names = ("c1", "h1", "c2", "h2") if "c1" in cell.parts else ("h1", "h2")
    return tuple(cell.parts.index(n) for n in names)


def attach_seq2seq(stacks, cells, slice_dim: int = 0, main: ReferenceBuffer | None = None) -> ReferenceBuffer:
    """The encoder-decoder reference's sharing on one side: one buffer (``main``, new if None) for every layer and
    part; with an attention slice, the top layer's h1 goes to a buffer of its own over the columns after the
    slice (``nmt/revencoder.py``). Returns ``main`` (pass it to the decoder's call to share it as the reference
    does; the figures are then per side only if each side has its own)."""
    main = ReferenceBuffer() if main is None else main
    last = len(cells) - 1
    for l, (st, c) in enumerate(zip(stacks, cells)):
        if st is None:
            continue
        if l == last and slice_dim:
            side = ReferenceBuffer()
            h1 = c.parts.index("h1")
            st.reference = PartRouter([(side, slice(slice_dim, None)) if i == h1 else (main, None)
                                       for i in call_order(c)])
        else:
            st.reference = main
    return main


__all__ = ["ReferenceBuffer", "PartRouter", "reference_bits", "simulating", "simulation_on", "attach_lm", "attach_seq2seq", "call_order",
           "OVERFLOW"]
