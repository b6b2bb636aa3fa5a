"""Fast paths give exactly the eager path's results, for every cell and forgetting setting.

- deferred overflow checks (``revbench.core.state.FAST_CHECKS``: one host sync per layer-step instead of one per
  update) and shared leaf floats (``FAST_LEAVES``) against the eager path: bit-identical losses, final states,
  gradients and buffer statistics for bptt, checkpoint and reversible, and the same error (type and message) on
  a non-finite gate or a state overflow;
- ``Segment.advance(loss=False)`` (the reversible forward pass skips the output layer it throws away) against
  ``loss=True``: identical carries and buffers;
- the table of forgotten bits, the in-place ``to_fixed`` / ``quantise_gate`` against their textbook formulas.
"""
import pytest
import torch

from helpers import make_batch, make_model, run_method
from revbench import methods
from revbench.core import state as state_mod
from revbench.core.fixedpoint import (GATE_ONE, RZ, SCALE, FixedPointOverflowError, forgotten_bits, quantise_gate,
                                      to_fixed)
from revbench.models.segment import Segment

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = [("revlstm", 1), ("revlstm", 3), ("revlstm", None), ("revgru", 2), ("revgru", None),
            ("nf-revlstm", 3), ("nf-revgru", 3), ("lstm", None), ("gru", None)]


FLAGS = ("FAST_CHECKS", "FAST_LEAVES")


def _run(fast, method, cell, k, dtype, lengths=None, layers=2):
    before = {f: getattr(state_mod, f) for f in FLAGS}
    for f in FLAGS:
        setattr(state_mod, f, fast)
    try:
        model = make_model(cell, layers=layers, k=k, dtype=dtype)
        x, y = make_batch(9, 4)
        return run_method(methods.get(method), model, x, y, lengths=lengths)
    finally:
        for f, v in before.items():
            setattr(state_mod, f, v)


def _same(a, b):
    (out_a, g_a), (out_b, g_b) = a, b
    assert torch.equal(out_a.loss, out_b.loss)
    for la, lb in zip(out_a.state, out_b.state):
        assert all(torch.equal(u, v) for u, v in zip(la, lb))
    assert g_a.keys() == g_b.keys()
    for n in g_a:
        assert torch.equal(g_a[n], g_b[n]), n
    keys = ("buffer_bits_actual", "buffer_bits_ideal", "forward_steps", "reverse_steps")
    assert {k: out_a.stats.get(k) for k in keys} == {k: out_b.stats.get(k) for k in keys}


