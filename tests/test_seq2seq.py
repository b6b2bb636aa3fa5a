"""The reversible encoder-decoder: exact reversal (slice included), gradients equal to BPTT, padding."""
import pytest
import torch

from revbench.models.seq2seq.inputs import make_batch
from revbench.models.seq2seq.inputs import EOS_INDEX
from revbench import methods
from revbench.models.seq2seq import BatchRun, ContextSpec, Seq2Seq, encode, evaluate_batch

pytestmark = pytest.mark.usefixtures("one_thread")


SRC_V, TGT_V = 30, 25


def random_pairs(n, seed=0, max_src=9, max_tgt=9):
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        ls = int(torch.randint(1, max_src + 1, (1,), generator=g))
        lt = int(torch.randint(1, max_tgt + 1, (1,), generator=g))
        pairs.append((torch.randint(4, SRC_V, (ls,), generator=g).tolist(),
                      torch.randint(4, TGT_V, (lt,), generator=g).tolist()))
    return pairs


def padded_batch(seed=0):
    """A batch whose source and target lengths both vary (so both sides are padded)."""
    pairs = random_pairs(5, seed)
    pairs[0] = ([5, 6, 7, 8, 9, 10, 11, 12], [4, 5])                # longest source, short target
    pairs[1] = ([7], [6, 7, 8, 9, 10, 11, 12, 13, 14])             # shortest source, longest target
    return make_batch(pairs)


def make_model(cell="revgru", context="emb+h:3", layers=1, k=2, dropout=0.3, dtype=torch.float64, seed=1,
               hidden=12, emb=8):
    torch.manual_seed(seed)
    k = k if cell.startswith(("rev", "nf-rev")) else None      # ordinary cells have no forgetting limit
    return Seq2Seq(SRC_V, TGT_V, emb, hidden, layers, cell=cell, max_forget_bits=k, context=context,
                   dropout=dropout, init_range=0.5).to(dtype)


def run_step(method, model, batch, seed=3, normalize="tokens", **opts):
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(seed)
    out = methods.get(method, **opts).step(model, batch, normalize=normalize)
    return out, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def rel_err(ga, gb):
    assert ga.keys() == gb.keys()
    return max(float((ga[n] - gb[n]).norm() / ga[n].norm().clamp_min(1e-300)) for n in ga)


def _ints(carry):
    return [(tuple(p.clone() for p in ls.ints), None if ls.bx is None else ls.bx.clone()) for ls in carry.layers]


def _assert_same(a, b):
    for (ia, ba), (ib, bb) in zip(a, b):
        for u, v in zip(ia, ib):
            assert torch.equal(u, v)
        assert (ba is None) == (bb is None)
        if ba is not None:
            assert torch.equal(ba, bb)


@pytest.mark.parametrize("cell,layers,k", [("revgru", 1, 2), ("revgru", 2, None), ("revlstm", 1, 3),
                                           ("revlstm", 2, 1), ("nf-revgru", 1, 3)])
def test_encoder_and_decoder_reverse_bit_for_bit_with_slice_and_padding(cell, layers, k):
    model = make_model(cell, "emb+h:3", layers=layers, k=k)
    batch = padded_batch()
    torch.manual_seed(0)
    run = BatchRun(model, *batch, keep_words=True)
    enc = run.enc.start(model.init_state(run.B))
    seen = [_ints(enc)]
    for s in range(run.S):
        enc, _ = run.enc.advance(s, enc)
        seen.append(_ints(enc))
    dec0 = run.dec.start_from(enc)
    dec = dec0
    dseen = [_ints(dec)]
    for t in range(run.T):
        dec, _ = run.dec.advance(t, dec)
        dseen.append(_ints(dec))
    if model.enc_cells[0].forgets:
        assert any(len(st) for st in run.dec.stacks) or not run.dec.buffers_empty(dec)
    for t in range(run.T - 1, -1, -1):
        dec = run.dec.reverse(t, dec)
        _assert_same(_ints(dec), dseen[t])
    assert run.dec.buffers_empty(dec)
    slice_top = seen[-1][-1][0][0][:, :3]
    assert torch.equal(run.enc.slices.get(run.S - 1), slice_top)      # the stored slice is the state's
    for s in range(run.S - 1, -1, -1):
        enc = run.enc.reverse(s, enc)
        _assert_same(_ints(enc), seen[s])                              # slice units included
    assert run.enc.buffers_empty(enc)


