"""One side (encoder or decoder) of the encoder-decoder, run one step at a time, and the attention slice.

``Side`` runs its stack of cells over a padded batch (the step API of a chain: ``start``, ``advance``,
``reverse``, ``leaf``); ``SliceUpdater`` / ``SliceUndoer`` / ``SliceStore`` implement the stored attention
slice of the top encoder layer (see ``revbench.models.seq2seq.model``'s docstring).
"""
from __future__ import annotations

import torch

from revbench.core.buffer import WordStack, empty_buffer
from revbench.core.buffer_reference import attach_seq2seq, reference_bits, simulation_on
from revbench.core.fixedpoint import SCALE, from_fixed, to_fixed
from revbench.core.functional import straight_through
from revbench.core.state import (Carry, LayerState, StateUndoer, StateUpdater, buffer_bits_allocated, buffers_empty,
                                 col, leaf_carry, start_carry)

_INT32_MAX = (1 << 31) - 1


class SliceUpdater:
    """Wraps the top encoder layer's ``StateUpdater``: part 0 (h1) is updated through the buffer with z = 1 on
    the first ``d`` units, which are then overwritten with their true (lossy) value; see the module docstring.
    Gradients of the slice units follow the real update z * h1_prev + add (straight-through)."""

    def __init__(self, base: StateUpdater, d: int, mask, dtype):
        self.base, self.d, self.mask, self.dtype = base, d, mask, dtype

    def __call__(self, i, z, add):
        b, d = self.base, self.d
        if i != 0:
            return b(i, z, add)
        if z is None:                        # no forgetting: the slice's update is already an exact addition
            return b(0, z, add)
        h_prev_f, h_prev_i = b.floats[0], b.ints[0]
        b(0, torch.cat([torch.ones_like(z[:, :d]), z[:, d:]], dim=-1), add)
        m = col(self.mask)
        expr = z[:, :d] * h_prev_f[:, :d] + add[:, :d]
        if b.known is None:
            s_int = to_fixed(expr)
            if m is not None:
                s_int = torch.where(m, s_int, h_prev_i[:, :d])
            b.check_ints(s_int, "attention slice of h1")          # now, or with the layer's other checks
        else:
            s_int = b.known.ints[0][:, :d]
        ints = torch.cat([s_int, b.ints[0][:, d:]], dim=-1)
        b.ints[0] = ints
        if torch.is_grad_enabled():
            if m is not None:
                expr = torch.where(m, expr, h_prev_f[:, :d])
            f = torch.cat([straight_through(s_int, expr, SCALE, self.dtype), b.floats[0][:, d:]], dim=-1)
        else:
            f = from_fixed(ints, self.dtype)
        b.floats[0] = f
        return f


class SliceUndoer:
    """Wraps the top encoder layer's ``StateUndoer``: the inverse of ``SliceUpdater``'s buffer operation
    (z = 1 on the slice units, so they come out wrong and are restored from the store afterwards)."""

    def __init__(self, base: StateUndoer, d: int):
        self.base, self.d = base, d

    @property
    def bx(self):
        return self.base.bx

    def __call__(self, i, h, z, add):
        if i == 0 and z is not None:
            z = torch.cat([torch.ones_like(z[:, :self.d]), z[:, self.d:]], dim=-1)
        return self.base(i, h, z, add)


class SliceStore:
    """The stored attention slice: one [B, d] integer block per step, int32 while every value fits
    (|h| < 256), upgraded to int64 otherwise. ``initial`` is the slice before step 0."""

    def __init__(self, steps, batch, d, device):
        self.data = torch.zeros((steps, batch, d), dtype=torch.int32, device=device)
        self.initial = None

    def put(self, t, ints):
        if self.data.dtype == torch.int32 and bool((ints.abs() > _INT32_MAX).any()):
            self.data = self.data.to(torch.int64)
        self.data[t] = ints.to(self.data.dtype)

    def get(self, t):
        return self.initial if t < 0 else self.data[t].to(torch.int64)

    def allocated_bits(self) -> int:
        return self.data.numel() * self.data.element_size() * 8


