"""Recurrent cells: RevGRU, RevLSTM, their no-forgetting variants, and ordinary GRU/LSTM.

Every cell runs over the same step loop (``revbench.models.segment``). A reversible
cell's state is split into halves of width H/2 and held exactly in fixed point
(int64); each multiplicative forgetting goes through an ``Updater`` that the
segment supplies:

- the exact forward: quantise the gate, multiply through the buffer, add the
  fixed-point update;
- the replay used by reversible backprop: the next state is already known;
- both return the float state with straight-through gradients
  (d(z*h)/dh = z, d(z*h)/dz = h) and values exactly equal to the integers.

``reverse`` recomputes the same gates bit for bit from the known half and undoes
the updates in the exact reverse order (for RevLSTM: h2, c2, then h1, c1).

Ordinary cells follow torch.nn.GRU / torch.nn.LSTM's equations and parameter
layout (weight_ih, weight_hh, bias_ih, bias_hh), so a fused layer can load them.

Every cell's matrix products use ``linear_into`` (or ``gates_into``: two products and their sum in one node):
during backward the weight and bias gradients are added in place into ``.grad`` (of the parameter, or of a
segment's weight-dropped leaf), so a per-step backward (reversible backprop, recomputation, and bptt too) never
materialises a weight-sized gradient beside ``.grad``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from revbench.core.fixedpoint import from_fixed, limit_gate, quantise_gate, to_fixed
from revbench.core.functional import gates_into, linear_into

CELL_TYPES = ("revgru", "revlstm", "nf-revgru", "nf-revlstm", "gru", "lstm")
REVERSIBLE_CELLS = ("revgru", "revlstm", "nf-revgru", "nf-revlstm")
DEFAULT_FORGET_BITS = 3
DEFAULT = "default"         # max_forget_bits not given: 3 for reversible cells, none for ordinary ones


class Cell(nn.Module):
    """Common interface. ``parts`` names the state tensors; ``recurrent_weights`` are the names that
    recurrent weight-drop applies to."""

    reversible = False
    forgets = False
    parts: tuple[str, ...] = ()
    recurrent_weights: tuple[str, ...] = ()

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size

    def reset_parameters(self, init_range: float | None = None) -> None:
        std = init_range if init_range is not None else 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -std, std)

    def part_shapes(self, batch_size: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def output(self, floats):
        """The float output passed to the next layer / the output layer."""
        raise NotImplementedError

    def weights(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters())


# ---------------------------------------------------------------------------------------------- reversible
class _RevCell(Cell):
    reversible = True

    def __init__(self, input_size: int, hidden_size: int, max_forget_bits: int | None, forgets: bool):
        if hidden_size % 2:
            raise ValueError(f"reversible cells split the hidden state in two halves: hidden_size must be even, "
                             f"got {hidden_size}")
        super().__init__(input_size, hidden_size)
        self.half = hidden_size // 2
        self.max_forget_bits = max_forget_bits
        self.forgets = forgets

    def part_shapes(self, batch_size):
        return [(batch_size, self.half)] * len(self.parts)

    def output(self, floats):
        return torch.cat([floats[0], floats[1]], dim=-1)

    def _gate(self, s):
        return limit_gate(s, self.max_forget_bits)


class RevGRUCell(_RevCell):
    """h = [h1; h2]. Half a: [z; r] = sigmoid(W [x; h_other]), g = tanh(U [x; r * h_other]),
    h_a <- z * h_a + (1 - z) * g   (no forgetting: h_a <- h_a + (1 - z) * g). Half 2 uses the new h1."""

    parts = ("h1", "h2")
    recurrent_weights = ("w1_h", "u1_h", "w2_h", "u2_h")

    def __init__(self, input_size, hidden_size, max_forget_bits=3, forgets=True):
        super().__init__(input_size, hidden_size, max_forget_bits, forgets)
        n = self.half
        for a in (1, 2):
            self.register_parameter(f"w{a}_x", nn.Parameter(torch.empty(2 * n, input_size)))
            self.register_parameter(f"w{a}_h", nn.Parameter(torch.empty(2 * n, n)))
            self.register_parameter(f"b{a}", nn.Parameter(torch.empty(2 * n)))
            self.register_parameter(f"u{a}_x", nn.Parameter(torch.empty(n, input_size)))
            self.register_parameter(f"u{a}_h", nn.Parameter(torch.empty(n, n)))
            self.register_parameter(f"c{a}", nn.Parameter(torch.empty(n)))
        self.reset_parameters()

    def _half(self, a, x, other, W):
        zr = torch.sigmoid(gates_into(x, other, W[f"w{a}_x"], W[f"w{a}_h"], W[f"b{a}"]))
        s, r = zr.chunk(2, dim=-1)
        g = torch.tanh(gates_into(x, r * other, W[f"u{a}_x"], W[f"u{a}_h"], W[f"c{a}"]))
        if not self.forgets:
            return None, (1 - s) * g
        z = self._gate(s)
        return z, (1 - z) * g

    def step(self, x, floats, upd, W):
        h1, h2 = floats
        z, add = self._half(1, x, h2, W)
        h1 = upd(0, z, add)
        z, add = self._half(2, x, h1, W)
        h2 = upd(1, z, add)
        return (h1, h2)

    @torch.no_grad()
    def reverse(self, x, ints, undo, W, dtype):
        h1, h2 = ints
        z, add = self._half(2, x, from_fixed(h1, dtype), W)
        h2 = undo(1, h2, z, add)
        z, add = self._half(1, x, from_fixed(h2, dtype), W)
        h1 = undo(0, h1, z, add)
        return (h1, h2)


class RevLSTMCell(_RevCell):
    """State [h1; h2; c1; c2]. Half a: [f, i, o, p] = sigmoid(W [x; h_other]), g = tanh(U [x; h_other]),
    c_a <- f * c_a + i * g,  h_a <- p * h_a + o * tanh(c_a)  (no forgetting: f = p = 1). Half 2 uses the new h1.
    The parts are ordered (h1, h2, c1, c2)."""

    parts = ("h1", "h2", "c1", "c2")
    recurrent_weights = ("w1_h", "w2_h")

    def __init__(self, input_size, hidden_size, max_forget_bits=3, forgets=True):
        super().__init__(input_size, hidden_size, max_forget_bits, forgets)
        n = self.half
        for a in (1, 2):  # rows: f, i, o, p, g (g through tanh)
            self.register_parameter(f"w{a}_x", nn.Parameter(torch.empty(5 * n, input_size)))
            self.register_parameter(f"w{a}_h", nn.Parameter(torch.empty(5 * n, n)))
            self.register_parameter(f"b{a}", nn.Parameter(torch.empty(5 * n)))
        self.reset_parameters()

    def _gates(self, a, x, other, W):
        pre = gates_into(x, other, W[f"w{a}_x"], W[f"w{a}_h"], W[f"b{a}"])
        n = self.half
        s = torch.sigmoid(pre[:, :4 * n])
        g = torch.tanh(pre[:, 4 * n:])
        f, i, o, p = s.chunk(4, dim=-1)
        f, p = self._gate(f), self._gate(p)
        return f, i * g, o, p

    def step(self, x, floats, upd, W):
        h1, h2, c1, c2 = floats
        f, ig, o, p = self._gates(1, x, h2, W)
        c1 = upd(2, f if self.forgets else None, ig)
        h1 = upd(0, p if self.forgets else None, o * torch.tanh(c1))
        f, ig, o, p = self._gates(2, x, h1, W)
        c2 = upd(3, f if self.forgets else None, ig)
        h2 = upd(1, p if self.forgets else None, o * torch.tanh(c2))
        return (h1, h2, c1, c2)

    @torch.no_grad()
    def reverse(self, x, ints, undo, W, dtype):
        h1, h2, c1, c2 = ints
        f, ig, o, p = self._gates(2, x, from_fixed(h1, dtype), W)
        h2 = undo(1, h2, p if self.forgets else None, o * torch.tanh(from_fixed(c2, dtype)))
        c2 = undo(3, c2, f if self.forgets else None, ig)
        f, ig, o, p = self._gates(1, x, from_fixed(h2, dtype), W)
        h1 = undo(0, h1, p if self.forgets else None, o * torch.tanh(from_fixed(c1, dtype)))
        c1 = undo(2, c1, f if self.forgets else None, ig)
        return (h1, h2, c1, c2)


# ---------------------------------------------------------------------------------------------- ordinary
class GRUCell(Cell):
    """torch.nn.GRU's equations and parameter layout (gates r, z, n)."""

    parts = ("h",)
    recurrent_weights = ("weight_hh",)

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        self.reset_parameters()

    def part_shapes(self, batch_size):
        return [(batch_size, self.hidden_size)]

    def output(self, floats):
        return floats[0]

    def step(self, x, floats, W):
        (h,) = floats
        gi = linear_into(x, W["weight_ih"], W["bias_ih"])
        gh = linear_into(h, W["weight_hh"], W["bias_hh"])
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return ((1 - z) * n + z * h,)


