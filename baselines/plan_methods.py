"""The baseline training methods, registered in ``revbench.methods``.

- ``"checkpoint"``: Chen et al.'s checkpointing; ``segments=None`` (round(sqrt(T)) pieces) or an int;
  ``recursive=True`` for the bisecting O(log T)-memory form.
- ``"gruslys"``: Gruslys et al.'s optimal policy under a slot budget: exactly one of ``slots=`` (int),
  ``budget=`` (fraction of T) or ``budget_bytes=`` (bytes of stored states); none given means ``budget=0.05``.
  ``policy="hsm"`` (states only) or ``"mixed"`` (states and recorded step graphs).
- ``"bptt-fused"``: full BPTT through the fused kernels of ``torch.nn.LSTM`` / ``torch.nn.GRU`` (cuDNN on a GPU)
  with the parameters of the model's ``"lstm"`` / ``"gru"`` cells and the segment's dropout masks.

The recomputing methods build a plan (``baselines.schedules``) and run it with ``baselines.executor``; they work
on every cell type (for reversible cells a stored state is the whole Carry: fixed-point integers and live buffer;
no word stack is kept). Their stats add to the segment's: ``forward_steps`` (step evaluations, recomputation
included), ``stored_states_peak`` (states in slots at once, state 0 included, the working state not),
``recorded_steps_peak``, ``slots_peak``, ``graph_steps_peak`` (steps whose autograd graph was alive at once),
``slots`` / ``segments`` (the plan's parameters).
"""
from __future__ import annotations

import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from revbench.core.functional import embedding_into, linear_into
from revbench.methods import Method, register
from revbench.models.segment import IGNORE, Carry, LayerState

from baselines.checkpointing import chen_plan, recursive_plan
from baselines.executor import execute
from baselines.gruslys import hsm_plan, mixed_plan, resolve_slots


class _PlanMethod(Method):
    """Runs a plan made per segment length (cached: plans depend only on T and the options)."""

    def __init__(self):
        self._plans = {}

    def make_plan(self, seg, carry):
        raise NotImplementedError

    def run(self, seg, carry):
        plan = self.make_plan(seg, carry)
        ex = execute(plan, seg, carry)
        loss = torch.stack(ex.losses).sum()
        extra = ex.stats.as_dict()
        extra["plan_policy"] = plan.policy
        extra.update(plan.params)
        if plan.slots is not None:
            extra["slots"] = plan.slots
        return loss, ex.final, extra


@register("checkpoint")
class Checkpoint(_PlanMethod):
    """Chen et al. (2016): keep the state at each piece boundary, re-run each piece with autograd on the way back.

    ``segments``: number of pieces (None: round(sqrt(T))). ``recursive=True``: bisect down to single steps
    (O(log2 T) stored states, O(T log T) forward work); ``segments`` does not apply to it.
    """

    def __init__(self, segments: int | None = None, recursive: bool = False):
        super().__init__()
        if not isinstance(recursive, bool):
            raise ValueError(f"checkpoint: recursive must be True or False, got {recursive!r}")
        if segments is not None and (isinstance(segments, bool) or not isinstance(segments, numbers.Integral)
                                     or segments < 1):
            raise ValueError(f"checkpoint: segments must be a positive int or None (round(sqrt(T))), got {segments!r}")
        if recursive and segments is not None:
            raise ValueError("checkpoint: segments applies to the flat form only; the recursive form bisects "
                             "(drop segments= or recursive=True)")
        self.segments, self.recursive = (None if segments is None else int(segments)), recursive

    def options(self):
        opts = {}
        if self.segments is not None:
            opts["segments"] = self.segments
        if self.recursive:
            opts["recursive"] = True
        return opts

    def make_plan(self, seg, carry):
        if seg.T not in self._plans:
            self._plans[seg.T] = recursive_plan(seg.T) if self.recursive else chen_plan(seg.T, self.segments)
        return self._plans[seg.T]


