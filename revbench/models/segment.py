"""One truncated-BPTT segment of a language model: the primitive every training method is built from.

A method decides which states to keep and what to recompute; the Segment runs
single steps. ``advance`` runs step t forward (with or without autograd),
``reverse`` rebuilds the state before step t exactly (reversible cells),
``leaf`` starts a recomputed stretch, ``backward`` backpropagates a stretch, and
``finish`` chains the gradients of per-segment dropped weights into parameters.

A ``Carry`` (the state between two steps) is immutable. For reversible cells it
holds the fixed-point integers, their float values, and the live part of each
layer's information buffer (part of the exact state: it feeds bits back into
h). The buffer's emitted words go to per-layer ``WordStack``s only when the
segment is built with ``keep_words=True`` (the reversible method); the forward
values are identical either way.
"""
from __future__ import annotations

import math

import torch

from revbench.core.buffer import WordStack
from revbench.core.buffer_reference import attach_lm, reference_bits, simulation_on
from revbench.core.fixedpoint import from_fixed
from revbench.core.functional import IGNORE, Targets, embedding_into, output_loss, scope
from revbench.core.state import (Carry, LayerState, StateUndoer, StateUpdater, buffer_bits_allocated, buffers_empty,
                                 check_float_dtype, check_lengths, col, leaf_carry, start_carry)


