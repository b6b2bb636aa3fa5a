"""In float64, reversible backprop gives the gradients of plain BPTT through the same computation."""
import pytest
import torch

from revbench import methods
from tests.helpers import make_batch, make_model, max_rel_err, random_state, run_method


@pytest.mark.parametrize("cell", ["revgru", "revlstm", "nf-revgru", "nf-revlstm"])
@pytest.mark.parametrize("k", [2, None])
@pytest.mark.parametrize("layers", [1, 3])
def test_reversible_matches_bptt(cell, k, layers):
    model = make_model(cell, layers=layers, k=k, dropout=True)
    x, y = make_batch(25, 3)
    state = random_state(model, 3)
    a, ga = run_method(methods.get("bptt"), model, x, y, state)
    b, gb = run_method(methods.get("reversible"), model, x, y, state)
    assert len(ga) == len(list(model.parameters()))            # every parameter received a gradient
    assert max_rel_err(ga, gb) < 1e-9
    for la, lb in zip(a.state, b.state):
        for u, v in zip(la, lb):
            assert torch.equal(u, v)
    assert torch.allclose(a.loss, b.loss, rtol=1e-12)


def test_reversible_matches_bptt_with_padding_and_hidden_sizes():
    from revbench.models.lm import RNNLM
    torch.manual_seed(0)
    model = RNNLM(30, 8, [12, 8], 2, cell="revlstm", max_forget_bits=3, dropout_in=0.2, weight_drop=0.2).double()
    x, y = make_batch(15, 4, vocab=30)
    lengths = torch.tensor([15, 3, 9, 1])
    a, ga = run_method(methods.get("bptt"), model, x, y, lengths=lengths)
    b, gb = run_method(methods.get("reversible"), model, x, y, lengths=lengths)
    assert model.tied and max_rel_err(ga, gb) < 1e-9


def test_bptt_matches_autograd_of_the_whole_loss():
    """The in-place gradient accumulation of the step loop equals autograd's on the same loss (ordinary cells)."""
    model = make_model("lstm", layers=2, dropout=False)
    x, y = make_batch(10, 3)
    out, g = run_method(methods.get("bptt"), model, x, y)
    for p in model.parameters():
        p.grad = None
    h = [(torch.zeros(3, 12, dtype=torch.float64),) * 2 for _ in range(2)]
    loss = 0
    for t in range(10):
        inp = model.encoder.weight[x[t]]
        for l, c in enumerate(model.cells):
            h[l] = c.step(inp, h[l], dict(c.named_parameters()))
            inp = h[l][0]
        loss = loss + torch.nn.functional.cross_entropy(model.decoder(inp), y[t], reduction="sum")
    (loss / 30).backward()
    ref = {n: p.grad for n, p in model.named_parameters()}
    assert max_rel_err(ref, g) < 1e-12
    assert torch.allclose(out.loss, loss.detach() / 30)


def test_training_step_reduces_loss():
    model = make_model("revgru", layers=1, dtype=torch.float32, dropout=False)
    x, y = make_batch(20, 4)
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    method, state, losses = methods.get("reversible"), model.init_state(4), []
    for _ in range(30):
        opt.zero_grad()
        out = method.step(model, x, y, state)
        losses.append(out.loss.item())
        opt.step()
    assert losses[-1] < 0.8 * losses[0]


def test_stats_report_the_paper_figures():
    model = make_model("revlstm", layers=1, k=3, dtype=torch.float32, dropout=False)
    x, y = make_batch(30, 4)
    s = methods.get("reversible").step(model, x, y, model.init_state(4)).stats
    assert s["state_bits_baseline"] == 32 * 30 * 4 * 12 * 2        # h and c, 32 bits per float
    assert 0 < s["buffer_bits_ideal"] <= 3 * 30 * 4 * 12 * 2      # at most k bits per unit per gate
    assert s["buffer_bits_actual"] >= s["buffer_bits_ideal"]
    assert s["saving_actual"] == s["state_bits_baseline"] / s["buffer_bits_actual"]
    assert s["buffer_efficiency"] == s["buffer_bits_actual"] / s["buffer_bits_ideal"]
