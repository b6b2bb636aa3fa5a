"""In float64, every baseline method gives "bptt"'s parameter gradients (relative error < 1e-9), its loss and its
final state, on every cell type, with dropout on (same masks: torch is seeded the same before each method's step);
the forward step counts equal the cost models (Gruslys' DP, the mixed recurrence, Chen's formulas)."""
from __future__ import annotations

import pytest
import torch

from baselines.checkpointing import chen_forward_steps, chen_slots, default_segments, recursive_forward_steps
from baselines.gruslys import mixed_cost, optimal_cost, resolve_slots
from revbench import methods
from revbench.models.segment import Segment
from tests.helpers import make_batch, make_model, max_rel_err, random_state, run_method

CELLS = ["revgru", "revlstm", "nf-revgru", "nf-revlstm", "gru", "lstm"]
FUSED = ("gru", "lstm")
TINY = dict(vocab=10, emb=4, hidden=4)        # keeps T = 301 cheap; reversible cells need an even hidden size


pytestmark = pytest.mark.usefixtures("one_thread")


def small_configs(T):
    return [("checkpoint", {}), ("checkpoint", {"segments": 1}), ("checkpoint", {"segments": T}),
            ("checkpoint", {"recursive": True}),
            ("gruslys", {"slots": 1}), ("gruslys", {"slots": 2}), ("gruslys", {"budget": 0.05}),
            ("gruslys", {"slots": 1, "policy": "mixed"}), ("gruslys", {"slots": 3, "policy": "mixed"})]


MID_CONFIGS = [("checkpoint", {}), ("checkpoint", {"segments": 7}), ("checkpoint", {"recursive": True}),
               ("gruslys", {"budget": 0.05}), ("gruslys", {"slots": 7}), ("gruslys", {"budget": 0.05, "policy": "mixed"})]
LONG_CONFIGS = [("checkpoint", {}), ("gruslys", {"budget": 0.05}), ("gruslys", {"budget": 0.05, "policy": "mixed"})]


def expected_counts(name, opts, T):
    """(forward steps, bound on stored states) from the cost models."""
    if name == "checkpoint":
        if opts.get("recursive"):
            return recursive_forward_steps(T), max(1, T.bit_length() - 1)
        k = opts.get("segments") or default_segments(T)
        return chen_forward_steps(T, k), chen_slots(T, k)
    m = resolve_slots(T, slots=opts.get("slots"), budget=opts.get("budget"))
    cost = mixed_cost(T, m) if opts.get("policy") == "mixed" else optimal_cost(T, m)
    return cost, m


def check_against_bptt(cell, layers, T, configs, B=2, fused=True, **sizes):
    model = make_model(cell, layers=layers, dropout=True, **sizes)
    x, y = make_batch(T, B, vocab=model.vocab_size)
    state = random_state(model, B)
    ref, g_ref = run_method(methods.get("bptt"), model, x, y, state)
    assert len(g_ref) == len(list(model.parameters()))       # every parameter received a gradient
    for name, opts in configs:
        out, g = run_method(methods.get(name, **opts), model, x, y, state)
        what = f"{name}{opts} on {cell} L={layers} T={T}"
        assert max_rel_err(g_ref, g) < 1e-9, what
        assert torch.equal(out.loss, ref.loss), what
        for la, lb in zip(ref.state, out.state):
            for u, v in zip(la, lb):
                assert torch.equal(u, v), what
        steps, bound = expected_counts(name, opts, T)
        assert out.stats["forward_steps"] == steps, what
        assert out.stats["stored_states_peak"] <= bound and out.stats["slots_peak"] <= bound, what
        if name == "checkpoint":
            assert out.stats["stored_states_peak"] == bound, what
    if fused and cell in FUSED:
        out, g = run_method(methods.get("bptt-fused"), model, x, y, state)
        assert max_rel_err(g_ref, g) < 1e-9
        assert torch.allclose(out.loss, ref.loss, rtol=1e-12, atol=0)
        for la, lb in zip(ref.state, out.state):
            for u, v in zip(la, lb):
                assert torch.allclose(u, v, rtol=1e-12, atol=1e-14)
        assert out.stats["forward_steps"] == T


