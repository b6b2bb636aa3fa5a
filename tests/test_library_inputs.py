"""Hostile inputs to the library (models and methods): each is refused with a clear error naming the problem,
never a silent wrong result. The rows of README's "Bad inputs the tests try" table for the library."""
import math

import pytest
import torch

from revbench import methods
from revbench.core.fixedpoint import FixedPointOverflowError
from revbench.models import RNNLM, Seq2Seq
from revbench.models.seq2seq import make_batch

pytestmark = pytest.mark.usefixtures("one_thread")

V = 20


def lm(cell="revlstm", k=3, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    return RNNLM(V, 8, 8, 1, cell=cell, max_forget_bits=k if cell in ("revgru", "revlstm") else None, **kw).to(dtype)


def segment(T=5, B=3):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, V, (T, B), generator=g), torch.randint(0, V, (T, B), generator=g)


def step(method, model, lengths=None, state=None, **opts):
    x, y = segment()
    return methods.get(method, **opts).step(model, x, y, model.init_state(3) if state is None else state,
                                            lengths=lengths)


# --------------------------------------------------------------------------- non-finite gates (silent before)
@pytest.mark.parametrize("method", ["reversible", "bptt", "checkpoint", "gruslys"])
@pytest.mark.parametrize("k", [3, None])
def test_nan_in_forget_gate_rows_is_an_error(method, k):
    model = lm("revlstm", k=k)
    n = model.cells[0].half
    with torch.no_grad():
        model.cells[0].b1[:n] = float("nan")             # the forget gate f of half 1 only
    with pytest.raises(FixedPointOverflowError, match="non-finite forget gate"):
        step(method, model)


def test_nan_gate_of_revgru_is_an_error():
    model = lm("revgru", k=None)
    with torch.no_grad():
        model.cells[0].b2[:model.cells[0].half] = float("nan")   # z of half 2
    with pytest.raises(FixedPointOverflowError, match="non-finite forget gate"):
        step("reversible", model)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_ordinary_cells_report_whether_the_loss_is_finite(cell):
    model = lm(cell)
    assert step("bptt", model).stats["finite"] is True
    with torch.no_grad():
        model.decoder.bias[0] = float("nan")
    out = step("bptt", model)
    assert math.isnan(float(out.loss)) and out.stats["finite"] is False


def test_encoder_decoder_reports_whether_the_loss_is_finite():
    torch.manual_seed(0)
    model = Seq2Seq(V, V, 8, 8, cell="gru", max_forget_bits=None, context="all")
    batch = make_batch([([5, 6, 7], [8, 9]), ([10, 11], [12, 13, 14])])
    assert methods.get("bptt").step(model, batch).stats["finite"] is True
    with torch.no_grad():
        model.generator.bias[0] = float("nan")
    assert methods.get("bptt").step(model, batch).stats["finite"] is False


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cell", ["revgru", "revlstm", "nf-revgru"])
def test_reversible_cells_refuse_low_precision_dtypes(cell, dtype):
    model = lm(cell, dtype=dtype)
    for method in ("reversible", "bptt"):
        with pytest.raises(TypeError, match=f"{str(dtype).replace('torch.', '')}.*float32 or float64"):
            step(method, model)


def test_reversible_encoder_decoder_refuses_bfloat16():
    model = Seq2Seq(V, V, 8, 8, cell="revgru", max_forget_bits=3, context="emb+h:2").to(torch.bfloat16)
    batch = make_batch([([5, 6, 7], [8, 9])])
    with pytest.raises(TypeError, match="bfloat16.*float32 or float64"):
        methods.get("reversible").step(model, batch)


# --------------------------------------------------------------------------- sizes and options
@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_size=8.0), "hidden_size must be a positive int or a list"),
    (dict(hidden_size=True), "hidden_size must be a positive int"),
    (dict(hidden_size=[8, 8.0], num_layers=2), "hidden_size must be a positive int"),
    (dict(vocab_size=True), "vocab_size must be a positive int"),
    (dict(emb_size=False), "emb_size must be a positive int"),
    (dict(num_layers=True), "num_layers must be a positive int"),
])
def test_model_sizes_must_be_ints_not_floats_or_bools(kwargs, match):
    args = dict(vocab_size=V, emb_size=8, hidden_size=8, num_layers=1, cell="revgru")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        RNNLM(**args)


@pytest.mark.parametrize("bad", [True, 0, -1, 2.0])
def test_init_state_batch_size_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        lm().init_state(bad)


@pytest.mark.parametrize("verify", ["no", 1, None])
def test_reversible_verify_must_be_a_bool(verify):
    with pytest.raises(ValueError, match="verify must be True or False"):
        methods.get("reversible", verify=verify)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_max_forget_bits_on_an_ordinary_cell_is_refused(cell):
    with pytest.raises(ValueError, match="max_forget_bits.*no information buffer"):
        RNNLM(V, 8, 8, 1, cell=cell, max_forget_bits=3)
    RNNLM(V, 8, 8, 1, cell=cell, max_forget_bits=None)        # no limit: fine


# --------------------------------------------------------------------------- lengths
@pytest.mark.parametrize("lengths, match", [
    (torch.tensor([2.5, 3.0, 1.0]), "lengths must be integers"),
    (torch.tensor([float("nan"), 3.0, 1.0]), "lengths must be integers"),
    (torch.tensor([True, False, True]), "lengths must be integers"),
    ([2.5, 3, 1], "lengths must be integers"),
])
def test_lengths_must_be_integers(lengths, match):
    with pytest.raises(TypeError, match=match):
        step("bptt", lm(), lengths=lengths)


def test_encoder_decoder_lengths_must_be_integers():
    torch.manual_seed(0)
    model = Seq2Seq(V, V, 8, 8, cell="revgru", max_forget_bits=3, context="emb+h:2")
    b = make_batch([([5, 6, 7], [8, 9]), ([10, 11], [12, 13, 14])])
    with pytest.raises(TypeError, match="src_lengths must be integers"):
        methods.get("bptt").step(model, b._replace(src_lengths=b.src_lengths.float() + 0.5))


# --------------------------------------------------------------------------- states
def test_a_none_state_part_is_named():
    model = lm("revgru")
    state = model.init_state(3)
    state[0] = (state[0][0], None)
    with pytest.raises(TypeError, match="state h2 of layer 0 is None"):
        step("bptt", model, state=state)


def test_a_state_on_another_device_is_named():
    model = lm("revgru")
    state = [tuple(p.to("meta") for p in layer) for layer in model.init_state(3)]
    with pytest.raises(ValueError, match="state h1 of layer 0 is on device meta.*model is on cpu"):
        step("bptt", model, state=state)
