"""Exact reversal, bit for bit: forward over a long segment then reverse returns the initial state (integer
equality) and leaves the buffers empty, for every reversible cell, forgetting limit and depth."""
import pytest
import torch

from revbench.models.segment import Segment
from tests.helpers import make_batch, make_model, random_state

CELLS = ["revgru", "revlstm", "nf-revgru", "nf-revlstm"]
LIMITS = [1, 2, 3, 5, None]


def forward_then_reverse(model, T, B, lengths=None, dtype_check=True):
    x, y = make_batch(T, B)
    state = random_state(model, B)
    seg = Segment(model, x, y, lengths, keep_words=True)
    start = seg.start(state)
    carry = start
    for t in range(T):
        carry, _ = seg.advance(t, carry)
    moved = any(not torch.equal(a, b) for la, lb in zip(start.layers, carry.layers) for a, b in zip(la.ints, lb.ints))
    for t in range(T - 1, -1, -1):
        carry = seg.reverse(t, carry)
    for la, lb in zip(start.layers, carry.layers):
        for a, b in zip(la.ints, lb.ints):
            assert a.dtype == torch.int64 and torch.equal(a, b)
    assert seg.buffers_empty(carry)
    return seg, moved


# Every (cell, limit) pair runs in the default suite, with depths cycling through 1-3 so each cell is reversed
# at every depth; the full cross product (60 cases, ~4 min on 2 cores) runs with -m slow.
DEFAULT = [(c, k, 1 + (i + j) % 3) for i, c in enumerate(CELLS) for j, k in enumerate(LIMITS)]
FULL = [pytest.param(c, k, n, marks=pytest.mark.slow) for c in CELLS for k in LIMITS for n in (1, 2, 3)
        if (c, k, n) not in DEFAULT]


@pytest.mark.parametrize("cell,k,layers", DEFAULT + FULL)
def test_exact_reversal_long_segment(cell, k, layers):
    # init_range 1.0: large weights push gates to both ends of their range (adversarial for the buffer)
    model = make_model(cell, layers=layers, k=k, hidden=8, emb=6, init_range=1.0, dtype=torch.float32)
    B = 3
    lengths = torch.tensor([1000, 617, 1])         # variable sequence lengths within the batch
    seg, moved = forward_then_reverse(model, 1000, B, lengths)
    assert moved                                   # the forward really changed the state
    if cell in ("revgru", "revlstm"):
        assert seg.stats()["buffer_bits_ideal"] > 0


@pytest.mark.parametrize("cell", ["revgru", "revlstm"])
def test_padding_changes_nothing(cell):
    """A sequence padded beyond its length ends in the same state as the same sequence alone."""
    model = make_model(cell, layers=2, hidden=8, emb=6, dropout=False)
    x, y = make_batch(20, 2)
    seg = Segment(model, x, y, torch.tensor([20, 7]), keep_words=True)
    carry = seg.start(model.init_state(2))
    for t in range(20):
        carry, _ = seg.advance(t, carry)
    alone = Segment(model, x[:7, 1:], y[:7, 1:], keep_words=True)
    c2 = alone.start(model.init_state(1))
    for t in range(7):
        c2, _ = alone.advance(t, c2)
    for la, lb in zip(carry.layers, c2.layers):
        for a, b in zip(la.ints, lb.ints):
            assert torch.equal(a[1:], b)


def test_reverse_in_wrong_order_is_detected():
    model = make_model("revlstm", hidden=8, emb=6, dropout=False, init_range=1.0)
    x, y = make_batch(50, 4)
    seg = Segment(model, x, y, keep_words=True)
    carry = seg.start(model.init_state(4))
    for t in range(50):
        carry, _ = seg.advance(t, carry)
    with pytest.raises(Exception):
        for t in range(50):                          # wrong direction: buffers cannot match
            carry = seg.reverse(t, carry)
        assert seg.buffers_empty(carry)
