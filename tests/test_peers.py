"""The tools a user would pick instead of ours: ``torch-checkpoint`` (torch.utils.checkpoint over chunks of the
step loop, or of the fused kernel) and ``revolve`` (the checkpoint-schedules package's schedules run by our
executor). In float64 their gradients equal ``bptt``'s (relative error < 1e-9; 1e-6 for the fused kernel), with
dropout on, on every cell each supports, on both model kinds; Revolve's forward steps equal our dynamic
programme's ``optimal_cost`` (an independent check of it) for many (T, m)."""
from __future__ import annotations

import checkpoint_schedules as cs
import pytest
import torch

from baselines.checkpointing import default_segments, piece_bounds
from baselines.executor import simulate
from baselines.gruslys import mixed_cost, optimal_cost, resolve_slots
from baselines.revolve import revolve_plan, translate
from baselines.schedules import Backward, BackwardRecorded, Forward, Free, PlanError, Record
from revbench import methods
from tests.helpers import make_batch, make_model, max_rel_err, random_state, run_method

CELLS = ["revgru", "revlstm", "nf-revgru", "nf-revlstm", "gru", "lstm"]
FUSED = ("gru", "lstm")
TINY = dict(vocab=10, emb=4, hidden=4)

pytestmark = pytest.mark.usefixtures("one_thread")


def configs(cell, T):
    out = [("torch-checkpoint", {}), ("torch-checkpoint", {"segments": 1}), ("torch-checkpoint", {"segments": T}),
           ("revolve", {"slots": 1}), ("revolve", {"slots": 2}), ("revolve", {"budget": 0.05}),
           ("revolve", {"slots": 2, "schedule": "multistage"}), ("revolve", {"slots": 3, "schedule": "mixed"})]
    if cell in FUSED:
        out += [("torch-checkpoint", {"fused": True}), ("torch-checkpoint", {"fused": True, "segments": T})]
    return out


def expected_steps(name, opts, T, lengths=None):
    if name == "torch-checkpoint":
        if opts.get("fused") and lengths is not None:      # a fused chunk of padding only does not run
            k = opts.get("segments") or default_segments(T)
            b = piece_bounds(T, k)
            return 2 * sum(b[i + 1] - b[i] for i in range(k) if b[i] < int(lengths.max()))
        return 2 * T                       # every chunk is checkpointed, the last one too: all recomputed once
    m = resolve_slots(T, slots=opts.get("slots"), budget=opts.get("budget"))
    return mixed_cost(T, m) if opts.get("schedule") == "mixed" else optimal_cost(T, m)


