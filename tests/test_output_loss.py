"""The step's output layer and loss (``revbench.core.functional.output_loss``) and reversible backprop's split of a
step into its loss's gradient first, then the cells (``Segment.loss_and_grads``).

- ``output_loss`` against ``F.cross_entropy(F.linear(...), reduction="sum", ignore_index=IGNORE) / divisor`` in
  float64: loss and the gradients of the input, weight and bias, with and without ignored rows and bias, under a
  scaled incoming gradient; the same loss bit for bit with and without autograd; a second backward is refused;
- the split path against reversible backprop without it: identical losses and final states, gradients equal to
  rounding (float64), for every reversible cell, forgetting setting, 2 layers, dropout and padding.
"""
import pytest
import torch
import torch.nn.functional as F

from helpers import make_batch, make_model, max_rel_err, run_method
from revbench import methods
from revbench.core.functional import IGNORE, output_loss
from revbench.models.segment import Segment

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(x, w, b, t, divisor, scale):
    x = x.detach().requires_grad_()
    loss = F.cross_entropy(F.linear(x, w, b), t, reduction="sum", ignore_index=IGNORE) / divisor
    grads = torch.autograd.grad(loss * scale, [x, w] + ([b] if b is not None else []))
    return loss.detach(), grads


@pytest.mark.parametrize("ignored", [(), (1,), (0, 3, 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_output_loss_is_cross_entropy_of_the_linear_layer(ignored, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    w = torch.randn(11, 5, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(11, generator=g, dtype=torch.float64).requires_grad_() if bias else None
    t = torch.randint(0, 11, (7,), generator=g)
    t[list(ignored)] = IGNORE
    ref_loss, ref = _reference(x, w, b, t, 4.0, 1.7)

    xi = x.clone().requires_grad_()
    loss = output_loss(xi, w, b, t, 4.0)
    (loss * 1.7).backward()
    assert torch.allclose(loss, ref_loss, rtol=1e-14, atol=0)
    got = [xi.grad, w.grad] + ([b.grad] if bias else [])
    for a, r in zip(got, ref):
        assert a.shape == r.shape and torch.allclose(a, r, rtol=1e-12, atol=1e-15)
    for i in ignored:                                  # an ignored row has no gradient at all
        assert torch.count_nonzero(xi.grad[i]) == 0
    with torch.no_grad():
        assert torch.equal(output_loss(x, w, b, t, 4.0), loss.detach())


def test_output_loss_adds_into_an_existing_gradient():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    w = torch.randn(6, 4, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.tensor([0, 5, 2])
    before = torch.randn(6, 4, generator=g, dtype=torch.float64)
    w.grad = before.clone()
    output_loss(x, w, None, t, 1.0).backward()
    _, (_, gw) = _reference(x, w, None, t, 1.0, 1.0)
    assert torch.allclose(w.grad, before + gw, rtol=1e-12, atol=1e-15)
    assert w.grad.stride() == before.stride()          # an existing gradient keeps its layout


def test_output_loss_refuses_a_second_backward():
    w = torch.randn(6, 4, requires_grad=True)
    loss = output_loss(torch.randn(2, 4), w, None, torch.tensor([1, 2]), 2.0)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_output_loss_on_an_all_ignored_batch_is_zero():
    w = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    loss = output_loss(x, w, None, torch.tensor([IGNORE, IGNORE]), 1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.count_nonzero(x.grad) == 0 and torch.count_nonzero(w.grad) == 0


@pytest.mark.parametrize("cell,k", [("revlstm", 3), ("revlstm", None), ("revgru", 2), ("revgru", None),
                                    ("nf-revlstm", 3), ("nf-revgru", 3)])
@pytest.mark.parametrize("padded", [False, True])
def test_split_step_gives_the_unsplit_results(cell, k, padded, monkeypatch):
    x, y = make_batch(9, 4)
    lengths = torch.tensor([9, 4, 0, 7]) if padded else None
    model = make_model(cell, layers=2, k=k)
    split = run_method(methods.get("reversible"), model, x, y, lengths=lengths)
    monkeypatch.setattr(Segment, "loss_and_grads", None)           # the method falls back to the whole step
    whole = run_method(methods.get("reversible"), model, x, y, lengths=lengths)
    (out_s, g_s), (out_w, g_w) = split, whole
    assert torch.equal(out_s.loss, out_w.loss)
    for ls, lw in zip(out_s.state, out_w.state):
        assert all(torch.equal(u, v) for u, v in zip(ls, lw))
    assert max_rel_err(g_w, g_s) < 1e-12
    bptt = run_method(methods.get("bptt"), model, x, y, lengths=lengths)
    assert max_rel_err(bptt[1], g_s) < 1e-10


def test_loss_and_grads_reaches_only_the_top_layer():
    model = make_model("revlstm", layers=2, k=3)
    x, y = make_batch(3, 2)
    seg = Segment(model, x, y, keep_words=True)
    carry = seg.start(model.init_state(2))
    carry, ref_loss = seg.advance(0, carry)
    loss, grads = seg.loss_and_grads(0, carry)
    assert torch.equal(loss, ref_loss.detach())
    below = len(carry.layers[0].floats)
    assert grads[:below] == [None] * below
    assert len(grads) == len(carry.floats())
    top = model.cells[1].parts                                  # RevLSTM's output is (h1, h2): c1, c2 get none
    assert [g is not None for g in grads[below:]] == [p.startswith("h") for p in top]