class Segment:
    """See the module docstring. ``inputs``/``targets``: LongTensor (T, B); ``lengths``: optional (B,) valid steps."""

    varies_in_length = False      # a language model's segments have the length the caller chose
    needs_final = True            # the final state starts the next segment

    def __init__(self, model, inputs, targets, lengths=None, keep_words: bool = False):
        self.model = model
        self.inputs, self.targets, self.lengths = _validate_segment(model, inputs, targets, lengths)
        self.T, self.B = self.inputs.shape
        self.dtype = model.float_dtype()
        check_float_dtype(model.cells, self.dtype)
        self.device = model.encoder.weight.device
        self.masks = model.sample_masks(self.B)
        self.keep_words = keep_words
        self.stacks = [WordStack(self.B * c.half, self.device) if (keep_words and c.reversible and c.forgets) else None
                       for c in model.cells]
        if keep_words and simulation_on():     # the reference's whole-chunk buffer on the same gates (measured step)
            attach_lm(self.stacks, [c.half for c in model.cells])
        if self.lengths is not None:
            steps = torch.arange(self.T, device=self.device).unsqueeze(1)
            self.step_masks = steps < self.lengths.to(self.device).unsqueeze(0)           # (T, B)
            self.targets = torch.where(self.step_masks, self.targets, torch.full_like(self.targets, IGNORE))
            self.n_tokens = int(self.step_masks.sum())
        else:
            self.step_masks = None
            self.n_tokens = self.T * self.B
        if self.n_tokens == 0:
            raise ValueError("the segment has no target tokens (all lengths are 0)")
        self._prepared = None          # the output layer's targets, prepared at the first loss (``_loss``)
        # per-segment dropped recurrent weights, as autograd leaves whose grads ``finish`` chains to parameters
        self.weight_leaves = []
        for c, wm in zip(model.cells, self.masks.weights):
            W = dict(c.named_parameters())
            for name, mask in wm.items():
                if mask is not None:
                    W[name] = (W[name] * mask).detach().requires_grad_(W[name].requires_grad)
            self.weight_leaves.append(W)
        self.counters = {"forward_steps": 0, "reverse_steps": 0}
        self.ideal_bits = {}          # step -> tensor: bits forgotten (sum of -log2 z_q, the applied gates), set once per step
        self.buffer_bits_peak = 0

    # ------------------------------------------------------------------ states
    def start(self, state) -> Carry:
        _validate_state(self.model, state, self.B)
        return start_carry(self.model.cells, state, self.B, self.dtype, self.device)

    def leaf(self, carry: Carry) -> Carry:
        """Same exact values; float tensors are fresh autograd leaves."""
        return leaf_carry(carry, self.dtype)

    def final_state(self, carry: Carry):
        return [tuple(p.detach() for p in (ls.ints if ls.ints is not None else ls.floats)) for ls in carry.layers]

    # ------------------------------------------------------------------ steps
    def _embed(self, t):
        with scope("revbench.output"):
            x = embedding_into(self.model.encoder.weight, self.inputs[t], self.masks.emb_rows)
            return x if self.masks.inputs is None else x * self.masks.inputs

    def _between(self, layer, x):
        if layer < len(self.model.cells) - 1:
            m = self.masks.between[layer] if self.masks.between else None
            return x if m is None else x * m
        return x

    def advance(self, t: int, carry: Carry, grad: bool = False, known: Carry | None = None, loss: bool = True):
        """Step t: Carry(t) -> (Carry(t+1), loss_t). ``known``: the exact Carry(t+1), when already known (replay).
        ``loss=False``: skip the output layer and the loss, return (Carry(t+1), None); a forward pass whose losses
        are thrown away (reversible backprop's) saves the step's largest matrix product, and a replay whose loss
        ``loss_and_grads`` took care of records only the cells."""
        self.counters["forward_steps"] += 1
        mask = None if self.step_masks is None else self.step_masks[t]
        with torch.set_grad_enabled(grad):
            x = self._embed(t)
            new_layers, ideal = [], None
            for l, (cell, ls) in enumerate(zip(self.model.cells, carry.layers)):
                W = self.weight_leaves[l]
                if cell.reversible:
                    upd = StateUpdater(self.stacks[l], cell.parts, self.dtype, ls, mask,
                                       None if known is None else known.layers[l])
                    cell.step(x, ls.floats, upd, W)
                    new = upd.result()
                    if upd.ideal is not None:
                        ideal = upd.ideal if ideal is None else ideal + upd.ideal
                else:
                    floats = cell.step(x, ls.floats, W)
                    if mask is not None:
                        floats = tuple(torch.where(col(mask), f, o) for f, o in zip(floats, ls.floats))
                    new = LayerState(None, tuple(floats), None)
                new_layers.append(new)
                if loss or l < len(self.model.cells) - 1:     # the top layer's output feeds only the loss
                    x = self._between(l, cell.output(new.floats))
            if ideal is not None and known is None:
                self.ideal_bits[t] = ideal
            loss = self._loss(t, x) if loss else None
        out = Carry(tuple(new_layers))
        if self.keep_words and known is None:
            self.buffer_bits_peak = max(self.buffer_bits_peak, self.buffer_bits_allocated(out))
        return out, loss

    def _loss(self, t: int, x):
        with scope("revbench.output"):
            if self.masks.outputs is not None:
                x = x * self.masks.outputs
            if self._prepared is None:
                self._prepared = Targets.of(self.targets, self.dtype)
            return output_loss(x, self.model.decoder.weight, self.model.decoder.bias, self._prepared[t],
                               self.n_tokens)

    def loss_and_grads(self, t: int, carry: Carry):
        """Step t's loss and its gradient with respect to Carry(t+1) = ``carry`` (a list like ``carry.floats()``,
        None where the loss does not reach), from that state alone; the output layer's weight gradients go into
        ``.grad``. The same loss and gradients as ``advance(t, ..., grad=True)`` followed by ``backward``: the top
        layer's output is a function of Carry(t+1) only. Reversible backprop calls it before re-running step t's
        cells with ``loss=False``, so the output layer's [B, vocab] buffer and the cells' graph are never alive
        together."""
        top = len(self.model.cells) - 1
        floats = [f.detach().requires_grad_() for f in carry.layers[top].floats]
        with torch.enable_grad():
            loss = self._loss(t, self._between(top, self.model.cells[top].output(floats)))
            got = torch.autograd.grad(loss, floats, allow_unused=True)
        below = sum(len(ls.floats) for ls in carry.layers[:top])
        return loss.detach(), [None] * below + list(got)

    @torch.no_grad()
    def reverse(self, t: int, carry: Carry) -> Carry:
        """Rebuild Carry(t) exactly from Carry(t+1), popping the buffers' words (needs keep_words=True)."""
        if not self.keep_words:
            raise RuntimeError("this segment was built without keep_words=True: its buffers cannot be reversed")
        self.counters["reverse_steps"] += 1
        mask = None if self.step_masks is None else self.step_masks[t]
        cells = self.model.cells
        prev = list(carry.layers)
        for l in range(len(cells) - 1, -1, -1):          # from the top: a layer's input is the layer below at t
            cell, ls = cells[l], carry.layers[l]
            if not cell.reversible:
                raise ValueError(f"cell {self.model.cell_type!r} is not reversible")
            x = self._embed(t) if l == 0 else self._between(l - 1, cells[l - 1].output(carry.layers[l - 1].floats))
            undo = StateUndoer(self.stacks[l], ls, mask)
            ints = cell.reverse(x, ls.ints, undo, self.weight_leaves[l], self.dtype)
            prev[l] = LayerState(ints, tuple(from_fixed(p, self.dtype) for p in ints), undo.bx)
        return Carry(tuple(prev))

    # ------------------------------------------------------------------ gradients
    def backward(self, losses, carry_end: Carry | None = None, grads_end=None) -> None:
        outs, grads = [], []
        if losses:
            outs.append(torch.stack(list(losses)).sum() if len(losses) > 1 else losses[0])
            grads.append(None)
        if carry_end is not None and grads_end is not None:
            for f, g in zip(carry_end.floats(), grads_end):
                if f.requires_grad and g is not None:
                    outs.append(f)
                    grads.append(g)
        if outs:
            torch.autograd.backward(outs, [g for g in grads])

    def finish(self) -> None:
        """Chain the gradients accumulated on the dropped-weight leaves into the parameters."""
        for c, wm, W in zip(self.model.cells, self.masks.weights, self.weight_leaves):
            params = dict(c.named_parameters())
            for name, mask in wm.items():
                leaf = W[name]
                if mask is not None and leaf.grad is not None:
                    g = leaf.grad * mask
                    p = params[name]
                    p.grad = g if p.grad is None else p.grad.add_(g)
                    leaf.grad = None

    # ------------------------------------------------------------------ accounting
    def buffer_bits_allocated(self, carry: Carry) -> int:
        return buffer_bits_allocated(carry, self.stacks)

    def buffers_empty(self, carry: Carry) -> bool:
        return buffers_empty(carry, self.stacks)

    def stats(self) -> dict:
        """The paper's model-level figures for this segment (see PAPER.md, 'Counting memory')."""
        steps = self.n_tokens                         # valid (step, batch element) pairs
        per_unit = 0
        for c in self.model.cells:
            per_unit += c.hidden_size * (2 if ("c" in c.parts or "c1" in c.parts) else 1)
        baseline = 32 * steps * per_unit
        s = {"state_bits_baseline": baseline, "tokens": self.n_tokens, "seq_len": self.T, "batch_size": self.B,
             "forward_steps": self.counters["forward_steps"], "reverse_steps": self.counters["reverse_steps"],
             "buffer_bits_actual": None, "buffer_bits_ideal": None, "saving_actual": None, "saving_ideal": None,
             "buffer_efficiency": None, "buffer_bits_reference": None}
        if self.ideal_bits:
            ideal = float(torch.stack(list(self.ideal_bits.values())).sum())
            s["buffer_bits_ideal"] = ideal
            s["saving_ideal"] = baseline / ideal if ideal > 0 else math.inf
        if self.keep_words and any(st is not None for st in self.stacks):
            actual = self.buffer_bits_peak
            s["buffer_bits_actual"] = actual
            s["buffer_bits_reference"] = reference_bits(self.stacks)
            s["saving_actual"] = baseline / actual if actual else math.inf
            if s["buffer_bits_ideal"]:
                s["buffer_efficiency"] = actual / s["buffer_bits_ideal"]
        return s