class Side:
    """One side (encoder or decoder) of a batch: runs its stack of cells one step at a time.

    ``stacks``: one ``WordStack`` per layer (None where words are not kept or the layer does not forget).
    """

    def __init__(self, cells, embed, between, step_masks, keep_words, batch, dtype, device, slice_dim=0):
        self.cells = cells
        self.embed = embed                      # t -> float input of layer 0 at step t
        self.between = between                  # per layer except the last: dropout mask or None
        self.step_masks = step_masks            # (T, B) bool or None
        self.keep_words = keep_words
        self.dtype, self.device, self.B = dtype, device, batch
        self.weights = [dict(c.named_parameters()) for c in cells]
        self.stacks = [WordStack(batch * c.half, device) if (keep_words and c.reversible and c.forgets) else None
                       for c in cells]
        self.slice_dim = slice_dim if cells[-1].reversible else 0
        if keep_words and simulation_on():     # the reference's buffers on this side (buffer_bits_reference)
            attach_seq2seq(self.stacks, cells, self.slice_dim)
        T = 0 if step_masks is None else step_masks.shape[0]
        self.slices = SliceStore(T, batch, slice_dim, device) if (keep_words and self.slice_dim) else None
        self.ideal_bits: dict[int, torch.Tensor] = {}
        self.buffer_bits_peak = 0
        self.counters = {"forward_steps": 0, "reverse_steps": 0}

    # ---------------------------------------------------------------- states

    def reference_bits(self):
        """The simulated reference buffer's bits on this side (None when it was not simulated)."""
        return reference_bits(self.stacks)

    def start(self, state) -> Carry:
        """Carry from a user state (per layer a tuple: int64 fixed point for reversible cells)."""
        carry = start_carry(self.cells, state, self.B, self.dtype, self.device)
        if self.slices is not None:
            self.slices.initial = carry.layers[-1].ints[0][:, :self.slice_dim]
        return carry

    def start_from(self, other: Carry) -> Carry:
        """This side's first Carry from the other side's final one: same values (and autograd graph), fresh
        empty buffers of its own."""
        layers = []
        for c, ls in zip(self.cells, other.layers):
            bx = empty_buffer((self.B, c.half), self.device) if (c.reversible and c.forgets) else None
            layers.append(LayerState(ls.ints, ls.floats, bx))
        return Carry(tuple(layers))

    def leaf(self, carry: Carry) -> Carry:
        return leaf_carry(carry, self.dtype)

    def _mask(self, t):
        return None if self.step_masks is None else self.step_masks[t]

    def _drop(self, l, x):
        if l < len(self.cells) - 1 and self.between and self.between[l] is not None:
            return x * self.between[l]
        return x

    # ---------------------------------------------------------------- steps
    def advance(self, t: int, carry: Carry, grad: bool = False, known: Carry | None = None, x=None, mask=None):
        """Step t: Carry(t) -> (Carry(t+1), top-layer output). ``known``: the exact Carry(t+1) (replay).
        ``x``/``mask`` override the step's input and step mask (decoding, where there is no T)."""
        self.counters["forward_steps"] += 1
        if mask is None:
            mask = self._mask(t)
        top = len(self.cells) - 1
        with torch.set_grad_enabled(grad):
            if x is None:
                x = self.embed(t)
            new_layers, ideal = [], None
            for l, (cell, ls) in enumerate(zip(self.cells, carry.layers)):
                if cell.reversible:
                    upd = StateUpdater(self.stacks[l], cell.parts, self.dtype, ls, mask,
                                       None if known is None else known.layers[l])
                    u = SliceUpdater(upd, self.slice_dim, mask, self.dtype) if (l == top and self.slice_dim) else upd
                    cell.step(x, ls.floats, u, self.weights[l])
                    new = upd.result()
                    if upd.ideal is not None:
                        ideal = upd.ideal if ideal is None else ideal + upd.ideal
                else:
                    floats = cell.step(x, ls.floats, self.weights[l])
                    if mask is not None:
                        floats = tuple(torch.where(col(mask), f, o) for f, o in zip(floats, ls.floats))
                    new = LayerState(None, tuple(floats), None)
                new_layers.append(new)
                out = cell.output(new.floats)
                x = self._drop(l, out)
        carry = Carry(tuple(new_layers))
        if known is None:
            if ideal is not None and t is not None:
                self.ideal_bits[t] = ideal
            if self.slices is not None:
                self.slices.put(t, carry.layers[-1].ints[0][:, :self.slice_dim])
            if self.keep_words:
                self.buffer_bits_peak = max(self.buffer_bits_peak, self.buffer_bits_allocated(carry))
        return carry, out

    @torch.no_grad()
    def reverse(self, t: int, carry: Carry) -> Carry:
        """Rebuild Carry(t) exactly from Carry(t+1), popping buffer words and restoring the stored slice."""
        if not self.keep_words:
            raise RuntimeError("this side was built without keep_words=True: its buffers cannot be reversed")
        self.counters["reverse_steps"] += 1
        mask = self._mask(t)
        prev = list(carry.layers)
        top = len(self.cells) - 1
        for l in range(top, -1, -1):
            cell, ls = self.cells[l], carry.layers[l]
            if not cell.reversible:
                raise ValueError(f"cell {type(cell).__name__} is not reversible")
            x = self.embed(t) if l == 0 else self._drop(l - 1, self.cells[l - 1].output(carry.layers[l - 1].floats))
            undo = StateUndoer(self.stacks[l], ls, mask)
            u = SliceUndoer(undo, self.slice_dim) if (l == top and self.slice_dim) else undo
            ints = list(cell.reverse(x, ls.ints, u, self.weights[l], self.dtype))
            if l == top and self.slice_dim:
                ints[0] = torch.cat([self.slices.get(t - 1), ints[0][:, self.slice_dim:]], dim=-1)
            prev[l] = LayerState(tuple(ints), tuple(from_fixed(p, self.dtype) for p in ints), undo.bx)
        return Carry(tuple(prev))

    # ---------------------------------------------------------------- accounting
    def buffer_bits_allocated(self, carry: Carry) -> int:
        return buffer_bits_allocated(carry, self.stacks)

    def buffers_empty(self, carry: Carry) -> bool:
        return buffers_empty(carry, self.stacks)

    def ideal_total(self) -> float | None:
        if not self.ideal_bits:
            return None
        return float(torch.stack(list(self.ideal_bits.values())).sum())