def check_against_bptt(cell, layers, T, B=2, lengths=None, **sizes):
    model = make_model(cell, layers=layers, dropout=True, **sizes)
    x, y = make_batch(T, B, vocab=model.vocab_size)
    state = random_state(model, B)
    ref, g_ref = run_method(methods.get("bptt"), model, x, y, state, lengths=lengths)
    assert len(g_ref) == len(list(model.parameters()))
    for name, opts in configs(cell, T):
        out, g = run_method(methods.get(name, **opts), model, x, y, state, lengths=lengths)
        what = f"{name}{opts} on {cell} L={layers} T={T}"
        fused = opts.get("fused", False)
        assert max_rel_err(g_ref, g) < (1e-6 if fused else 1e-9), what
        states = [(u, v) for la, lb in zip(ref.state, out.state) for u, v in zip(la, lb)]
        if fused:                          # the fused kernel sums in another order
            assert torch.allclose(out.loss, ref.loss, rtol=1e-12, atol=0), what
            assert all(torch.allclose(u, v, rtol=1e-12, atol=1e-14) for u, v in states), what
        else:                              # the same computation: bit for bit, integers and buffers included
            assert torch.equal(out.loss, ref.loss), what
            assert all(torch.equal(u, v) for u, v in states), what
        assert out.stats["forward_steps"] == expected_steps(name, opts, T, lengths), what
        if name == "torch-checkpoint":
            k = opts.get("segments") or default_segments(T)
            assert out.stats["stored_states_peak"] == k and out.stats["segments"] == k, what
            assert out.stats["graph_steps_peak"] == -(-T // k), what
        else:
            m = resolve_slots(T, slots=opts.get("slots"), budget=opts.get("budget"))
            assert out.stats["slots_peak"] <= m and out.stats["slots"] == m, what


@pytest.mark.parametrize("T", [1, 2, 7])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_short_segments(cell, layers, T):
    check_against_bptt(cell, layers, T, **TINY)


@pytest.mark.parametrize("cell", CELLS)
def test_segment_of_40_two_layers(cell):
    check_against_bptt(cell, 2, 40, **TINY)


@pytest.mark.parametrize("cell", ["revlstm", "lstm", "gru"])
def test_padding_with_chunks_of_padding_only(cell):
    # T = 15 in 3 chunks (the default round(sqrt(15)) = 4 too): rows end at 5, 3, 0 and 1 steps, so the later
    # chunks hold padding only (the fused chunk skips them)
    check_against_bptt(cell, 2, 15, B=4, lengths=torch.tensor([5, 3, 0, 1]), vocab=12, emb=6, hidden=6)


def test_consecutive_segments_carry_the_exact_state():
    model = make_model("revgru", layers=2, dropout=True, **TINY)
    s_a = s_b = s_c = model.init_state(2)
    for T in (9, 20, 9):
        x, y = make_batch(T, 2, vocab=10, seed=T)
        a, ga = run_method(methods.get("bptt"), model, x, y, s_a)
        b, gb = run_method(methods.get("torch-checkpoint"), model, x, y, s_b)
        c, gc = run_method(methods.get("revolve", slots=3), model, x, y, s_c)
        assert max_rel_err(ga, gb) < 1e-9 and max_rel_err(ga, gc) < 1e-9
        s_a, s_b, s_c = a.state, b.state, c.state
        for la, lb, lc in zip(s_a, s_b, s_c):
            assert all(torch.equal(u, v) and torch.equal(u, w) for u, v, w in zip(la, lb, lc))


# ------------------------------------------------------------------------------------------ encoder-decoder
S2S = [("torch-checkpoint", {}), ("torch-checkpoint", {"segments": 2}), ("torch-checkpoint", {"segments": 50}),
       ("revolve", {"slots": 2}), ("revolve", {}), ("revolve", {"slots": 2, "schedule": "multistage"}),
       ("revolve", {"slots": 3, "schedule": "mixed"})]


@pytest.mark.parametrize("cell,context,layers", [("revgru", "emb+h:3", 2), ("revlstm", "all", 1),
                                                 ("gru", "all", 2), ("lstm", "emb", 3)])
def test_encoder_decoder_gradients_equal_bptt_float64(cell, context, layers):
    from tests.test_seq2seq import make_model as s2s_model, padded_batch, rel_err, run_step

    model = s2s_model(cell, context, layers=layers, k=2, dropout=0.3)
    batch = padded_batch(2)
    a, ga = run_step("bptt", model, batch)
    S, T = batch.src.shape[0], batch.tgt_in.shape[0]
    for name, opts in S2S:
        b, gb = run_step(name, model, batch, **opts)
        what = f"{name}{opts} on {cell}/{context} L={layers}"
        assert len(gb) == len(list(model.parameters())), what
        assert rel_err(ga, gb) < 1e-9, what
        assert torch.allclose(a.loss, b.loss, rtol=1e-12, atol=0), what
        assert b.stats["forward_steps"] > S + T, what                # it recomputed
        if name == "torch-checkpoint":
            k = opts.get("segments")                                   # an upper bound on a sentence
            assert b.stats["dec_stored_states_peak"] == (min(k, T) if k else default_segments(T)), what
            assert b.stats["forward_steps"] == S + 2 * S + 2 * T, what  # the encoder's pass, then 2 per step
        elif "slots" in opts:
            assert b.stats["enc_slots_peak"] <= opts["slots"] and b.stats["dec_slots_peak"] <= opts["slots"], what


def test_fused_is_refused_on_the_encoder_decoder_and_on_other_cells():
    from tests.test_seq2seq import make_model as s2s_model, padded_batch

    with pytest.raises(ValueError, match="encoder-decoder"):
        methods.get("torch-checkpoint", fused=True).step(s2s_model("gru", "all"), padded_batch())
    model = make_model("revgru", layers=1, dropout=False, **TINY)
    x, y = make_batch(5, 2, vocab=10)
    with pytest.raises(ValueError, match="needs cell 'lstm' or 'gru'"):
        run_method(methods.get("torch-checkpoint", fused=True), model, x, y)
    assert methods.supports("torch-checkpoint", "revgru", kind="seq2seq") == (True, "")
    cls = methods.method_class("torch-checkpoint")
    assert cls.supports("lstm", "lm", fused=True)[0] and not cls.supports("revlstm", "lm", fused=True)[0]
    assert not cls.supports("lstm", "seq2seq", fused=True)[0]
    assert methods.supports("revolve", "nf-revlstm", kind="seq2seq")[0]


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("name, opts, needle", [
    ("torch-checkpoint", {"segments": 0}, "segments"),
    ("torch-checkpoint", {"segments": 2.5}, "segments"),
    ("torch-checkpoint", {"segments": True}, "segments"),
    ("torch-checkpoint", {"fused": "yes"}, "fused must be True or False"),
    ("revolve", {"slots": 0}, "revolve: slots=0"),
    ("revolve", {"budget": 1.5}, "revolve: budget=1.5"),
    ("revolve", {"budget": 0.0}, "budget=0.0"),
    ("revolve", {"slots": 2, "budget": 0.1}, "exactly one budget"),
    ("revolve", {"schedule": "hrevolve"}, "schedule must be one of revolve, multistage, mixed"),
])
def test_bad_options_are_named(name, opts, needle):
    with pytest.raises(ValueError, match=needle):
        methods.get(name, **opts)


def test_segments_beyond_T_are_refused_on_a_language_model():
    model = make_model("lstm", layers=1, dropout=False, **TINY)
    x, y = make_batch(5, 2, vocab=10)
    for fused in (False, True):
        with pytest.raises(ValueError, match="torch-checkpoint: segments must be an int from 1 to T=5"):
            run_method(methods.get("torch-checkpoint", segments=6, fused=fused), model, x, y)


def test_registry_labels_and_defaults():
    assert {"torch-checkpoint", "revolve"} <= set(methods.available())
    assert methods.get("torch-checkpoint").label() == "torch-checkpoint"
    assert methods.get("torch-checkpoint", segments=4, fused=True).label() == "torch-checkpoint(fused=True, segments=4)"
    assert methods.get("revolve").options() == {"budget": 0.05, "schedule": "revolve"}
    assert methods.get("revolve", slots=5).label() == "revolve(schedule=revolve, slots=5)"


# ------------------------------------------------------------------------------------------ Revolve's cost
SMALL = [(T, m) for T in range(1, 31) for m in range(1, T + 2)]
LARGER = [(40, 3), (60, 2), (60, 7), (60, 20), (60, 59), (100, 5), (100, 10), (100, 33), (200, 5), (200, 20),
          (301, 15), (500, 25)]


@pytest.mark.parametrize("schedule", ["revolve", "multistage"])
def test_revolve_costs_equal_our_dynamic_programme(schedule):
    """Every T <= 30 with every slot count 1 .. T+1, and larger (T, m) up to T = 500: the package's schedule,
    translated and run over a counting segment, takes exactly C(T, m) forward steps within m slots."""
    for T, m in SMALL + LARGER:
        plan = revolve_plan(T, m, schedule, predicted=False)
        st = simulate(plan)
        assert st.forward_steps == plan.forward_steps == optimal_cost(T, m), (schedule, T, m)
        assert st.slots_peak <= m and st.recorded_steps_peak == 0, (schedule, T, m)
    assert [optimal_cost(200, 5), optimal_cost(200, 20), optimal_cost(60, 7)] == [990, 578, 195]


def test_mixed_schedule_costs_equal_the_mixed_recurrence():
    for T, m in SMALL + [(60, 7), (100, 10), (200, 5)]:
        st = simulate(revolve_plan(T, m, "mixed", predicted=False))
        assert st.forward_steps == mixed_cost(T, m), (T, m)
        assert st.slots_peak <= m, (T, m)


@pytest.mark.filterwarnings("ignore:Numba not available:RuntimeWarning")
def test_translation_of_a_small_revolve_schedule():
    # Revolve over 4 steps with 2 snapshots (state 0 is one of them): keep 0 and 2, back from 4 to 0
    assert translate(list(cs.Revolve(4, 2)), 4) == [
        Forward(0, 2, store=True), Forward(2, 3), Backward(3, 4), Backward(2, 3), Free(2),
        Forward(0, 1), Backward(1, 2), Backward(0, 1), Free(0)]
    assert optimal_cost(4, 2) == 8
    # the mixed schedule keeps step graphs: Record / BackwardRecorded
    acts = translate(list(cs.MixedCheckpointSchedule(4, 2, storage=cs.StorageType.RAM)), 4)
    assert Record(2) in acts and BackwardRecorded(2) in acts


def test_schedules_on_disk_do_not_map():
    with pytest.raises(PlanError, match="not one level of memory"):
        translate(list(cs.PeriodicDiskRevolve(30, 2)), 30)


# ------------------------------------------------------------------------------------------ what is kept
def test_torch_checkpoint_holds_less_live_memory():
    """An independent meter (live tensor bytes) sees what the stats claim: chunk boundaries only, at T = 120
    about what our own sqrt(T) checkpointing holds, a fraction of bptt's; the fused form likewise against
    bptt-fused."""
    from revbench.measure.live import LiveTensorMeter

    model = make_model("lstm", layers=1, dropout=True, vocab=50, emb=32, hidden=64, dtype=torch.float32)
    x, y = make_batch(120, 8, vocab=50)
    peaks = {}
    for name, opts in [("bptt", {}), ("checkpoint", {}), ("torch-checkpoint", {}), ("bptt-fused", {}),
                       ("torch-checkpoint", {"fused": True})]:
        method = methods.get(name, **opts)
        for p in model.parameters():
            p.grad = None
        torch.manual_seed(0)
        meter = LiveTensorMeter(params=list(model.parameters()))
        with meter:
            method.step(model, x, y, model.init_state(8))
        peaks[method.label()] = meter.figures()["live_peak_bytes"]
    assert peaks["torch-checkpoint"] < 0.3 * peaks["bptt"], peaks
    assert peaks["torch-checkpoint"] < 1.2 * peaks["checkpoint"], peaks
    assert peaks["torch-checkpoint(fused=True)"] < 0.3 * peaks["bptt-fused"], peaks