@pytest.mark.parametrize("T", [1, 2, 7])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_short_segments(cell, layers, T):
    check_against_bptt(cell, layers, T, small_configs(T), **TINY)


@pytest.mark.parametrize("cell", CELLS)
def test_segment_of_70(cell):
    check_against_bptt(cell, 2, 70, MID_CONFIGS, **TINY)


@pytest.mark.parametrize("cell", [c if c in ("lstm", "gru", "revgru") else pytest.param(c, marks=pytest.mark.slow)
                                  for c in CELLS])
def test_segment_of_301(cell):
    check_against_bptt(cell, 1, 301, LONG_CONFIGS + ([("checkpoint", {"recursive": True})] if cell != "lstm" else []),
                       **TINY)


def test_ordinary_sizes_and_fused_multilayer_call():
    # no dropout and equal sizes: bptt-fused runs all layers in one nn.LSTM / nn.GRU call
    for cell in FUSED:
        model = make_model(cell, layers=3, dropout=False)
        x, y = make_batch(12, 3)
        ref, g_ref = run_method(methods.get("bptt"), model, x, y)
        for name, opts in [("bptt-fused", {}), ("gruslys", {"slots": 2}), ("checkpoint", {})]:
            out, g = run_method(methods.get(name, **opts), model, x, y)
            assert max_rel_err(g_ref, g) < 1e-9, (cell, name)


@pytest.mark.parametrize("lengths", [[15, 3, 0, 1], [15, 3, 9, 1]])
@pytest.mark.parametrize("cell", ["revlstm", "lstm", "gru"])
def test_padding(cell, lengths):
    from revbench.models.lm import RNNLM
    torch.manual_seed(0)
    hidden = [12, 8] if cell == "revlstm" else [10, 8]
    model = RNNLM(30, 8, hidden, 2, cell=cell, max_forget_bits=3 if cell == "revlstm" else None, dropout_in=0.2,
                  dropout_h=0.2, weight_drop=0.2).double()
    x, y = make_batch(15, 4, vocab=30)
    lengths = torch.tensor(lengths)
    ref, g_ref = run_method(methods.get("bptt"), model, x, y, lengths=lengths)
    configs = [("checkpoint", {}), ("checkpoint", {"recursive": True}), ("gruslys", {"slots": 3}),
               ("gruslys", {"slots": 3, "policy": "mixed"})] + ([("bptt-fused", {})] if cell in FUSED else [])
    for name, opts in configs:
        out, g = run_method(methods.get(name, **opts), model, x, y, lengths=lengths)
        assert max_rel_err(g_ref, g) < 1e-9, name
        for la, lb in zip(ref.state, out.state):
            for u, v in zip(la, lb):
                assert torch.allclose(u, v, rtol=1e-12, atol=0), name


def test_consecutive_segments_of_different_lengths():
    model = make_model("revgru", layers=1, dropout=True, **TINY)
    method = methods.get("gruslys", budget=0.1, policy="mixed")
    bptt = methods.get("bptt")
    s_a = s_b = model.init_state(2)
    for T in (9, 30, 9):
        x, y = make_batch(T, 2, vocab=10, seed=T)
        a, ga = run_method(bptt, model, x, y, s_a)
        b, gb = run_method(method, model, x, y, s_b)
        assert max_rel_err(ga, gb) < 1e-9
        assert b.stats["forward_steps"] == mixed_cost(T, resolve_slots(T, budget=0.1))
        s_a, s_b = a.state, b.state
        assert all(torch.equal(u, v) for la, lb in zip(s_a, s_b) for u, v in zip(la, lb))