def test_slice_units_hold_the_true_lossy_update_and_the_rest_the_buffered_one():
    """Slice units: exactly to_fixed(z * h1_prev + (1 - z) * g) (the ordinary, forgetting update, with the
    unquantised z); other units: the buffered multiplication by the quantised z, then + to_fixed(add)."""
    from revbench.core.fixedpoint import quantise_gate, to_fixed

    model = make_model("revgru", "emb+h:3", k=2, dropout=0.0)
    batch = padded_batch(1)
    run = BatchRun(model, *batch, keep_words=True)
    cell, W = model.enc_cells[0], dict(model.enc_cells[0].named_parameters())
    carry = run.enc.start(model.init_state(run.B))
    with torch.no_grad():
        for s in range(run.S):
            prev = carry
            carry, _ = run.enc.advance(s, carry)
            x = model.src_emb.weight[batch.src[s]]
            h1p, h2p = prev.layers[0].floats
            z, add = cell._half(1, x, h2p, W)
            valid = batch.src_lengths > s
            got = carry.layers[0].ints[0]
            want = to_fixed(z[:, :3] * h1p[:, :3] + add[:, :3])
            assert torch.equal(got[valid, :3], want[valid])
            assert torch.equal(got[~valid], prev.layers[0].ints[0][~valid])
            # the other units: h * z_q / 2**10 up to the bits the buffer moves (< z_q units of 2**-23)
            zq = quantise_gate(z[:, 3:])
            approx = torch.div(prev.layers[0].ints[0][:, 3:] * zq, 1024, rounding_mode="floor") + to_fixed(add[:, 3:])
            assert int((got[valid, 3:] - approx[valid]).abs().max()) <= 1024


@pytest.mark.parametrize("cell", ["revgru", "revlstm", "nf-revlstm"])
@pytest.mark.parametrize("context", ["emb+h:3", "h:3", "emb", "all"])
def test_reversible_gradients_equal_bptt_float64_with_dropout(cell, context):
    model = make_model(cell, context, layers=2 if context == "emb+h:3" else 1, k=2, dropout=0.3)
    batch = padded_batch(2)
    a, ga = run_step("bptt", model, batch)
    b, gb = run_step("reversible", model, batch)
    assert len(ga) == len(list(model.parameters()))        # every parameter received a gradient
    assert rel_err(ga, gb) < 1e-9
    assert torch.allclose(a.loss, b.loss, rtol=1e-12, atol=0)
    for key in ("enc_buffer_bits_ideal", "dec_buffer_bits_ideal"):
        assert a.stats[key] == b.stats[key]               # the same exact forward


PLANNED = [("checkpoint", {}), ("checkpoint", {"segments": 2}), ("checkpoint", {"segments": 50}),
           ("checkpoint", {"recursive": True}),
           ("gruslys", {"slots": 2}), ("gruslys", {"slots": 3, "policy": "mixed"}), ("gruslys", {})]


@pytest.mark.parametrize("method,opts", PLANNED, ids=lambda v: str(v) if v else "default")
@pytest.mark.parametrize("cell,context,layers", [("revgru", "emb+h:3", 2), ("revlstm", "all", 1),
                                                 ("gru", "all", 2), ("lstm", "all", 1), ("revgru", "emb", 1)])
def test_recomputing_baselines_gradients_equal_bptt_float64(method, opts, cell, context, layers):
    """checkpoint and gruslys on the encoder-decoder: same loss and float64 gradients as bptt, with dropout and
    padding on both sides, for reversible and ordinary cells and every kind of context."""
    model = make_model(cell, context, layers=layers, k=2, dropout=0.3)
    batch = padded_batch(2)
    a, ga = run_step("bptt", model, batch)
    b, gb = run_step(method, model, batch, **opts)
    assert len(gb) == len(list(model.parameters()))
    assert rel_err(ga, gb) < 1e-9
    assert torch.allclose(a.loss, b.loss, rtol=1e-12, atol=0)
    S, T = batch.src.shape[0], batch.tgt_in.shape[0]
    assert b.stats["forward_steps"] > S + T                  # it recomputed
    assert b.stats["enc_stored_states_peak"] < S and b.stats["dec_stored_states_peak"] < T
    if "slots" in opts:
        assert b.stats["enc_slots_peak"] <= opts["slots"] and b.stats["dec_slots_peak"] <= opts["slots"]


def test_planned_method_options_are_validated_like_the_language_models():
    with pytest.raises(ValueError, match="segments"):
        methods.get("checkpoint", segments=0)
    with pytest.raises(ValueError, match="policy"):
        methods.get("gruslys", policy="nope")
    with pytest.raises(ValueError, match="not available"):
        methods.get("bptt-fused").step(make_model("gru", "all"), padded_batch())


