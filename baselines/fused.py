"""Full BPTT through the framework's fused recurrent kernels (``torch.nn.LSTM`` / ``torch.nn.GRU``; cuDNN on a
GPU), registered in ``revbench.methods`` as ``"bptt-fused"``: the language model's cells ``"lstm"`` / ``"gru"``
only, with their parameters and the segment's dropout masks.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from revbench.core.functional import IGNORE, embedding_into, linear_into
from revbench.core.protocol import ChainResult, Method
from revbench.core.state import Carry, LayerState

# ---------------------------------------------------------------------------------------------- fused BPTT
# torch.lstm / torch.gru are the kernels nn.LSTM / nn.GRU call (cuDNN on a GPU). Calling them with the model's own
# weight list (rather than nn.LSTM through torch.func.functional_call) keeps the model's parameters untouched:
# nn.LSTM.flatten_parameters would re-point their storage into a flat cuDNN buffer on every call.
_KERNELS = {"lstm": torch.lstm, "gru": torch.gru}


class FusedBPTT(Method):
    """Full BPTT through the framework's fused recurrent kernel (what torch.nn.LSTM / torch.nn.GRU run; cuDNN on a
    GPU).

    Uses the parameters of the model's "lstm" / "gru" cells (same layout and equations) and the segment's dropout
    masks (embedding dropout, locked dropout on inputs, between layers and outputs, weight-drop), so its gradients
    equal "bptt"'s up to rounding. Layers run in one multi-layer call when nothing happens between them (no
    between-layer dropout, equal sizes), else one call per layer. Padding (``lengths``) runs as packed sequences.
    """

    name = "bptt-fused"

    @classmethod
    def supports(cls, cell, kind="lm"):
        if kind != "lm":
            return False, (f"method 'bptt-fused' is not available for the encoder-decoder: torch's fused kernels "
                           f"run over a whole sequence, which leaves no place for its per-step attention; use "
                           f"'bptt', 'checkpoint', 'gruslys' or 'reversible'")
        if cell not in _KERNELS:
            return False, (f"method 'bptt-fused' runs torch.nn.LSTM / torch.nn.GRU: it needs cell 'lstm' or 'gru', "
                           f"got {cell!r}; use 'bptt' (the step loop) for the other cells")
        return True, ""

    def run_chain(self, seg, carry, *, end=None, grad_end=None, grad_start=False):
        if grad_end is not None or grad_start:
            raise ValueError("method 'bptt-fused' runs one whole language-model segment; it cannot take or "
                             "return gradients at the segment's ends")
        final, loss, logits = fused_steps(seg, carry, 0, seg.T, seg.lengths)
        loss.backward()          # logits stay referenced through it, as in a user's step (the measured peak)
        del logits
        T = seg.T
        return ChainResult(loss=loss.detach(), final=final,
                           stats={"forward_steps": T, "stored_states_peak": T, "graph_steps_peak": T})


def fused_steps(seg, carry, a: int, b: int, lengths):
    """Steps a .. b-1 of a language-model segment through the fused kernel, output layer and loss included:
    (state b as a Carry, the steps' loss: the sum of their token cross-entropies / the segment's tokens, and
    the logits). ``lengths``: valid steps per batch row counted from step a (None: all valid)."""
    model, masks = seg.model, seg.masks
    x = embedding_into(model.encoder.weight, seg.inputs[a:b], masks.emb_rows)          # (n, B, E)
    if masks.inputs is not None:
        x = x * masks.inputs
    sizes = model.hidden_sizes
    groups = [list(range(len(sizes)))]
    if len(sizes) > 1 and (any(m is not None for m in masks.between) or len(set(sizes)) > 1):
        groups = [[l] for l in range(len(sizes))]
    finals = [None] * len(sizes)
    for group in groups:
        weights = [seg.weight_leaves[l][name] for l in group
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        n_parts = len(model.cells[group[0]].parts)
        hx = [torch.stack([carry.layers[l].floats[i] for l in group]) for i in range(n_parts)]
        x, hn = _fused(model.cell_type, x, hx, weights, len(group), lengths)
        for k, l in enumerate(group):
            finals[l] = LayerState(None, tuple(h[k] for h in hn), None)
        last = group[-1]
        if last < len(sizes) - 1 and masks.between and masks.between[last] is not None:
            x = x * masks.between[last]
    if masks.outputs is not None:
        x = x * masks.outputs
    logits = linear_into(x, model.decoder.weight, model.decoder.bias)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seg.targets[a:b].reshape(-1), reduction="sum",
                           ignore_index=IGNORE) / seg.n_tokens
    return Carry(tuple(finals)), loss, logits


def _fused(kind, x, hx, weights, layers, lengths):
    """Run the fused kernel over (T, B, in) from ``hx`` (list of (layers, B, H)); returns (output, list of h_n)."""
    kernel = _KERNELS[kind]
    with warnings.catch_warnings():
        # cuDNN copies weights that are not one contiguous buffer (always so here: they are the model's cell
        # parameters, or weight-dropped copies as in AWD-LSTM) and warns on every call
        warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk of memory.*")
        if lengths is None:
            res = kernel(x, tuple(hx) if kind == "lstm" else hx[0], weights, True, layers, 0.0, False, False, False)
            return res[0], list(res[1:])
        T, B = x.shape[0], x.shape[1]
        keep = torch.nonzero(lengths > 0).flatten()        # packing needs lengths >= 1: length-0 rows keep hx
        if keep.numel() == 0:
            raise ValueError("bptt-fused: every sequence in the batch has length 0")
        packed = nn.utils.rnn.pack_padded_sequence(x.index_select(1, keep), lengths.index_select(0, keep).cpu(),
                                                   enforce_sorted=False)
        order = keep.index_select(0, packed.sorted_indices.to(keep.device))   # batch rows in packed order
        h_sorted = [h.index_select(1, order) for h in hx]
        res = kernel(packed.data, packed.batch_sizes, tuple(h_sorted) if kind == "lstm" else h_sorted[0], weights,
                     True, layers, 0.0, False, False)
        out = nn.utils.rnn.PackedSequence(res[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=T)          # (T, len(keep), H), rows as keep
        full = torch.zeros(T, B, out.shape[-1], dtype=out.dtype, device=out.device).index_copy(1, keep, out)
        hn = [h0.index_copy(1, order, h) for h0, h in zip(hx, res[1:])]
        return full, hn