@pytest.mark.parametrize("cell,k", SETTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deferred_checks_change_nothing(cell, k, dtype):
    names = ["bptt", "checkpoint"] + (["reversible"] if cell.startswith(("rev", "nf-rev")) else [])
    for name in names:
        _same(_run(True, name, cell, k, dtype), _run(False, name, cell, k, dtype))


@pytest.mark.parametrize("cell,k", [("revlstm", 3), ("revgru", None)])
def test_deferred_checks_change_nothing_with_padding(cell, k):
    lengths = torch.tensor([9, 0, 4, 7])
    for name in ("bptt", "reversible"):
        _same(_run(True, name, cell, k, torch.float64, lengths), _run(False, name, cell, k, torch.float64, lengths))


def _error(fast, model, method="reversible"):
    before = state_mod.FAST_CHECKS
    state_mod.FAST_CHECKS = fast
    try:
        x, y = make_batch(5, 3)
        with pytest.raises(FixedPointOverflowError) as info:
            methods.get(method).step(model, x, y, model.init_state(3))
        return str(info.value)
    finally:
        state_mod.FAST_CHECKS = before


@pytest.mark.parametrize("method", ["reversible", "bptt"])
def test_same_error_for_a_non_finite_gate(method):
    model = make_model("revlstm", k=3, dropout=False)
    with torch.no_grad():
        model.cells[0].b2[: model.cells[0].half] = float("nan")      # forget gate of half 2 only
    fast, eager = _error(True, model, method), _error(False, model, method)
    assert fast == eager and "non-finite forget gate in the update of c2" in fast


def test_same_error_for_a_state_overflow():
    model = make_model("nf-revgru", dropout=False)
    state = [tuple(torch.full_like(p, (1 << 52) - 1) for p in model.init_state(3)[0])]
    msgs = []
    for fast in (True, False):
        state_mod.FAST_CHECKS = fast
        try:
            x, y = make_batch(3, 3)
            with pytest.raises(FixedPointOverflowError) as info:
                methods.get("bptt").step(model, x, y, state)
            msgs.append(str(info.value))
        finally:
            state_mod.FAST_CHECKS = True
    assert msgs[0] == msgs[1] and "fixed-point h" in msgs[0]


@pytest.mark.parametrize("cell,k", [("revlstm", 3), ("revgru", 1), ("nf-revlstm", 3)])
def test_forward_without_loss_is_the_same_forward(cell, k):
    model = make_model(cell, layers=2, k=k)
    x, y = make_batch(8, 4)
    torch.manual_seed(3)
    a = Segment(model, x, y, keep_words=True)
    torch.manual_seed(3)
    b = Segment(model, x, y, keep_words=True)
    ca, cb = a.start(model.init_state(4)), b.start(model.init_state(4))
    for t in range(8):
        ca, la = a.advance(t, ca, grad=False)
        cb, lb = b.advance(t, cb, grad=False, loss=False)
        assert la is not None and lb is None
        for sa, sb in zip(ca.layers, cb.layers):
            assert all(torch.equal(u, v) for u, v in zip(sa.ints, sb.ints))
            assert all(torch.equal(u, v) for u, v in zip(sa.floats, sb.floats))
            assert (sa.bx is None) == (sb.bx is None) and (sa.bx is None or torch.equal(sa.bx, sb.bx))
    assert a.buffer_bits_peak == b.buffer_bits_peak
    assert a.ideal_bits.keys() == b.ideal_bits.keys()
    assert all(torch.equal(a.ideal_bits[t], b.ideal_bits[t]) for t in a.ideal_bits)
    for t in range(7, -1, -1):                                   # both reverse to the same states
        ca, cb = a.reverse(t, ca), b.reverse(t, cb)
        assert all(torch.equal(u, v) for sa, sb in zip(ca.layers, cb.layers) for u, v in zip(sa.ints, sb.ints))
    assert a.buffers_empty(ca) and b.buffers_empty(cb)


def test_reversible_forward_skips_the_output_layer(monkeypatch):
    """The reversible method's forward pass runs no output layer: T losses (one per replayed step), not 2T."""
    model = make_model("revgru", k=3)
    x, y = make_batch(6, 2)
    calls = []
    import revbench.models.segment as seg_mod
    real = seg_mod.output_loss

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(seg_mod, "output_loss", counting)
    methods.get("reversible").step(model, x, y, model.init_state(2))
    assert len(calls) == 6


def test_forgotten_bits_table_is_the_formula():
    zq = torch.arange(1, GATE_ONE + 1)
    for perm in (zq, zq.flip(0), zq[torch.randperm(GATE_ONE, generator=torch.Generator().manual_seed(0))]):
        for shape in ((GATE_ONE,), (32, 32), (4, 256)):
            z = perm.reshape(shape)
            assert torch.equal(forgotten_bits(z), RZ - torch.log2(z.double()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_conversions_equal_the_formulas(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1000, generator=g, dtype=dtype) * 3,
                   torch.tensor([0.0, -0.0, 1e30, -1e30, float("inf"), -float("inf"), float("nan"), 2 ** -24],
                                dtype=dtype)])
    c = float(1 << 60)
    want = torch.round(torch.nan_to_num(x * SCALE, nan=c, posinf=c, neginf=-c).clamp(-c, c)).to(torch.int64)
    assert torch.equal(to_fixed(x), want)
    z = torch.cat([torch.rand(1000, generator=g, dtype=dtype), torch.tensor([0.0, 1e-9, 0.5, 1.0], dtype=dtype)])
    assert torch.equal(quantise_gate(z), torch.round(z * GATE_ONE).to(torch.int64).clamp_(1, GATE_ONE))


@pytest.mark.parametrize("cell,method", [("revgru", "reversible"), ("revlstm", "reversible"), ("revgru", "bptt"),
                                         ("revlstm", "checkpoint")])
def test_encoder_decoder_fast_paths_change_nothing(cell, method):
    from revbench.models.seq2seq import Seq2Seq
    from revbench.models.seq2seq.inputs import make_batch as s2s_batch

    pairs = [([5, 6, 7, 8, 9], [4, 5]), ([5, 7], [6, 7, 8, 9]), ([9, 8, 7], [5, 5, 6])]
    results = []
    for fast in (True, False):
        for f in FLAGS:
            setattr(state_mod, f, fast)
        try:
            torch.manual_seed(1)
            model = Seq2Seq(12, 12, 8, 8, 2, cell=cell, max_forget_bits=2, context="emb+h:3", dropout=0.3).double()
            torch.manual_seed(3)
            out = methods.get(method).step(model, s2s_batch(pairs))
            results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        finally:
            for f in FLAGS:
                setattr(state_mod, f, True)
    (a, ga), (b, gb) = results
    assert torch.equal(a.loss, b.loss) and ga.keys() == gb.keys()
    assert all(torch.equal(ga[n], gb[n]) for n in ga)
    for key in ("enc_buffer_bits_actual", "dec_buffer_bits_actual", "enc_buffer_bits_ideal", "dec_buffer_bits_ideal"):
        assert a.stats.get(key) == b.stats.get(key)
