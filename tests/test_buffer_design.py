"""The buffer's design (revbench.core.buffer): exact round trips on adversarial gates, allocated bits equal to the
storage the tensors really hold, and the reference's whole-chunk scheme (revbench.core.buffer_reference) checked
on hand-computed examples and never beating ours on the same gates."""
import numpy as np
import pytest
import torch

from revbench import methods
from revbench.core import buffer
from revbench.core.buffer import (GROUP, HIGH, LOW, BufferCorruptError, WordStack, buffered_div, buffered_mul,
                                  empty_buffer, is_empty, live_bits, live_shape)
from revbench.core.buffer_reference import OVERFLOW, PartRouter, ReferenceBuffer, attach_lm, reference_bits
from revbench.core.fixedpoint import GATE_ONE, STATE_LIMIT, limit_gate, quantise_gate
from revbench.core.state import buffer_bits_allocated
from revbench.models import RNNLM
from revbench.models.segment import Segment

pytestmark = pytest.mark.usefixtures("one_thread")


def storage_bits(x, stack):
    """Bits the tensors really hold: the live tensor's storage plus every chunk's storage."""
    return 8 * (x.untyped_storage().nbytes() + sum(c.untyped_storage().nbytes() for c in stack.chunks))


def round_trip(h0, zs, stack_words=None):
    """Forward through every gate, checking the invariants, then back; returns the peak allocated bits."""
    x = empty_buffer(h0.shape, "cpu")
    stack = WordStack(stack_words or h0.numel(), "cpu")
    h, peak = h0, 0
    for z in zs:
        h, x = buffered_mul(h, z, x, stack)
        assert x.dtype == torch.int32 and x.shape == live_shape(h0.shape)
        assert bool(((x >= LOW) & (x < HIGH)).all())
        assert stack.allocated_bits() + live_bits(x) == storage_bits(x, stack)
        peak = max(peak, stack.allocated_bits() + live_bits(x))
    for z in reversed(zs):
        h, x = buffered_div(h, z, x, stack)
        assert stack.allocated_bits() + live_bits(x) == storage_bits(x, stack)   # also while chunks are freed
    assert torch.equal(h, h0) and is_empty(x, stack) and stack.chunks == []
    return peak, stack