class LSTMCell(Cell):
    """torch.nn.LSTM's equations and parameter layout (gates i, f, g, o); parts (h, c)."""

    parts = ("h", "c")
    recurrent_weights = ("weight_hh",)

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def part_shapes(self, batch_size):
        return [(batch_size, self.hidden_size)] * 2

    def output(self, floats):
        return floats[0]

    def step(self, x, floats, W):
        h, c = floats
        gates = gates_into(x, h, W["weight_ih"], W["weight_hh"], W["bias_ih"], W["bias_hh"])
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c)


def make_cell(cell: str, input_size: int, hidden_size: int, max_forget_bits: int | None) -> Cell:
    if cell == "revgru":
        return RevGRUCell(input_size, hidden_size, max_forget_bits, forgets=True)
    if cell == "nf-revgru":
        return RevGRUCell(input_size, hidden_size, max_forget_bits, forgets=False)
    if cell == "revlstm":
        return RevLSTMCell(input_size, hidden_size, max_forget_bits, forgets=True)
    if cell == "nf-revlstm":
        return RevLSTMCell(input_size, hidden_size, max_forget_bits, forgets=False)
    if cell == "gru":
        return GRUCell(input_size, hidden_size)
    if cell == "lstm":
        return LSTMCell(input_size, hidden_size)
    raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELL_TYPES)}")


def validate_max_forget_bits(k) -> int | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10:
        raise ValueError(f"max_forget_bits must be an int from 1 to 10 (gates limited to [2^-k, 1]) or None for "
                         f"no limit; got {k!r}")
    return k


def resolve_max_forget_bits(cell: str, k=DEFAULT) -> int | None:
    """The forgetting limit a model of ``cell`` uses: ``DEFAULT`` (not given) is 3 for reversible cells and
    none for ordinary ones; a reversible cell validates ``k``; an ordinary cell refuses a limit (it has no
    information buffer to limit)."""
    if cell in REVERSIBLE_CELLS:
        return validate_max_forget_bits(DEFAULT_FORGET_BITS if k == DEFAULT else k)
    if k is None or k == DEFAULT:
        return None
    raise ValueError(f"max_forget_bits={k!r} was given for cell {cell!r}, which has no information buffer (only "
                     f"reversible cells limit forgetting); leave it out or pass None")


__all__ = ["CELL_TYPES", "REVERSIBLE_CELLS", "DEFAULT", "resolve_max_forget_bits", "Cell", "RevGRUCell", "RevLSTMCell", "GRUCell", "LSTMCell",
           "make_cell", "validate_max_forget_bits", "to_fixed", "quantise_gate"]
