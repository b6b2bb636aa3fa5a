"""Algorithm 1 (exact multiply by a quantised gate with a buffer) and the streaming buffer: exact inversion."""
import torch
from hypothesis import given, settings, strategies as st

from revbench.core.buffer import HIGH, LOW, WordStack, buffered_div, buffered_mul, empty_buffer, is_empty, live_bits
from revbench.core.fixedpoint import (GATE_ONE, STATE_LIMIT, FixedPointOverflowError, check_state, div_with_buffer,
                                 from_fixed, limit_gate, mul_with_buffer, quantise_gate, to_fixed)

states = st.one_of(st.integers(-STATE_LIMIT + 1, STATE_LIMIT - 1),
                   st.sampled_from([0, -1, 1, STATE_LIMIT - 1, -(STATE_LIMIT - 1), -GATE_ONE, GATE_ONE - 1]))
gates = st.one_of(st.integers(1, GATE_ONE), st.sampled_from([1, 2, GATE_ONE - 1, GATE_ONE]))
# the live buffer lies in [2**10, 2**26) between operations; Algorithm 1 itself needs b * 2**RZ + 2**RZ < 2**63
buffers = st.one_of(st.integers(0, (1 << 52) - 1), st.sampled_from([0, LOW, (1 << 52) - 1]))


@settings(max_examples=2000, deadline=None)
@given(h=states, z=gates, b=buffers)
def test_mul_div_inverse_scalar(h, z, b):
    H, Z, Bf = (torch.tensor([v], dtype=torch.int64) for v in (h, z, b))
    h2, b2 = mul_with_buffer(H, Z, Bf)
    h3, b3 = div_with_buffer(h2, Z, b2)
    assert h3.item() == h and b3.item() == b
    # floor semantics: the result is z/2^RZ * h up to the bits moved from the buffer (< z)
    assert abs(h2.item() - (h >> 10) * z) < z


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.tuples(states, gates), min_size=1, max_size=64), steps=st.integers(1, 40))
def test_streaming_buffer_roundtrip(data, steps):
    h0 = torch.tensor([d[0] for d in data], dtype=torch.int64)
    z = torch.tensor([d[1] for d in data], dtype=torch.int64)
    x, stack, h = empty_buffer(h0.shape, "cpu"), WordStack(8, "cpu"), h0
    for _ in range(steps):
        h, x = buffered_mul(h, z, x, stack)
        assert x.dtype == torch.int32 and bool(((x >= LOW) & (x < HIGH)).all())  # the live state stays in its interval
    for _ in range(steps):
        h, x = buffered_div(h, z, x, stack)
    assert torch.equal(h, h0) and is_empty(x, stack)


def test_buffer_tracks_information_forgotten():
    """Allocated bits follow the information actually forgotten (close to the ideal sum of -log2 z)."""
    g = torch.Generator().manual_seed(0)
    B, H, T = 16, 64, 500
    h0 = torch.randint(-(1 << 40), 1 << 40, (B, H), generator=g)
    x, stack, h, zs, ideal = empty_buffer((B, H), "cpu"), WordStack(B * H // 8, "cpu"), h0, [], 0.0
    for _ in range(T):
        z = quantise_gate(limit_gate(torch.rand(B, H, generator=g), 3))
        ideal += float(-torch.log2(z.double() / GATE_ONE).sum())
        zs.append(z)
        h, x = buffered_mul(h, z, x, stack)
    allocated = stack.allocated_bits() + live_bits(x)
    assert ideal < allocated < 1.05 * ideal
    for z in reversed(zs):
        h, x = buffered_div(h, z, x, stack)
    assert torch.equal(h, h0) and is_empty(x, stack)


def test_only_overflowing_elements_emit_words():
    """One unit that forgets a lot must not make every unit pay (the reference's whole-chunk pushes)."""
    B, H, T = 4, 32, 200
    z = torch.full((B, H), GATE_ONE, dtype=torch.int64)
    z[0, 0] = 1                                   # forgets 10 bits per step; everything else forgets nothing
    x, stack, h = empty_buffer((B, H), "cpu"), WordStack(B * H, "cpu"), torch.arange(B * H).reshape(B, H) << 30
    for _ in range(T):
        h, x = buffered_mul(h, z, x, stack)
    assert 10 * T / 16 - 2 <= len(stack) <= 10 * T / 16 + 1   # about 10 bits/step of one unit, in 16-bit words


def test_masked_positions_are_untouched():
    h = torch.tensor([123456789, -987654321], dtype=torch.int64)
    x = empty_buffer((2,), "cpu")
    z = torch.tensor([GATE_ONE, GATE_ONE])
    h2, x2 = buffered_mul(h, z, x, WordStack(4, "cpu"))
    assert torch.equal(h, h2) and torch.equal(x, x2)


def test_gate_limits_and_quantisation():
    s = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    for k in (1, 2, 3, 5, 10):
        z = limit_gate(s, k)
        assert z.min().item() == 2.0 ** -k and z.max().item() == 1.0
    q = quantise_gate(torch.tensor([0.0, 1e-9, 0.5, 1.0]))
    assert q.tolist() == [1, 1, 512, 1024]


def test_fixed_conversion_roundtrip_and_overflow():
    v = torch.tensor([0.0, -1.5, 3.25, 1e-7], dtype=torch.float64)
    assert torch.equal(from_fixed(to_fixed(v), torch.float64), torch.round(v * 2 ** 23) / 2 ** 23)
    check_state(to_fixed(torch.tensor([1e8])))          # fine: far below the limit
    for bad in (1e9, float("nan"), float("inf"), -float("inf")):
        try:
            check_state(to_fixed(torch.tensor([bad])))
        except FixedPointOverflowError as e:
            assert "overflow" in str(e)
        else:
            raise AssertionError(f"no overflow error for {bad}")
