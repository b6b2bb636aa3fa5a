"""Bad input gets a clear error that names the problem."""
import pytest
import torch

from revbench import methods
from revbench.models.lm import RNNLM
from tests.helpers import make_batch, make_model


def test_odd_hidden_size():
    with pytest.raises(ValueError, match="hidden_size must be even"):
        RNNLM(10, 8, 7, cell="revgru")
    RNNLM(10, 8, 7, cell="gru")                      # ordinary cells have no halves


@pytest.mark.parametrize("k", [0, 11, -1, 2.5, "3", True])
def test_max_forget_bits_out_of_range(k):
    with pytest.raises(ValueError, match="max_forget_bits"):
        RNNLM(10, 8, 8, cell="revlstm", max_forget_bits=k)


def test_unknown_cell_and_method():
    with pytest.raises(ValueError, match="unknown cell"):
        RNNLM(10, 8, 8, cell="transformer")
    with pytest.raises(KeyError, match="unknown method 'magic'"):
        methods.get("magic")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_reversible_on_ordinary_cell(cell):
    model = make_model(cell, dropout=False)
    x, y = make_batch(5, 2)
    with pytest.raises(ValueError, match="cannot be reversed"):
        methods.get("reversible").step(model, x, y, model.init_state(2))


def test_wrong_dtype_and_shape():
    model = make_model("revgru", dropout=False)
    x, y = make_batch(5, 2)
    state = model.init_state(2)
    m = methods.get("reversible")
    with pytest.raises(TypeError, match="LongTensor"):
        m.step(model, x.float(), y, state)
    with pytest.raises(ValueError, match=r"shape \(T, B\)"):
        m.step(model, x[0], y[0], state)
    with pytest.raises(ValueError, match="same shape"):
        m.step(model, x, y[:4], state)
    with pytest.raises(ValueError, match="token ids"):
        m.step(model, x + 100, y, state)


def test_state_from_other_batch_size():
    model = make_model("revlstm", layers=2, dropout=False)
    x, y = make_batch(5, 3)
    with pytest.raises(ValueError, match="batch size 2 but the inputs have batch size 3"):
        methods.get("bptt").step(model, x, y, model.init_state(2))


def test_state_of_wrong_kind():
    model = make_model("revlstm", dropout=False)
    x, y = make_batch(5, 2)
    floats = [tuple(t.double() for t in model.init_state(2)[0])]
    with pytest.raises(TypeError, match="fixed-point"):
        methods.get("bptt").step(model, x, y, floats)
    with pytest.raises(ValueError, match="one tuple per layer"):
        methods.get("bptt").step(model, x, y, [])


def test_bad_lengths():
    model = make_model("revgru", dropout=False)
    x, y = make_batch(5, 2)
    with pytest.raises(ValueError, match="lengths must be in"):
        methods.get("bptt").step(model, x, y, model.init_state(2), lengths=torch.tensor([6, 1]))