def test_byte_budget_uses_the_size_of_one_state():
    model = make_model("revlstm", layers=2, dropout=False)
    x, y = make_batch(20, 3)
    state = model.init_state(3)
    one = Segment(model, x, y).start(state).nbytes()
    out, _ = run_method(methods.get("gruslys", budget_bytes=3 * one + one // 2), model, x, y, state)
    assert out.stats["slots"] == 3 and out.stats["stored_states_peak"] <= 3
    assert out.stats["forward_steps"] == optimal_cost(20, 3)
    with pytest.raises(ValueError, match=f"need at least {one} bytes"):
        run_method(methods.get("gruslys", budget_bytes=one - 1), model, x, y, state)


@pytest.mark.parametrize("name, opts, needle", [
    ("checkpoint", {"segments": 0}, "segments"),
    ("checkpoint", {"segments": 2.5}, "segments"),
    ("checkpoint", {"recursive": True, "segments": 4}, "flat form only"),
    ("checkpoint", {"recursive": "yes"}, "recursive"),
    ("gruslys", {"policy": "ism"}, "policy"),
    ("gruslys", {"budget": 1.5}, "budget=1.5"),
    ("gruslys", {"budget": 0.0}, "budget=0.0"),
    ("gruslys", {"slots": 0}, "slots=0"),
    ("gruslys", {"slots": 2, "budget": 0.1}, "exactly one budget"),
    ("gruslys", {"budget_bytes": 0}, "budget_bytes=0"),
])
def test_bad_options_are_named(name, opts, needle):
    with pytest.raises(ValueError, match=needle):
        methods.get(name, **opts)


def test_segments_beyond_T_and_fused_on_reversible_cells_are_refused():
    model = make_model("revgru", layers=1, dropout=False, **TINY)
    x, y = make_batch(5, 2, vocab=10)
    with pytest.raises(ValueError, match="segments must be an int from 1 to T=5"):
        run_method(methods.get("checkpoint", segments=6), model, x, y)
    with pytest.raises(ValueError, match="needs cell 'lstm' or 'gru'"):
        run_method(methods.get("bptt-fused"), model, x, y)


def test_labels_and_defaults():
    assert methods.get("gruslys", budget=0.05).label() == "gruslys(budget=0.05, policy=hsm)"
    assert methods.get("gruslys").options() == {"budget": 0.05, "policy": "hsm"}
    assert methods.get("checkpoint").label() == "checkpoint"
    assert methods.get("checkpoint", recursive=True).label() == "checkpoint(recursive=True)"
    assert methods.get("bptt-fused").label() == "bptt-fused"


@pytest.mark.parametrize("cell", ["lstm", pytest.param("revgru", marks=pytest.mark.slow)])
def test_recomputing_methods_hold_less_live_memory(cell):
    """A cross-check of the executor's bookkeeping with an independent meter (live tensor bytes): states it drops
    are really released. At T = 120 the recomputing methods' peaks are a fraction of BPTT's, and the policies
    that keep O(1) steps under autograd beat sqrt(T) checkpointing's stretches of 11 steps."""
    from revbench.measure.live import LiveTensorMeter
    model = make_model(cell, layers=1, dropout=True, vocab=50, emb=32, hidden=64, dtype=torch.float32)
    x, y = make_batch(120, 8, vocab=50)
    peaks = {}
    for name, opts in [("bptt", {}), ("checkpoint", {}), ("checkpoint", {"recursive": True}),
                       ("gruslys", {"budget": 0.05}), ("gruslys", {"budget": 0.05, "policy": "mixed"})]:
        method = methods.get(name, **opts)
        for p in model.parameters():
            p.grad = None
        torch.manual_seed(0)
        state = model.init_state(8)
        meter = LiveTensorMeter(params=list(model.parameters()))
        with meter:
            method.step(model, x, y, state)
        peaks[method.label()] = meter.figures()["live_peak_bytes"]
    bptt, chen = peaks.pop("bptt"), peaks.pop("checkpoint")
    assert chen < 0.5 * bptt, peaks
    for label, peak in peaks.items():
        assert peak < chen, (label, peaks, chen)