@register("gruslys")
class Gruslys(_PlanMethod):
    """Gruslys et al. (2016): the recomputation-minimising policy for a fixed number of slots (dynamic programming).

    Budget: exactly one of ``slots`` (stored states, state 0 included), ``budget`` (fraction of T in (0, 1]:
    max(1, round-half-up(budget * T)) slots) or ``budget_bytes`` (divided by the bytes of one stored state of
    this model and batch, ``Carry.nbytes()``); none given means ``budget=0.05``. ``policy``: ``"hsm"`` (hidden
    states only) or ``"mixed"`` (also keeps single steps' graphs, each counted as one slot: alpha = 1).
    """

    POLICIES = ("hsm", "mixed")

    def __init__(self, slots: int | None = None, budget: float | None = None, budget_bytes: int | None = None,
                 policy: str = "hsm"):
        super().__init__()
        if policy not in self.POLICIES:
            raise ValueError(f"gruslys: policy must be one of {', '.join(self.POLICIES)}, got {policy!r}")
        if slots is None and budget is None and budget_bytes is None:
            budget = 0.05
        # validate the budget now; the byte form needs the state size, known per segment
        given = [v for v in (slots, budget, budget_bytes) if v is not None]
        if len(given) > 1 or budget_bytes is None:
            resolve_slots(1, slots=slots, budget=budget, budget_bytes=budget_bytes, state_bytes=1)
        elif isinstance(budget_bytes, bool) or not isinstance(budget_bytes, numbers.Integral) or budget_bytes < 1:
            raise ValueError(f"gruslys: budget_bytes={budget_bytes!r} is impossible; need a positive int of bytes, "
                             f"at least one stored state's worth")
        self.slots, self.budget, self.budget_bytes, self.policy = slots, budget, budget_bytes, policy

    def options(self):
        opts = {k: v for k, v in (("slots", self.slots), ("budget", self.budget), ("budget_bytes", self.budget_bytes))
                if v is not None}
        opts["policy"] = self.policy
        return opts

    def make_plan(self, seg, carry):
        m = resolve_slots(seg.T, slots=self.slots, budget=self.budget, budget_bytes=self.budget_bytes,
                          state_bytes=carry.nbytes() if self.budget_bytes is not None else None)
        key = (seg.T, m)
        if key not in self._plans:
            self._plans[key] = (mixed_plan if self.policy == "mixed" else hsm_plan)(seg.T, m)
        return self._plans[key]


# ---------------------------------------------------------------------------------------------- fused BPTT
# torch.lstm / torch.gru are the kernels nn.LSTM / nn.GRU call (cuDNN on a GPU). Calling them with the model's own
# weight list (rather than nn.LSTM through torch.func.functional_call) keeps the model's parameters untouched:
# nn.LSTM.flatten_parameters would re-point their storage into a flat cuDNN buffer on every call.
_KERNELS = {"lstm": torch.lstm, "gru": torch.gru}


@register("bptt-fused")
class FusedBPTT(Method):
    """Full BPTT through the framework's fused recurrent kernel (what torch.nn.LSTM / torch.nn.GRU run; cuDNN on a
    GPU).

    Uses the parameters of the model's "lstm" / "gru" cells (same layout and equations) and the segment's dropout
    masks (embedding dropout, locked dropout on inputs, between layers and outputs, weight-drop), so its gradients
    equal "bptt"'s up to rounding. Layers run in one multi-layer call when nothing happens between them (no
    between-layer dropout, equal sizes), else one call per layer. Padding (``lengths``) runs as packed sequences.
    """

    def check_model(self, model):
        if model.cell_type not in _KERNELS:
            raise ValueError(f"method 'bptt-fused' runs torch.nn.LSTM / torch.nn.GRU: it needs cell 'lstm' or 'gru', "
                             f"got {model.cell_type!r}; use 'bptt' (the step loop) for the other cells")

    def run(self, seg, carry):
        model, kind, masks = seg.model, seg.model.cell_type, seg.masks
        x = embedding_into(model.encoder.weight, seg.inputs, masks.emb_rows)          # (T, B, E)
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
            x, hn = _fused(kind, x, hx, weights, len(group), seg.lengths)
            for k, l in enumerate(group):
                finals[l] = LayerState(None, tuple(h[k] for h in hn), None)
            last = group[-1]
            if last < len(sizes) - 1 and masks.between and masks.between[last] is not None:
                x = x * masks.between[last]
        if masks.outputs is not None:
            x = x * masks.outputs
        logits = linear_into(x, model.decoder.weight, model.decoder.bias)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seg.targets.reshape(-1), reduction="sum",
                               ignore_index=IGNORE) / seg.n_tokens
        loss.backward()
        T = seg.T
        return loss, Carry(tuple(finals)), {"forward_steps": T, "stored_states_peak": T, "graph_steps_peak": T}


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


__all__ = ["Checkpoint", "Gruslys", "FusedBPTT"]
