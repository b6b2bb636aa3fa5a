"""How the encoder-decoder's chains connect for a training method (``Seq2Seq.run_step``).

- A ``single_graph`` method (bptt): one autograd graph through the encoder, the attention context and the
  decoder, backpropagated once.
- Every other method runs on the sides as chains (``SideChain``), decoder first:
  1. the encoder's forward pass without a graph, keeping its final state and the stored hidden part of the
     attention context (the slice store of a reversible encoder that keeps its words, else the top layer's
     first ``D`` units per step);
  2. the decoder's chain from the encoder's final state; each step's loss attends over the context, whose
     hidden part is one leaf that collects its gradient; the gradient at the decoder's start is returned;
  3. the encoder's chain, driven by that gradient at its final state and, per step, by the gradient of its
     stored context units (a ``Pull``).
  A method that ``starts_from_end`` (reversible) gets the decoder's forward pass run first too, and both
  chains' end states; its context leaf is built only when the decoder's backward begins. Its ``start`` is only
  what its reversal must rebuild (the encoder's final integers for the decoder, nothing held for the encoder),
  so no state is kept beyond what the method itself needs.
"""
from __future__ import annotations

import torch

from revbench.core.fixedpoint import from_fixed
from revbench.core.protocol import StepOutput
from revbench.models.seq2seq.batch import BatchRun
from revbench.models.seq2seq.chains import Pull, SideChain

BATCH_FIELDS = ("src", "src_lengths", "tgt_in", "tgt_out", "tgt_lengths")


def run_step(model, method, batch, normalize: str = "tokens", on_phase=None) -> StepOutput:
    """Train ``model`` on ``batch`` (any object with ``src, src_lengths, tgt_in, tgt_out, tgt_lengths``).

    The loss is the sum of the target tokens' cross-entropies divided by the number of target tokens
    (``normalize="tokens"``) or of sentences (``"sents"``, what the reference's OpenNMT trainer used);
    ``stats["loss_divisor"]`` says which number. ``on_phase(name)``, if given, is called with ``"start"``
    before anything of the batch is built, then ``"encoded"`` and ``"decoded"`` at the end of each side's
    forward pass (memory meters read it)."""
    missing = [f for f in BATCH_FIELDS if not hasattr(batch, f)]
    if missing:
        raise TypeError(f"the encoder-decoder's batch must have {', '.join(BATCH_FIELDS)} (e.g. make_batch's "
                        f"Batch); {type(batch).__name__} has no {', '.join(missing)}")
    if on_phase is not None:
        on_phase("start")
    run = BatchRun(model, *(getattr(batch, f) for f in BATCH_FIELDS), keep_words=method.keep_words,
                   normalize=normalize, on_phase=on_phase)
    loss, extra = single_graph_step(run) if method.single_graph else chained_step(method, run)
    stats = run.stats()
    stats["loss_divisor"] = run.divisor
    stats.update(extra)
    stats["method"] = method.name
    stats["finite"] = bool(torch.isfinite(loss))             # False: the loss is NaN/inf (training diverged)
    return StepOutput(loss=loss.detach(), state=None, stats=stats)


def single_graph_step(run: BatchRun):
    """Autograd through the whole exact forward: every encoder and decoder step's graph is kept."""
    m = run.model
    carry = run.enc.start(m.init_state(run.B))
    outs = []
    for s in range(run.S):
        carry, out = run.enc.advance(s, carry, grad=True)
        outs.append(out)
    D = m.context.hidden_dim(m.hidden_size)
    with torch.enable_grad():
        hidden = torch.stack([o[:, :D] for o in outs]) if D else None
        ctx = run.context(hidden)
    run.phase("encoded")
    dec = run.dec.start_from(carry)
    losses = []
    for t in range(run.T):
        dec, top = run.dec.advance(t, dec, grad=True)
        with torch.enable_grad():
            losses.append(run.step_loss(t, top, ctx))
    run.phase("decoded")
    total = torch.stack(losses).sum()
    total.backward()
    return total, {"stored_states_peak": run.S + run.T}


def chained_step(method, run: BatchRun):
    """Decoder chain, then encoder chain (see the module docstring)."""
    m = run.model
    D = m.context.hidden_dim(m.hidden_size)
    slices = run.enc.slices                         # a reversible encoder that keeps its words stores the slice
    collect = D > 0 and slices is None
    enc0 = run.enc.start(m.init_state(run.B))
    enc_end, stored = enc0, []
    if method.starts_from_end:
        enc0 = None                                 # the reversal rebuilds state 0 itself: nothing to hold
    for s in range(run.S):                          # 1. the encoder's forward pass, no graph
        enc_end, out = run.enc.advance(s, enc_end, grad=False)
        if collect:
            stored.append(out[:, :D])

    def context_leaf():
        if slices is not None:
            return from_fixed(slices.data.to(torch.int64), run.dtype).requires_grad_()
        return torch.stack(stored).requires_grad_() if D else None

    if method.starts_from_end:
        run.phase("encoded")
        dec_end = run.dec.start_from(enc_end)
        for t in range(run.T):
            dec_end, _ = run.dec.advance(t, dec_end, grad=False)
        run.phase("decoded")
        dec_end = [dec_end]       # handed over below, not kept here: the method frees it when it can
        hidden, on_end = context_leaf(), None
        stored = None
        dec_start = enc_end       # what the decoder's reversal must rebuild: the encoder's final integers
    else:
        hidden, dec_end = context_leaf(), [None]
        stored = None
        run.phase("encoded")
        dec_start = run.dec.start_from(enc_end)
        on_end = lambda: run.phase("decoded")      # noqa: E731  (the plan's first arrival at state T)
    dec = SideChain(run.dec, run.T, lambda t, top: run.step_loss(t, top, run.context(hidden)), on_end=on_end)
    dec_res = method.run_chain(dec, dec_start, end=dec_end.pop(), grad_start=True)  # 2. the decoder
    dec_res.final = dec_start = None                # nothing after the decoder reads its states
    hidden_grad = None if hidden is None else hidden.grad
    hidden = None                                   # the decoder is done with the context
    zero = torch.zeros((), dtype=run.dtype, device=m.device)

    def enc_pull(s, top):
        if hidden_grad is None:
            return Pull([], [], zero)
        return Pull([top[:, :D]], [hidden_grad[s]], zero)

    enc = SideChain(run.enc, run.S, enc_pull)
    enc_res = method.run_chain(enc, enc0, end=enc_end, grad_end=dec_res.start_grads)  # 3. the encoder
    extra = {"stored_states_peak": enc_res.stats.get("stored_states_peak", 0)
             + dec_res.stats.get("stored_states_peak", 0)}
    for side, res in (("enc", enc_res), ("dec", dec_res)):
        extra.update({f"{side}_{k}": v for k, v in res.stats.items() if k != "forward_steps"})
    extra.update(method.options())
    return dec_res.loss, extra