# ---------------------------------------------------------------------- validation
def _validate_segment(model, inputs, targets, lengths):
    for name, t in (("inputs", inputs), ("targets", targets)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.LongTensor of shape (T, B), got {type(t).__name__}")
        if t.dtype != torch.int64:
            raise TypeError(f"{name} must be a LongTensor (int64 token ids) of shape (T, B), got dtype {t.dtype}")
        if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 1:
            raise ValueError(f"{name} must have shape (T, B) with T, B >= 1, got {tuple(t.shape)}")
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must have the same shape")
    V = model.vocab_size
    if int(inputs.min()) < 0 or int(inputs.max()) >= V:
        raise ValueError(f"input token ids must be in [0, {V}), got range [{int(inputs.min())}, {int(inputs.max())}]")
    if int(targets.min()) < 0 or int(targets.max()) >= V:
        raise ValueError(f"target token ids must be in [0, {V}), got range [{int(targets.min())}, {int(targets.max())}]")
    dev = model.encoder.weight.device
    if lengths is not None:
        lengths = check_lengths("lengths", lengths)
        if lengths.dim() != 1 or lengths.shape[0] != inputs.shape[1]:
            raise ValueError(f"lengths must have shape ({inputs.shape[1]},) (one per batch element), "
                             f"got {tuple(lengths.shape)}")
        if int(lengths.min()) < 0 or int(lengths.max()) > inputs.shape[0]:
            raise ValueError(f"lengths must be in [0, T={inputs.shape[0]}], got range "
                             f"[{int(lengths.min())}, {int(lengths.max())}]")
        lengths = lengths.to(dev)
    return inputs.to(dev), targets.to(dev), lengths


def _validate_state(model, state, batch_size):
    if not isinstance(state, (list, tuple)) or len(state) != len(model.cells):
        raise ValueError(f"state must be a list with one tuple per layer ({len(model.cells)}), as returned by "
                         f"model.init_state(batch_size) or a previous step's out.state")
    for l, (c, parts) in enumerate(zip(model.cells, state)):
        shapes = c.part_shapes(batch_size)
        if not isinstance(parts, (list, tuple)) or len(parts) != len(shapes):
            raise ValueError(f"state of layer {l} must be a tuple of {len(shapes)} tensors {c.parts}")
        for name, p, shape in zip(c.parts, parts, shapes):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"state {name} of layer {l} is {'None' if p is None else type(p).__name__}, not a "
                                f"tensor; start from model.init_state(batch_size) or a previous step's out.state")
            if p.device != model.encoder.weight.device:
                raise ValueError(f"state {name} of layer {l} is on device {p.device}, but the model is on "
                                 f"{model.encoder.weight.device}; move the state with .to(device)")
            if p.dim() != 2 or p.shape[1] != shape[1]:
                raise ValueError(f"state {name} of layer {l} has shape {tuple(p.shape)}, expected {shape}")
            if p.shape[0] != batch_size:
                raise ValueError(f"the state is for batch size {p.shape[0]} but the inputs have batch size "
                                 f"{batch_size}; start from model.init_state({batch_size})")
            want = torch.int64 if c.reversible else model.float_dtype()
            if p.dtype != want:
                raise TypeError(f"state {name} of layer {l} has dtype {p.dtype}, expected {want} "
                                f"({'fixed-point integers' if c.reversible else 'the model dtype'})")