def extreme_states(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(-(1 << 50), 1 << 50, shape, generator=g)
    flat = h.view(-1)
    for i, v in enumerate([0, -1, 1, STATE_LIMIT - 1, -(STATE_LIMIT - 1), GATE_ONE - 1, -GATE_ONE]):
        if i < flat.numel():
            flat[i] = v
    return h


@pytest.mark.parametrize("shape", [(16, 64), (3, 7), (2, 325), (5, 1), (4, 3), (9,), (2, 3, 10)])
def test_round_trip_all_gates_at_the_minimum(shape):
    """z = 2**-10 everywhere: every unit forgets the most it can (10 bits) at every step."""
    h0 = extreme_states(shape)
    T = 60
    zs = [torch.ones(shape, dtype=torch.int64)] * T
    peak, _ = round_trip(h0, zs)
    ideal = 10 * T * h0.numel()
    assert ideal < peak <= 1.02 * ideal + live_bits(empty_buffer(shape, "cpu")) + 16 * max(16, h0.numel() // 16)


@pytest.mark.parametrize("shape", [(16, 64), (3, 7), (1,)])
def test_gates_at_one_store_nothing(shape):
    """z = 1 everywhere: the identity on h and on the live state, and no word is ever emitted."""
    h0 = extreme_states(shape)
    x0 = empty_buffer(shape, "cpu")
    stack = WordStack(h0.numel(), "cpu")
    h, x = h0, x0
    for _ in range(50):
        h, x = buffered_mul(h, torch.full(shape, GATE_ONE), x, stack)
    assert torch.equal(h, h0) and torch.equal(x, x0) and len(stack) == 0 and stack.allocated_bits() == 0


@pytest.mark.parametrize("shape", [(16, 64), (3, 7), (2, 325), (4, 3)])
def test_round_trip_mixed_gates(shape):
    """Random gates with both extremes mixed in, per element and per step."""
    g = torch.Generator().manual_seed(1)
    h0 = extreme_states(shape, 1)
    zs = []
    for t in range(200):
        z = quantise_gate(torch.rand(shape, generator=g) ** 3)
        pick = torch.rand(shape, generator=g)
        z = torch.where(pick < 0.1, torch.ones_like(z), z)
        z = torch.where(pick > 0.9, torch.full_like(z, GATE_ONE), z)
        zs.append(z)
    round_trip(h0, zs)


def test_round_trip_with_padding_masks():
    """Padded rows (z = 2**RZ, as the state updater sets them) keep h and their live elements unchanged."""
    B, H, T = 6, 20, 120
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([120, 90, 33, 1, 0, 77])
    h0 = extreme_states((B, H), 2)
    zs = []
    for t in range(T):
        z = quantise_gate(limit_gate(torch.rand(B, H, generator=g), 2))
        zs.append(torch.where((t < lengths).unsqueeze(1), z, torch.full_like(z, GATE_ONE)))
    x = empty_buffer((B, H), "cpu")
    stack, h = WordStack(B * H, "cpu"), h0
    for z in zs:
        h, x = buffered_mul(h, z, x, stack)
    assert torch.equal(h[4], h0[4]) and bool((x[4] == LOW).all())       # length 0: never touched
    for z in reversed(zs):
        h, x = buffered_div(h, z, x, stack)
    assert torch.equal(h, h0) and is_empty(x, stack)


def test_group_shares_one_live_element_and_only_overflowing_units_emit():
    B, H, T = 2, 8, 40
    assert live_shape((B, H)) == (B, H // GROUP)
    z = torch.full((B, H), GATE_ONE)
    z[0, 5] = 1                                    # one unit forgets 10 bits per step, the others nothing
    x, stack = empty_buffer((B, H), "cpu"), WordStack(B * H, "cpu")
    h = torch.arange(B * H).reshape(B, H) << 30
    for _ in range(T):
        h, x = buffered_mul(h, z, x, stack)
    assert 10 * T / 16 - 2 <= len(stack) <= 10 * T / 16 + 1
    others = torch.ones_like(x, dtype=torch.bool)
    others[0, 5 % (H // GROUP)] = False                # unit 5 goes through live element 1 of row 0
    assert bool((x[others] == LOW).all())


def test_reversal_in_the_wrong_order_is_detected():
    g = torch.Generator().manual_seed(3)
    h0 = extreme_states((4, 16), 3)
    zs = [quantise_gate(torch.rand(4, 16, generator=g)) for _ in range(30)]
    x, stack, h = empty_buffer(h0.shape, "cpu"), WordStack(64, "cpu"), h0
    for z in zs:
        h, x = buffered_mul(h, z, x, stack)
    with pytest.raises(BufferCorruptError):
        for z in zs:                               # wrong order: the pops cannot match the pushes
            h, x = buffered_div(h, z, x, stack)


def test_chunks_grow_geometrically_and_waste_little():
    stack = WordStack(1024, "cpu")
    assert stack.first_chunk == 64
    total = 0
    for n in [37, 1, 500, 3000, 64] * 40:
        stack.push(torch.randint(0, 1 << 16, (n,)))
        total += n
        assert len(stack) == total <= stack.capacity
        last = stack.chunks[-1].numel()
        assert stack.capacity - total < last and last <= max(stack.first_chunk, stack.capacity // 64 + 1)
    assert stack.peak_allocated_bits() == stack.allocated_bits() == 16 * stack.capacity
    words = torch.randint(0, 1 << 16, (77,))
    stack.push(words)
    assert torch.equal(stack.pop(40), words[37:]) and torch.equal(stack.pop(37), words[:37])   # pieces of a push
    with pytest.raises(BufferCorruptError):
        stack.pop(65)                              # more than the top push holds


def segment_forward(cell, k, T, B=4, H=16, seed=0, init_range=None, check_storage=True):
    torch.manual_seed(seed)
    model = RNNLM(50, H, H, 2, cell=cell, max_forget_bits=k, init_range=init_range)
    g = torch.Generator().manual_seed(seed + 1)
    x, y = (torch.randint(0, 50, (T, B), generator=g) for _ in range(2))
    seg = Segment(model, x, y, keep_words=True)
    attach_lm(seg.stacks, [c.half for c in model.cells])
    carry = seg.start(model.init_state(B))
    for t in range(T):
        carry, _ = seg.advance(t, carry)
        if not check_storage:
            continue
        real = sum(storage_bits(ls.bx, st) for ls, st in zip(carry.layers, seg.stacks))
        assert buffer_bits_allocated(carry, seg.stacks) == real
    return seg, carry


@pytest.mark.parametrize("cell", ["revgru", "revlstm"])
def test_segment_allocated_bits_are_the_storage_and_beat_the_reference(cell):
    seg, carry = segment_forward(cell, 3, 60)
    ours, ref = seg.buffer_bits_peak, reference_bits(seg.stacks)
    ideal = seg.stats()["buffer_bits_ideal"]
    assert ideal < ours < ref
    for ls in carry.layers:
        assert ls.bx.dtype == torch.int32 and ls.bx.shape == live_shape((4, 8))
    for t in range(59, -1, -1):
        carry = seg.reverse(t, carry)
    assert seg.buffers_empty(carry)


@pytest.mark.parametrize("cell", ["revgru", "revlstm"])
@pytest.mark.parametrize("k", [2, 3, None])
def test_default_lm_efficiency_and_never_worse_than_the_reference(cell, k):
    """The default-initialised LM of the benchmark grid (hidden 128, batch 16) at T = 35, through the method."""
    torch.manual_seed(0)
    model = RNNLM(2000, 128, 128, 1, cell=cell, max_forget_bits=k)
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randint(0, 2000, (35, 16), generator=g) for _ in range(2))
    refs = []
    real_init = Segment.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        attach_lm(self.stacks, [c.half for c in self.model.cells])
        refs.append(self.stacks)

    try:
        Segment.__init__ = init
        out = methods.get("reversible").step(model, x, y, model.init_state(16))
    finally:
        Segment.__init__ = real_init
    s = out.stats
    assert s["buffer_bits_ideal"] < s["buffer_bits_actual"] <= 1.3 * s["buffer_bits_ideal"]
    assert s["buffer_bits_actual"] < reference_bits(refs[0])


# ---------------------------------------------------------------------- the reference simulation by hand
def test_reference_buffer_hand_computed():
    """Batch 1, two units; unit 0 forgets 10 bits per step (z = 1, h mod 2**10 = 5), unit 1 nothing (z = 2**10).
    cur[0] after n steps is 5 * (1024**n - 1) / 1023: 5, 5125, ..., 5 * 2**50 * (1 + ...) < 2**53 after 6 steps
    and >= 2**53 after 7, so the 8th multiplication pushes the whole [1, 2] buffer and restarts it."""
    ref = ReferenceBuffer()
    h = torch.tensor([[5, 1027]])
    z = torch.tensor([[1, GATE_ONE]])
    expect = 0
    for n in range(1, 8):
        ref.feed(h, z)
        expect = expect * 1024 + 5
        assert ref.cur.tolist() == [[expect, 0]] and ref.pushes == 0
    assert expect >= OVERFLOW > (expect - 5) // 1024
    assert ref.bits() == 64 * 2 + 8 * 1                    # one int64 per element, one flag byte
    ref.feed(h, z)                                         # 8th: cur[0] >= 2**53 -> push, restart at 0, then 5
    assert ref.pushes == 1 and ref.cur.tolist() == [[5, 0]]
    assert ref.bits() == 64 * 2 * 2 + 8 * 2                # two buffers' worth, a second flag byte (8 calls)
    assert ref.multiplications == 8


def test_reference_buffer_division_mask_and_columns():
    ref = ReferenceBuffer()
    ref.feed(torch.tensor([[1023, -1]]), torch.tensor([[512, 3]]))
    assert ref.cur.tolist() == [[1023 // 512, 1023 // 3]]          # -1 mod 1024 = 1023
    big = ReferenceBuffer()
    big.cur = np.array([[OVERFLOW, 0]], dtype=np.int64)
    big.feed(torch.tensor([[0, 0]]), torch.tensor([[7, 7]]), mask=torch.tensor([[False], ]).expand(1, 2))
    assert big.pushes == 0 and big.cur.tolist() == [[OVERFLOW, 0]]   # padded: neither checked nor changed
    big.feed(torch.tensor([[0, 0]]), torch.tensor([[GATE_ONE, 7]]))
    assert big.pushes == 1                                             # a real element at 2**53 pushes
    part = ReferenceBuffer()
    part.feed(torch.tensor([[9, 9, 9]]), torch.tensor([[1, 1, 1]]), cols=slice(1, None))
    assert part.cur.shape == (1, 2) and part.bits() == 64 * 2 + 8


def test_reference_sharing_rules():
    stacks = [WordStack(8, "cpu") for _ in range(3)]
    attach_lm(stacks, [4, 4, 3])                           # layer 0 and the last their own; the middle shares 0's
    assert stacks[1].reference is stacks[0].reference and stacks[2].reference is not stacks[0].reference
    one = [WordStack(8, "cpu")]
    attach_lm(one, [4])
    assert isinstance(one[0].reference, ReferenceBuffer)
    main, side = ReferenceBuffer(), ReferenceBuffer()
    router = PartRouter([(side, slice(2, None)), (main, None)])
    st = WordStack(8, "cpu", reference=router)
    x = empty_buffer((1, 4), "cpu")
    h = torch.tensor([[1, 2, 3, 4]])
    for _ in range(3):                                     # h1 then h2 of three steps
        h, x = buffered_mul(h, torch.tensor([[512, 512, 512, 512]]), x, st)
    assert side.cur.shape == (1, 2) and main.cur.shape == (1, 4)
    assert side.multiplications == 2 and main.multiplications == 1
    assert reference_bits([st, None, WordStack(8, "cpu")]) == side.bits() + main.bits()
    assert reference_bits([None]) is None


@pytest.mark.parametrize("cell", ["revgru", "revlstm"])
def test_call_order_matches_the_cells(cell, monkeypatch):
    """``call_order`` (which part each multiplication of a step updates) is the order the cell really uses."""
    import sys

    from revbench.core import state as state_mod

    seen, real = [], state_mod.buffered_mul

    def recording(*a, **kw):
        seen.append(sys._getframe(1).f_locals["i"])        # the part index StateUpdater is updating
        return real(*a, **kw)

    monkeypatch.setattr(state_mod, "buffered_mul", recording)
    seg, _ = segment_forward(cell, 3, 2, check_storage=False)
    from revbench.core.buffer_reference import call_order
    c = seg.model.cells[0]
    assert seen == list(call_order(c)) * 4                 # 2 steps x 2 layers


def test_seq2seq_sharing_routes_the_slice_part():
    from revbench.core.buffer_reference import attach_seq2seq, call_order
    torch.manual_seed(0)
    model = RNNLM(50, 16, 16, 2, cell="revlstm", max_forget_bits=3)
    stacks = [WordStack(8, "cpu") for _ in model.cells]
    main = attach_seq2seq(stacks, model.cells, slice_dim=3)
    assert stacks[0].reference is main and isinstance(stacks[1].reference, PartRouter)
    targets = stacks[1].reference.targets
    h1 = model.cells[1].parts.index("h1")
    for i, (buf, cols) in zip(call_order(model.cells[1]), targets):
        assert (buf is not main and cols == slice(3, None)) if i == h1 else (buf is main and cols is None)


def test_adversarial_gates_never_worse_than_the_reference():
    g = torch.Generator().manual_seed(4)
    B, H, T = 4, 12, 80
    cases = {"min": [torch.ones(B, H, dtype=torch.int64)] * T,
             "one": [torch.full((B, H), GATE_ONE)] * T,
             "one unit": [torch.where(torch.arange(H) == 3, 1, GATE_ONE).expand(B, H).contiguous()] * T,
             "mixed": [quantise_gate(torch.rand(B, H, generator=g) ** 2) for _ in range(T)]}
    for name, zs in cases.items():
        ref = ReferenceBuffer()
        x, stack, h = empty_buffer((B, H), "cpu"), WordStack(B * H, "cpu", reference=ref), extreme_states((B, H))
        peak = 0
        for z in zs:
            h, x = buffered_mul(h, z, x, stack)
            peak = max(peak, stack.allocated_bits() + live_bits(x))
        assert peak < ref.bits(), name


@pytest.mark.slow
def test_exact_reversal_ten_thousand_steps_wide_weights():
    """T = 10,000 with weights in [-2, 2] (gates at both ends of their range) for both cells."""
    for cell in ("revgru", "revlstm"):
        seg, carry = segment_forward(cell, None, 10_000, B=2, H=8, init_range=2.0, check_storage=False)
        for t in range(9_999, -1, -1):
            carry = seg.reverse(t, carry)
        assert seg.buffers_empty(carry)


def test_a_live_buffer_of_the_wrong_shape_is_refused():
    h, z = torch.zeros(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match="does not fit a state of shape"):
        buffered_mul(h, z, empty_buffer((3, 8), "cpu"), None)


def test_module_constants_are_consistent():
    assert LOW >= GATE_ONE and HIGH == LOW << buffer.WORD_BITS and HIGH < 2 ** 31   # fits int32 storage
    assert buffer.LIVE_DTYPE == torch.int32 and buffer.WORD_DTYPE == torch.int16