def test_gradients_equal_with_sentence_normalisation():
    model = make_model("revgru", "emb+h:3", dropout=0.2)
    batch = padded_batch(3)
    a, ga = run_step("bptt", model, batch, normalize="sents")
    b, gb = run_step("reversible", model, batch, normalize="sents")
    assert rel_err(ga, gb) < 1e-9
    t, _ = run_step("bptt", model, batch, normalize="tokens")
    n_tok, B = int(batch.tgt_lengths.sum()), batch.src.shape[1]
    assert torch.allclose(a.loss * B, t.loss * n_tok, rtol=1e-12)


def test_padding_content_changes_nothing():
    """What sits in padded positions cannot influence the loss, the gradients or the states."""
    model = make_model("revgru", "emb+h:3", k=3, dropout=0.3)
    batch = padded_batch(4)
    garbage = type(batch)(*(t.clone() for t in batch))
    garbage.indices = batch.indices
    S, T = batch.src.shape[0], batch.tgt_in.shape[0]
    src_pad = torch.arange(S).unsqueeze(1) >= batch.src_lengths.unsqueeze(0)
    tgt_pad = torch.arange(T).unsqueeze(1) >= batch.tgt_lengths.unsqueeze(0)
    garbage.src[src_pad] = 17
    garbage.tgt_in[tgt_pad] = 9
    garbage.tgt_out[tgt_pad] = 11
    for method in ("bptt", "reversible"):
        a, ga = run_step(method, model, batch)
        b, gb = run_step(method, model, garbage)
        assert torch.equal(a.loss, b.loss)
        for n in ga:
            assert torch.equal(ga[n], gb[n]), n


@pytest.mark.parametrize("cell", ["revgru", "revlstm", "gru", "lstm"])
def test_padded_batch_equals_each_sentence_alone(cell):
    """Per sentence: the same encoder state, loss, gradient and greedy translation in a padded batch as alone."""
    from revbench.tasks.nmt.decode import greedy_decode

    model = make_model(cell, "emb+h:3" if cell.startswith("rev") else "all", k=3, dropout=0.0)
    model.eval()                                       # no dropout: masks would depend on the batch size
    pairs = random_pairs(4, seed=5, max_src=7, max_tgt=7)
    batch = make_batch(pairs)
    method = "reversible" if cell.startswith("rev") else "bptt"
    _, g_batch = run_step(method, model, batch, normalize="sents")
    g_sum = None
    enc_b = encode(model, batch.src, batch.src_lengths)
    dec_b = greedy_decode(model, batch.src, batch.src_lengths, max_len=12)
    loss_b, _ = evaluate_batch(model, *batch)
    loss_sum = 0.0
    for col, idx in enumerate(batch.indices.tolist()):
        one = make_batch([pairs[idx]])
        _, g = run_step(method, model, one, normalize="sents")
        g_sum = g if g_sum is None else {n: g_sum[n] + g[n] for n in g}
        enc_1 = encode(model, one.src, one.src_lengths)
        for lb, l1 in zip(enc_b.final.layers, enc_1.final.layers):
            for pb, p1 in zip(lb.ints or lb.floats, l1.ints or l1.floats):
                if pb.dtype == torch.int64:    # fixed point: equal up to the rounding of a float64 ulp
                    assert int((pb[col] - p1[0]).abs().max()) <= 1
                else:
                    assert torch.allclose(pb[col], p1[0], rtol=0, atol=1e-12)
        dec_1 = greedy_decode(model, one.src, one.src_lengths, max_len=12)
        assert dec_b[col][0] == dec_1[0][0]
        loss_sum += evaluate_batch(model, *one)[0]
    assert abs(loss_b - loss_sum) < 1e-9 * abs(loss_sum)
    B = len(pairs)
    assert rel_err({n: g * B for n, g in g_batch.items()}, g_sum) < 1e-8


def test_decoder_padded_steps_leave_state_and_buffer_unchanged():
    model = make_model("revlstm", "emb+h:3", k=2)
    batch = padded_batch(6)
    run = BatchRun(model, *batch, keep_words=True)
    enc = run.enc.start(model.init_state(run.B))
    for s in range(run.S):
        enc, _ = run.enc.advance(s, enc)
    dec = run.dec.start_from(enc)
    lengths = batch.tgt_lengths
    for t in range(run.T):
        before = _ints(dec)
        dec, _ = run.dec.advance(t, dec)
        after = _ints(dec)
        pad = lengths <= t
        for (ib, bb), (ia, ba) in zip(before, after):
            for u, v in zip(ib, ia):
                assert torch.equal(u[pad], v[pad])
            assert torch.equal(bb[pad], ba[pad])


