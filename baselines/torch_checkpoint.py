"""``torch.utils.checkpoint`` over chunks of a chain, the way a PyTorch user writes it; registered in
``revbench.methods`` as ``"torch-checkpoint"``.

The chain's ``T`` steps are split into ``segments`` chunks (default ``round(sqrt(T))``, sizes as equal as
possible, the longer first: ``baselines.checkpointing.piece_bounds``), and every chunk is one call of
``torch.utils.checkpoint.checkpoint(chunk, ..., use_reentrant=False)``; then one ``backward`` over the whole
chain. PyTorch, not our executor, decides what is kept and what is recomputed:

- kept through the forward pass: each chunk's inputs (its start state: ``segments`` states, state 0
  included), each step's loss (a scalar) and the final state; inside a chunk no activation is saved (the
  saved-tensor hooks of non-reentrant checkpointing replace them with handles);
- recomputed during backward: every chunk, the last one too (a user's loop checkpoints them all), so the
  forward work is ``2T`` step evaluations; a chunk's recomputed activations live while its backward runs
  (``ceil(T / segments)`` steps at most).

``fused=False`` (any cell, both model kinds): a chunk is our step loop, ``chain.advance(t, carry, grad=True)``
for its steps. What crosses a chunk boundary is the ``Carry``: its float tensors carry the gradient; the
fixed-point integers and the live information buffer of reversible cells ride along as ordinary tensors
without gradient (the chunk's recomputation starts from the same integers, so it reproduces the forward bit
for bit; no word stack is kept: chains are built with ``keep_words=False``).

``fused=True`` (language model, cells ``lstm`` and ``gru``): a chunk is what ``bptt-fused`` runs over a whole
segment, cut to the chunk's steps: the embedding (with the segment's dropout masks), the fused
``torch.lstm`` / ``torch.gru`` kernel (what ``nn.LSTM`` / ``nn.GRU`` call; cuDNN on a GPU) per group of layers,
the output layer and the chunk's summed cross-entropy, so neither the embedded inputs nor the logits of the
segment are kept. Padding (``lengths``) runs as packed sequences per chunk; a chunk of padding only is skipped
(and not counted in ``forward_steps``).

Stats: ``forward_steps`` (step evaluations counted by the chain as they run, recomputation included: 2T),
``stored_states_peak`` (``segments``: the chunk start states checkpointing holds), ``graph_steps_peak`` (the
longest chunk) and ``segments``. On a chain whose length varies (a sentence) ``segments`` is an upper
bound: a shorter chain is cut into single steps.
"""
from __future__ import annotations

import numbers

import torch
from torch.utils.checkpoint import checkpoint

from revbench.core.protocol import ChainResult, Method

from baselines.checkpointing import default_segments, piece_bounds
from baselines.fused import _KERNELS, fused_steps


def _loop_chunk(chain, a: int, b: int, carry):
    """Steps a .. b-1 of our step loop, with autograd: (state b, the steps' losses)."""
    losses = []
    for t in range(a, b):
        carry, loss = chain.advance(t, carry, grad=True)
        losses.append(loss)
    return carry, losses


def _fused_chunk(seg, a: int, b: int, carry):
    """Steps a .. b-1 of a language-model segment through the fused kernel: (state b, [the chunk's loss])."""
    lengths = None
    if seg.lengths is not None:
        lengths = (seg.lengths - a).clamp(0, b - a)
        if not bool((lengths > 0).any()):
            return carry, []                          # padding only: nothing runs, the state stays
        if bool((lengths == b - a).all()):
            lengths = None
    seg.counters["forward_steps"] += b - a            # counted on every run: the recomputation too
    final, loss, _ = fused_steps(seg, carry, a, b, lengths)
    return final, [loss]


class TorchCheckpoint(Method):
    """``torch.utils.checkpoint`` (non-reentrant) over ``segments`` chunks (None: round(sqrt(T))) of the step loop
    (``fused=False``) or of the fused ``torch.lstm`` / ``torch.gru`` kernel (``fused=True``). See the module
    docstring for what it keeps and recomputes.

    ``supports(cell, kind, fused=False)``: the class-level answer (``revbench.methods.supports(name, ...)``) is
    for the default ``fused=False``; an instance checks its own ``fused`` when it trains a model.
    """

    name = "torch-checkpoint"

    def __init__(self, segments: int | None = None, fused: bool = False):
        if not isinstance(fused, bool):
            raise ValueError(f"torch-checkpoint: fused must be True or False, got {fused!r}")
        if segments is not None and (isinstance(segments, bool) or not isinstance(segments, numbers.Integral)
                                     or segments < 1):
            raise ValueError(f"torch-checkpoint: segments must be a positive int or None (round(sqrt(T))), got "
                             f"{segments!r}")
        self.segments, self.fused = (None if segments is None else int(segments)), fused

    def options(self):
        opts = {}
        if self.segments is not None:
            opts["segments"] = self.segments
        if self.fused:
            opts["fused"] = True
        return opts

    @classmethod
    def supports(cls, cell, kind="lm", fused: bool = False):
        if not fused:
            return True, ""
        if kind != "lm":
            return False, ("method 'torch-checkpoint' with fused=True runs torch.lstm / torch.gru over whole "
                           "chunks of a sequence, which leaves no place for the encoder-decoder's per-step "
                           "attention; use fused=False (checkpointed chunks of the step loop)")
        if cell not in _KERNELS:
            return False, (f"method 'torch-checkpoint' with fused=True runs torch.nn.LSTM / torch.nn.GRU's kernels: "
                           f"it needs cell 'lstm' or 'gru', got {cell!r}; use fused=False (the step loop, any cell)")
        return True, ""

    def check_model(self, model) -> None:
        ok, why = self.supports(getattr(model, "cell_type", ""), getattr(model, "kind", "lm"), fused=self.fused)
        if not ok:
            raise ValueError(why)

    def chunks(self, chain) -> int:
        """The number of chunks for this chain (validated against its length)."""
        T, k = chain.T, self.segments
        if k is None:
            return default_segments(T)
        if chain.varies_in_length:
            return min(k, T)
        if k > T:
            raise ValueError(f"torch-checkpoint: segments must be an int from 1 to T={T} (the number of chunks the "
                             f"segment is cut into; None picks round(sqrt(T)) = {default_segments(T)}), got {k!r}")
        return k

    def run_chain(self, chain, start, *, end=None, grad_end=None, grad_start=False):
        if self.fused and (grad_end is not None or grad_start):
            raise ValueError("method 'torch-checkpoint' with fused=True runs one whole language-model segment; it "
                             "cannot take or return gradients at the segment's ends")
        k = self.chunks(chain)
        bounds = piece_bounds(chain.T, k)
        chunk = _fused_chunk if self.fused else _loop_chunk
        before = chain.counters["forward_steps"]
        carry = chain.leaf(start) if grad_start else start     # ``end`` is not needed: chunks run from state 0
        first, losses = carry, []
        for a, b in zip(bounds, bounds[1:]):
            carry, chunk_losses = checkpoint(chunk, chain, a, b, carry, use_reentrant=False)
            losses.extend(chunk_losses)
        total = torch.stack([loss.detach() for loss in losses]).sum()
        chain.backward(losses, carry, grad_end)
        stats = {"forward_steps": chain.counters["forward_steps"] - before, "stored_states_peak": k,
                 "graph_steps_peak": bounds[1] - bounds[0], "segments": k}
        return ChainResult(loss=total, final=carry, start_grads=first.grads() if grad_start else None, stats=stats)


__all__ = ["TorchCheckpoint"]
