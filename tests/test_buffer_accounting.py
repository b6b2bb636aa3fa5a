"""buffer_bits_ideal counts the information actually forgotten: -log2 of the gates applied (quantised to 10 bits
and clamped to [2^-10, 1]), so the allocated bits can never be fewer than the ideal, even when float gates
fall below 2^-10 or to exactly 0."""
import math

import pytest
import torch

from revbench import methods
from revbench.models import RNNLM

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("cell", ["revgru", "revlstm"])
def test_ideal_bits_with_wide_gates_are_finite_and_below_the_allocated_bits(cell):
    torch.manual_seed(0)
    model = RNNLM(50, 16, 16, 1, cell=cell, max_forget_bits=None, init_range=2.0)   # weights U[-2, 2]
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randint(0, 50, (300, 8), generator=g) for _ in range(2))
    out = methods.get("reversible").step(model, x, y, model.init_state(8))
    ideal, actual = out.stats["buffer_bits_ideal"], out.stats["buffer_bits_actual"]
    assert math.isfinite(ideal) and ideal > 0
    assert actual >= ideal                        # a buffer cannot hold the information in fewer bits
    assert out.stats["buffer_efficiency"] == actual / ideal < 1.5


def test_ideal_bits_are_the_applied_gates_bits(monkeypatch):
    """Recount: record every gate the forward pass applies (the quantiser's output) and sum -log2(z_q / 2^10)."""
    from revbench.core import state as state_mod

    applied = []
    real = state_mod.quantise_gate

    def recording(z):
        zq = real(z)
        applied.append(zq.clone())
        return zq

    monkeypatch.setattr(state_mod, "quantise_gate", recording)
    torch.manual_seed(0)
    model = RNNLM(50, 16, 16, 1, cell="revgru", max_forget_bits=None, init_range=2.0)
    x = torch.randint(0, 50, (6, 4))
    out = methods.get("bptt").step(model, x, x, model.init_state(4))
    assert len(applied) == 6 * 2                   # two gated updates (h1, h2) per step
    expected = sum(float((10 - torch.log2(zq.double())).sum()) for zq in applied)
    assert any(bool((zq == 1).any()) for zq in applied)          # some float gates fell to the 2^-10 floor
    assert out.stats["buffer_bits_ideal"] == pytest.approx(expected, rel=1e-12)