def test_stats_report_encoder_and_decoder_savings_separately():
    model = make_model("revgru", "emb+h:3", k=3, dropout=0.0)
    batch = padded_batch(7)
    out, _ = run_step("reversible", model, batch)
    st = out.stats
    n_src, n_tgt = int(batch.src_lengths.sum()), int(batch.tgt_lengths.sum())
    assert st["enc_state_bits_baseline"] == 32 * n_src * 12
    assert st["dec_state_bits_baseline"] == 32 * n_tgt * 12
    assert st["enc_context_bits_ideal"] == 32 * 3 * n_src
    assert st["enc_context_bits_actual"] == 32 * 3 * batch.src.numel()        # int32 store, padded
    assert st["enc_saving_ideal"] == pytest.approx(
        st["enc_state_bits_baseline"] / (st["enc_buffer_bits_ideal"] + st["enc_context_bits_ideal"]))
    assert st["dec_saving_actual"] == pytest.approx(st["dec_state_bits_baseline"] / st["dec_buffer_bits_actual"])
    assert 0 < st["enc_buffer_bits_ideal"] and 0 < st["dec_buffer_bits_ideal"]
    b, _ = run_step("bptt", model, batch)
    assert b.stats["enc_buffer_bits_actual"] is None and b.stats["enc_buffer_bits_ideal"] is not None


def test_every_method_holds_less_live_memory_than_bptt_on_each_side():
    from revbench.tasks.nmt.step_memory import measure_step_memory

    torch.manual_seed(0)
    model = Seq2Seq(40, 40, 16, 32, 1, cell="revgru", context="emb+h:4", dropout=0.2)
    pairs = random_pairs(16, seed=8, max_src=9, max_tgt=9)
    pairs = [([min(w, 39) for w in s], [min(w, 24) for w in t]) for s, t in pairs]
    batch = make_batch(pairs)
    bp = measure_step_memory(model, batch, "bptt")
    for method in ("reversible", "checkpoint", "gruslys"):
        other = measure_step_memory(model, batch, method)
        assert 0 < other["live_peak_bytes"] < bp["live_peak_bytes"], method
        for side in ("enc", "dec"):                     # what each forward pass keeps for the backward pass
            assert 0 < other[f"{side}_held_bytes"] < bp[f"{side}_held_bytes"], (method, side)


def test_context_parsing_and_bad_input():
    assert str(ContextSpec.parse("emb+h:20")) == "emb+h:20"
    assert ContextSpec.parse("h:20+emb") == ContextSpec(True, 20, False)
    assert ContextSpec.parse("all").all_hidden
    for bad in ("h:0", "emb+emb", "hidden", "h:x", ""):
        with pytest.raises(ValueError, match="context"):
            ContextSpec.parse(bad)
    with pytest.raises(ValueError, match="slice"):
        Seq2Seq(10, 10, 4, 8, context="emb+h:5")                   # h1 has only 4 units
    with pytest.raises(ValueError, match="reversible cell"):
        methods.get("reversible").step(make_model("gru", "all"), padded_batch())
    with pytest.raises(ValueError, match="not available"):
        methods.get("no-such-method")
    model = make_model()
    b = padded_batch()
    with pytest.raises(ValueError, match="tgt_in token ids"):
        methods.get("bptt").step(model, b._replace(tgt_in=b.tgt_in + 100))
    with pytest.raises(ValueError, match="src_lengths"):
        methods.get("bptt").step(model, b._replace(src_lengths=b.src_lengths * 0))


def test_greedy_stops_at_eos_and_beam_one_equals_greedy():
    from revbench.tasks.nmt.decode import beam_search, greedy_decode

    model = make_model("revgru", "emb+h:3", dropout=0.0)
    batch = padded_batch(9)
    g = greedy_decode(model, batch.src, batch.src_lengths, max_len=10)
    b = beam_search(model, batch.src, batch.src_lengths, beam_size=1, max_len=10)
    assert [w for w, _ in g] == [w for w, _ in b]
    for (w, p), L in zip(g, batch.src_lengths.tolist()):
        assert EOS_INDEX not in w and len(w) == len(p) and all(0 <= q < L for q in p)
    b4 = beam_search(model, batch.src, batch.src_lengths, beam_size=4, max_len=10)
    assert len(b4) == batch.src.shape[1]
