"""Attention encoder-decoder whose encoder and decoder are reversible (MacKay et al. 2018, section 5).

Model
-----
* Encoder: a stack of cells over the source (any cell of ``revbench.core.cells``). With a reversible cell every
  layer keeps its state in fixed point with its own information buffer, exactly as the language model does
  (the per-part update is ``revbench.models.segment.StateUpdater`` / ``StateUndoer``).
* Attention slice: the first ``slice_dim`` units of the TOP encoder layer's first half h1 are not forgotten
  through the buffer. At every step those units are multiplied by z = 2**RZ in the buffer operation (the
  identity: no word is emitted, the buffer is untouched), then overwritten with their true value
  ``to_fixed(z * h1_prev + (1 - z) * g)`` (the ordinary, lossy update), and that value is stored (int32 while
  it fits, else int64). During reversal the cell undoes the step (the slice units come out wrong, since the
  overwrite destroyed information) and the slice is then written back from the store. The slice store is
  what attention attends over, next to the source embeddings, which are recomputed from the tokens.
* Context (``ContextSpec``): ``h:D`` (the slice), ``emb`` (source embeddings), ``emb+h:D`` (both, the paper's
  choice) or ``all`` (every top-layer hidden state stored: the non-saving reference).
* Decoder: a stack of the same cell with its own buffer, started from the encoder's final state. Luong
  "general" attention (score_s = h_dec^T W_a c_s, softmax over the valid source positions), no input
  feeding, attentional state tanh(W_c [h_dec; a]) -> vocabulary logits. Since nothing feeds back from
  attention into the decoder state, the decoder's forward pass needs no attention at all: attention, logits
  and loss of step t are computed only when step t is replayed during the reverse pass.
* Dropout (rate ``dropout``): locked masks (one per sequence, shared by all steps) on the source and target
  embeddings, between layers and on the attentional state; sampled once per batch, reused by every replay.
* Padding: sources and targets are padded at the end; a padded step leaves the state, the buffer and the
  loss unchanged (z = 2**RZ and a zero update, the masking of ``StateUpdater``), and attention never sees a
  padded source position.

Training methods for a batch (``get_method``): ``"bptt"`` (autograd through the same exact forward) and
``"reversible"`` (forward without a graph keeping only the final states, the buffers and the slice; then the
decoder's reverse pass, which recomputes attention/logits/loss per step and accumulates the gradient with
respect to the slice; then the encoder's reverse pass, started from the gradient with respect to its final
state and fed the slice gradients step by step), and the recomputing baselines ``"checkpoint"`` and
``"gruslys"`` (``Seq2SeqPlanned``: the language model's plans, run over each side with ``baselines.executor``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from revbench.core.buffer import WordStack, empty_buffer
from revbench.core.cells import CELL_TYPES, REVERSIBLE_CELLS, make_cell, validate_max_forget_bits
from revbench.core.fixedpoint import SCALE, check_state, from_fixed, to_fixed
from revbench.core.functional import embedding_into, linear_into, straight_through
from revbench.core.protocol import StepOutput
from revbench.models.segment import (IGNORE, Carry, LayerState, StateUndoer, StateUpdater, _col, buffer_bits_allocated,
                      buffers_empty, leaf_carry)

_INT32_MAX = (1 << 31) - 1


# ------------------------------------------------------------------------------------------------ context
@dataclass(frozen=True)
class ContextSpec:
    """What attention attends over: source embeddings (``emb``), the stored slice of ``slice_dim`` units of the
    top encoder layer's h1 (``h:D``), both, or every top-layer hidden state (``all``)."""

    emb: bool = True
    slice_dim: int = 0
    all_hidden: bool = False

    @classmethod
    def parse(cls, spec) -> "ContextSpec":
        if isinstance(spec, ContextSpec):
            return spec
        text = str(spec).strip().lower()
        if text == "all":
            return cls(emb=False, slice_dim=0, all_hidden=True)
        emb, dim = False, 0
        for part in text.split("+"):
            part = part.strip()
            m = re.fullmatch(r"h:(\d+)", part)
            if part == "emb" and not emb:
                emb = True
            elif m and dim == 0 and int(m.group(1)) > 0:
                dim = int(m.group(1))
            else:
                raise ValueError(f"bad context {spec!r}: use 'h:D' (D > 0 stored hidden units), 'emb', 'emb+h:D' "
                                 f"or 'all' (every top-layer hidden state)")
        return cls(emb=emb, slice_dim=dim, all_hidden=False)

    def __str__(self) -> str:
        if self.all_hidden:
            return "all"
        parts = (["emb"] if self.emb else []) + ([f"h:{self.slice_dim}"] if self.slice_dim else [])
        return "+".join(parts)

    def hidden_dim(self, hidden_size: int) -> int:
        """Width of the stored hidden part of the context."""
        return hidden_size if self.all_hidden else self.slice_dim

    def size(self, emb_size: int, hidden_size: int) -> int:
        return (emb_size if self.emb else 0) + self.hidden_dim(hidden_size)


# ------------------------------------------------------------------------------------------------ model
@dataclass
class Seq2SeqMasks:
    """Dropout masks of one batch (None = no dropout there); locked: one mask per sequence for all steps."""
    src_in: torch.Tensor | None = None          # [B, emb]
    tgt_in: torch.Tensor | None = None          # [B, emb]
    enc_between: list = field(default_factory=list)
    dec_between: list = field(default_factory=list)
    out: torch.Tensor | None = None             # [B, hidden] on the attentional state


def _locked(shape, p, like):
    if p <= 0:
        return None
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p) / (1 - p)


class Seq2Seq(nn.Module):
    """Encoder-decoder with Luong "general" attention over a reversible (or ordinary) cell stack.

    Parameters: ``src_emb``/``tgt_emb`` (embeddings), ``enc_cells``/``dec_cells``, ``attn`` (W_a: score =
    h^T W_a c), ``combine`` (W_c: tanh(W_c [h; a])), ``generator`` (logits). All initialised uniform in
    +-``init_range`` (the paper's 0.1).
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, emb_size: int = 300, hidden_size: int = 300,
                 num_layers: int = 1, cell: str = "revgru", max_forget_bits: int | None = 3,
                 context="emb+h:20", dropout: float = 0.0, init_range: float = 0.1):
        super().__init__()
        if cell not in CELL_TYPES:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELL_TYPES)}")
        for name, v in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab), ("emb_size", emb_size),
                        ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not init_range > 0:
            raise ValueError(f"init_range must be positive, got {init_range!r}")
        self.context = ContextSpec.parse(context)
        reversible = cell in REVERSIBLE_CELLS
        if reversible and hidden_size % 2:
            raise ValueError(f"reversible cells split the state in two halves: hidden_size must be even, "
                             f"got {hidden_size}")
        limit = hidden_size // 2 if reversible else hidden_size
        if self.context.slice_dim > limit:
            raise ValueError(f"context {self.context}: the slice ({self.context.slice_dim} units) must fit in the top "
                             f"layer's {'first half h1' if reversible else 'state'} ({limit} units)")
        self.cell_type = cell
        self.max_forget_bits = validate_max_forget_bits(max_forget_bits) if reversible else None
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.emb_size, self.hidden_size, self.num_layers = emb_size, hidden_size, num_layers
        self.dropout, self.init_range = dropout, init_range
        self.src_emb = nn.Embedding(src_vocab, emb_size)
        self.tgt_emb = nn.Embedding(tgt_vocab, emb_size)
        ins = [emb_size] + [hidden_size] * (num_layers - 1)
        self.enc_cells = nn.ModuleList(make_cell(cell, i, hidden_size, self.max_forget_bits) for i in ins)
        self.dec_cells = nn.ModuleList(make_cell(cell, i, hidden_size, self.max_forget_bits) for i in ins)
        C = self.context.size(emb_size, hidden_size)
        self.attn = nn.Linear(C, hidden_size, bias=False)
        self.combine = nn.Linear(hidden_size + C, hidden_size)
        self.generator = nn.Linear(hidden_size, tgt_vocab)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)

    @property
    def reversible(self) -> bool:
        return self.enc_cells[0].reversible

    @property
    def context_size(self) -> int:
        return self.context.size(self.emb_size, self.hidden_size)

    def float_dtype(self) -> torch.dtype:
        return self.src_emb.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.src_emb.weight.device

    def sample_masks(self, batch_size: int) -> Seq2SeqMasks:
        """Dropout masks of one batch from torch's global RNG (fixed order); none in eval mode."""
        L = self.num_layers
        if not self.training or self.dropout <= 0:
            return Seq2SeqMasks(enc_between=[None] * (L - 1), dec_between=[None] * (L - 1))
        w, p, B = self.src_emb.weight, self.dropout, batch_size
        return Seq2SeqMasks(
            src_in=_locked((B, self.emb_size), p, w), tgt_in=_locked((B, self.emb_size), p, w),
            enc_between=[_locked((B, self.hidden_size), p, w) for _ in range(L - 1)],
            dec_between=[_locked((B, self.hidden_size), p, w) for _ in range(L - 1)],
            out=_locked((B, self.hidden_size), p, w))

    def init_state(self, batch_size: int):
        """Zero encoder state: per layer a tuple of tensors (int64 fixed point for reversible cells)."""
        state = []
        for c in self.enc_cells:
            dt = torch.int64 if c.reversible else self.float_dtype()
            state.append(tuple(torch.zeros(s, dtype=dt, device=self.device) for s in c.part_shapes(batch_size)))
        return state

    def describe(self) -> dict:
        return {"cell": self.cell_type, "num_layers": self.num_layers, "hidden_size": self.hidden_size,
                "emb_size": self.emb_size, "src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab,
                "context": str(self.context), "max_forget_bits": self.max_forget_bits,
                "dropout": self.dropout, "dtype": str(self.float_dtype()).replace("torch.", "")}


# ------------------------------------------------------------------------------------------------ one side
class _SliceUpdater:
    """Wraps the top encoder layer's ``StateUpdater``: part 0 (h1) is updated through the buffer with z = 1 on
    the first ``d`` units, which are then overwritten with their true (lossy) value; see the module docstring.
    Gradients of the slice units follow the real update z * h1_prev + add (straight-through)."""

    def __init__(self, base: StateUpdater, d: int, mask, dtype):
        self.base, self.d, self.mask, self.dtype = base, d, mask, dtype

    def __call__(self, i, z, add):
        b, d = self.base, self.d
        if i != 0:
            return b(i, z, add)
        if z is None:                        # no forgetting: the slice's update is already an exact addition
            return b(0, z, add)
        h_prev_f, h_prev_i = b.floats[0], b.ints[0]
        b(0, torch.cat([torch.ones_like(z[:, :d]), z[:, d:]], dim=-1), add)
        m = _col(self.mask)
        expr = z[:, :d] * h_prev_f[:, :d] + add[:, :d]
        if b.known is None:
            s_int = to_fixed(expr)
            if m is not None:
                s_int = torch.where(m, s_int, h_prev_i[:, :d])
            check_state(s_int, "attention slice of h1")
        else:
            s_int = b.known.ints[0][:, :d]
        ints = torch.cat([s_int, b.ints[0][:, d:]], dim=-1)
        b.ints[0] = ints
        if torch.is_grad_enabled():
            if m is not None:
                expr = torch.where(m, expr, h_prev_f[:, :d])
            f = torch.cat([straight_through(s_int, expr, SCALE, self.dtype), b.floats[0][:, d:]], dim=-1)
        else:
            f = from_fixed(ints, self.dtype)
        b.floats[0] = f
        return f


class _SliceUndoer:
    """Wraps the top encoder layer's ``StateUndoer``: the inverse of ``_SliceUpdater``'s buffer operation
    (z = 1 on the slice units, so they come out wrong and are restored from the store afterwards)."""

    def __init__(self, base: StateUndoer, d: int):
        self.base, self.d = base, d

    @property
    def bx(self):
        return self.base.bx

    def __call__(self, i, h, z, add):
        if i == 0 and z is not None:
            z = torch.cat([torch.ones_like(z[:, :self.d]), z[:, self.d:]], dim=-1)
        return self.base(i, h, z, add)


class _SliceStore:
    """The stored attention slice: one [B, d] integer block per step, int32 while every value fits
    (|h| < 256), upgraded to int64 otherwise. ``initial`` is the slice before step 0."""

    def __init__(self, steps, batch, d, device):
        self.data = torch.zeros((steps, batch, d), dtype=torch.int32, device=device)
        self.initial = None

    def put(self, t, ints):
        if self.data.dtype == torch.int32 and bool((ints.abs() > _INT32_MAX).any()):
            self.data = self.data.to(torch.int64)
        self.data[t] = ints.to(self.data.dtype)

    def get(self, t):
        return self.initial if t < 0 else self.data[t].to(torch.int64)

    def allocated_bits(self) -> int:
        return self.data.numel() * self.data.element_size() * 8


class _Side:
    """One side (encoder or decoder) of a batch: runs its stack of cells one step at a time.

    Duck-types what ``StateUpdater``/``StateUndoer`` read from a segment: ``stacks`` (one ``WordStack`` or
    None per layer), ``model.cells`` and ``dtype``.
    """

    def __init__(self, cells, embed, between, step_masks, keep_words, batch, dtype, device, slice_dim=0):
        self.cells = cells
        self.model = self
        self.embed = embed                      # t -> float input of layer 0 at step t
        self.between = between                  # per layer except the last: dropout mask or None
        self.step_masks = step_masks            # (T, B) bool or None
        self.keep_words = keep_words
        self.dtype, self.device, self.B = dtype, device, batch
        self.weights = [dict(c.named_parameters()) for c in cells]
        self.stacks = [WordStack(batch * c.half, device) if (keep_words and c.reversible and c.forgets) else None
                       for c in cells]
        self.slice_dim = slice_dim if cells[-1].reversible else 0
        T = 0 if step_masks is None else step_masks.shape[0]
        self.slices = _SliceStore(T, batch, slice_dim, device) if (keep_words and self.slice_dim) else None
        self.ideal_bits: dict[int, torch.Tensor] = {}
        self.buffer_bits_peak = 0
        self.counters = {"forward_steps": 0, "reverse_steps": 0}

    # ---------------------------------------------------------------- states
    def start(self, state) -> Carry:
        """Carry from a user state (per layer a tuple: int64 fixed point for reversible cells)."""
        layers = []
        for c, parts in zip(self.cells, state):
            if c.reversible:
                ints = tuple(p.detach() for p in parts)
                bx = empty_buffer((self.B, c.half), self.device) if c.forgets else None
                layers.append(LayerState(ints, tuple(from_fixed(p, self.dtype) for p in ints), bx))
            else:
                layers.append(LayerState(None, tuple(p.detach().to(self.dtype) for p in parts), None))
        carry = Carry(tuple(layers))
        if self.slices is not None:
            self.slices.initial = carry.layers[-1].ints[0][:, :self.slice_dim]
        return carry

    def start_from(self, other: Carry) -> Carry:
        """This side's first Carry from the other side's final one: same values (and autograd graph), fresh
        empty buffers of its own."""
        layers = []
        for c, ls in zip(self.cells, other.layers):
            bx = empty_buffer((self.B, c.half), self.device) if (c.reversible and c.forgets) else None
            layers.append(LayerState(ls.ints, ls.floats, bx))
        return Carry(tuple(layers))

    def leaf(self, carry: Carry) -> Carry:
        return leaf_carry(carry, self.dtype)

    def _mask(self, t):
        return None if self.step_masks is None else self.step_masks[t]

    def _drop(self, l, x):
        if l < len(self.cells) - 1 and self.between and self.between[l] is not None:
            return x * self.between[l]
        return x

    # ---------------------------------------------------------------- steps
    def advance(self, t: int, carry: Carry, grad: bool = False, known: Carry | None = None, x=None, mask=None):
        """Step t: Carry(t) -> (Carry(t+1), top-layer output). ``known``: the exact Carry(t+1) (replay).
        ``x``/``mask`` override the step's input and step mask (decoding, where there is no T)."""
        self.counters["forward_steps"] += 1
        if mask is None:
            mask = self._mask(t)
        top = len(self.cells) - 1
        with torch.set_grad_enabled(grad):
            if x is None:
                x = self.embed(t)
            new_layers, ideal = [], None
            for l, (cell, ls) in enumerate(zip(self.cells, carry.layers)):
                if cell.reversible:
                    upd = StateUpdater(self, l, ls, mask, None if known is None else known.layers[l])
                    u = _SliceUpdater(upd, self.slice_dim, mask, self.dtype) if (l == top and self.slice_dim) else upd
                    cell.step(x, ls.floats, u, self.weights[l])
                    new = upd.result()
                    if upd.ideal is not None:
                        ideal = upd.ideal if ideal is None else ideal + upd.ideal
                else:
                    floats = cell.step(x, ls.floats, self.weights[l])
                    if mask is not None:
                        floats = tuple(torch.where(_col(mask), f, o) for f, o in zip(floats, ls.floats))
                    new = LayerState(None, tuple(floats), None)
                new_layers.append(new)
                out = cell.output(new.floats)
                x = self._drop(l, out)
        carry = Carry(tuple(new_layers))
        if known is None:
            if ideal is not None and t is not None:
                self.ideal_bits[t] = ideal
            if self.slices is not None:
                self.slices.put(t, carry.layers[-1].ints[0][:, :self.slice_dim])
            if self.keep_words:
                self.buffer_bits_peak = max(self.buffer_bits_peak, self.buffer_bits_allocated(carry))
        return carry, out

    @torch.no_grad()
    def reverse(self, t: int, carry: Carry) -> Carry:
        """Rebuild Carry(t) exactly from Carry(t+1), popping buffer words and restoring the stored slice."""
        if not self.keep_words:
            raise RuntimeError("this side was built without keep_words=True: its buffers cannot be reversed")
        self.counters["reverse_steps"] += 1
        mask = self._mask(t)
        prev = list(carry.layers)
        top = len(self.cells) - 1
        for l in range(top, -1, -1):
            cell, ls = self.cells[l], carry.layers[l]
            if not cell.reversible:
                raise ValueError(f"cell {type(cell).__name__} is not reversible")
            x = self.embed(t) if l == 0 else self._drop(l - 1, self.cells[l - 1].output(carry.layers[l - 1].floats))
            undo = StateUndoer(self, l, ls, mask)
            u = _SliceUndoer(undo, self.slice_dim) if (l == top and self.slice_dim) else undo
            ints = list(cell.reverse(x, ls.ints, u, self.weights[l], self.dtype))
            if l == top and self.slice_dim:
                ints[0] = torch.cat([self.slices.get(t - 1), ints[0][:, self.slice_dim:]], dim=-1)
            prev[l] = LayerState(tuple(ints), tuple(from_fixed(p, self.dtype) for p in ints), undo.bx)
        return Carry(tuple(prev))

    # ---------------------------------------------------------------- accounting
    def buffer_bits_allocated(self, carry: Carry) -> int:
        return buffer_bits_allocated(carry, self.stacks)

    def buffers_empty(self, carry: Carry) -> bool:
        return buffers_empty(carry, self.stacks)

    def ideal_total(self) -> float | None:
        if not self.ideal_bits:
            return None
        return float(torch.stack(list(self.ideal_bits.values())).sum())


# ------------------------------------------------------------------------------------------------ a batch
def _validate_batch(model, src, src_lengths, tgt_in, tgt_out, tgt_lengths):
    for name, t in (("src", src), ("tgt_in", tgt_in), ("tgt_out", tgt_out)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 2 or min(t.shape) < 1:
            raise ValueError(f"{name} must be a LongTensor of token ids with shape (steps, batch), got "
                             f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    B = src.shape[1]
    if tgt_in.shape != tgt_out.shape or tgt_in.shape[1] != B:
        raise ValueError(f"tgt_in {tuple(tgt_in.shape)} and tgt_out {tuple(tgt_out.shape)} must have the same shape "
                         f"and the source's batch size {B}")
    for name, t, V in (("src", src, model.src_vocab), ("tgt_in", tgt_in, model.tgt_vocab),
                       ("tgt_out", tgt_out, model.tgt_vocab)):
        if int(t.min()) < 0 or int(t.max()) >= V:
            raise ValueError(f"{name} token ids must be in [0, {V}), got range [{int(t.min())}, {int(t.max())}]")
    out = []
    for name, lens, T in (("src_lengths", src_lengths, src.shape[0]), ("tgt_lengths", tgt_lengths, tgt_in.shape[0])):
        lens = torch.as_tensor(lens)
        if lens.dim() != 1 or lens.shape[0] != B:
            raise ValueError(f"{name} must have shape ({B},), got {tuple(lens.shape)}")
        if int(lens.min()) < 1 or int(lens.max()) > T:
            raise ValueError(f"{name} must be in [1, {T}], got range [{int(lens.min())}, {int(lens.max())}]")
        out.append(lens.to(model.device))
    return out


class BatchRun:
    """One batch of a seq2seq model: its dropout masks, length masks, encoder and decoder ``_Side``s, and the
    attention/loss of one decoder step. Build one per training step (``keep_words=True`` to reverse)."""

    def __init__(self, model: Seq2Seq, src, src_lengths, tgt_in, tgt_out, tgt_lengths, keep_words: bool = False,
                 normalize: str = "tokens", on_phase=None):
        if normalize not in ("tokens", "sents"):
            raise ValueError(f"normalize must be 'tokens' (mean over target tokens) or 'sents' (sum over tokens / "
                             f"sentences, OpenNMT's default), got {normalize!r}")
        src_lengths, tgt_lengths = _validate_batch(model, src, src_lengths, tgt_in, tgt_out, tgt_lengths)
        dev = model.device
        self.model = model
        self.on_phase = on_phase
        self.src, self.tgt_in = src.to(dev), tgt_in.to(dev)
        self.S, self.B = self.src.shape
        self.T = self.tgt_in.shape[0]
        self.dtype = model.float_dtype()
        self.masks = model.sample_masks(self.B)
        self.src_mask = torch.arange(self.S, device=dev).unsqueeze(1) < src_lengths.unsqueeze(0)   # (S, B)
        self.tgt_mask = torch.arange(self.T, device=dev).unsqueeze(1) < tgt_lengths.unsqueeze(0)   # (T, B)
        self.targets = torch.where(self.tgt_mask, tgt_out.to(dev), torch.full_like(self.tgt_in, IGNORE))
        self.n_src = int(self.src_mask.sum())
        self.n_tgt = int(self.tgt_mask.sum())
        self.divisor = self.n_tgt if normalize == "tokens" else self.B
        spec = model.context
        self.enc = _Side(model.enc_cells, self._src_embed, self.masks.enc_between, self.src_mask, keep_words,
                         self.B, self.dtype, dev, slice_dim=spec.slice_dim)
        self.dec = _Side(model.dec_cells, self._tgt_embed, self.masks.dec_between, self.tgt_mask, keep_words,
                         self.B, self.dtype, dev)

    def phase(self, name: str) -> None:
        """Tell the ``on_phase`` callback (if any) that a phase ended: ``"encoded"`` (the encoder's forward pass:
        what it holds now is what it keeps for its backward) or ``"decoded"`` (the same for the decoder)."""
        if self.on_phase is not None:
            self.on_phase(name)

    def _src_embed(self, t):
        x = embedding_into(self.model.src_emb.weight, self.src[t], None)
        return x if self.masks.src_in is None else x * self.masks.src_in

    def _tgt_embed(self, t):
        x = embedding_into(self.model.tgt_emb.weight, self.tgt_in[t], None)
        return x if self.masks.tgt_in is None else x * self.masks.tgt_in

    def source_embeddings(self):
        """(S, B, emb) dropped source embeddings (recomputed from the tokens; gradient added into the weight)."""
        x = embedding_into(self.model.src_emb.weight, self.src, None)
        return x if self.masks.src_in is None else x * self.masks.src_in

    def context(self, hidden):
        """(S, B, C) attention context from the stored hidden part (S, B, D) (or None) and the embeddings."""
        parts = [self.source_embeddings()] if self.model.context.emb else []
        if hidden is not None:
            parts.append(hidden)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def step_loss(self, t, h_top, ctx):
        """Attention, logits and the loss of decoder step t: sum of its token cross-entropies / ``divisor``
        (the batch's target tokens, or its sentences with normalize='sents')."""
        logits = attention_logits(self.model, h_top, ctx, self.src_mask, self.masks.out)
        return F.cross_entropy(logits, self.targets[t], reduction="sum", ignore_index=IGNORE) / self.divisor

    def stats(self) -> dict:
        """Paper-style memory figures (PAPER.md 'Counting memory'), encoder and decoder separately.

        baseline bits = 32 * valid tokens * sum of hidden sizes (x2 for LSTM cells: h and c);
        buffer bits actual = peak over the forward pass of 64 per live buffer element + 32 per allocated word
        slot; ideal = sum of -log2 z over valid steps and units. The encoder adds its stored context: the
        slice store's allocated bits (actual) and 32 * slice_dim * valid tokens (ideal), or the stored hidden
        states for context 'all' (32 * hidden * valid tokens).
        """
        m = self.model
        per_unit = sum(c.hidden_size * (2 if ("c" in c.parts or "c1" in c.parts) else 1) for c in m.enc_cells)
        s = {"src_tokens": self.n_src, "tgt_tokens": self.n_tgt, "src_len": self.S, "tgt_len": self.T,
             "batch_size": self.B}
        D = m.context.hidden_dim(m.hidden_size)
        stored_ideal = 32 * D * self.n_src
        if self.enc.slices is not None:
            stored_actual = self.enc.slices.allocated_bits()
        elif m.context.all_hidden:
            stored_actual = 32 * D * self.S * self.B
        else:
            stored_actual = stored_ideal
        for side, name, n in ((self.enc, "enc", self.n_src), (self.dec, "dec", self.n_tgt)):
            base = 32 * n * per_unit
            extra_a, extra_i = (stored_actual, stored_ideal) if name == "enc" else (0, 0)
            if not m.reversible:
                ideal = actual = None
            elif not m.enc_cells[0].forgets:       # no-forgetting cells have no buffer at all
                ideal, actual = 0.0, (0 if side.keep_words else None)
            else:
                ideal = side.ideal_total()
                actual = side.buffer_bits_peak if side.keep_words else None
            s[f"{name}_state_bits_baseline"] = base
            if name == "enc":
                s["enc_context_bits_actual"], s["enc_context_bits_ideal"] = extra_a, extra_i
            s[f"{name}_buffer_bits_ideal"] = ideal
            s[f"{name}_buffer_bits_actual"] = actual
            s[f"{name}_saving_ideal"] = _ratio(base, None if ideal is None else ideal + extra_i)
            s[f"{name}_saving_actual"] = _ratio(base, None if actual is None else actual + extra_a)
        s["forward_steps"] = self.enc.counters["forward_steps"] + self.dec.counters["forward_steps"]
        s["reverse_steps"] = self.enc.counters["reverse_steps"] + self.dec.counters["reverse_steps"]
        return s


def _ratio(a, b):
    if b is None:
        return None
    return a / b if b > 0 else math.inf


def attention_logits(model: Seq2Seq, h_top, ctx, src_mask, out_mask=None, return_alpha: bool = False):
    """Luong "general" attention without input feeding: score_s = h^T W_a c_s over valid source positions,
    a = sum_s softmax(score)_s c_s, o = tanh(W_c [h; a]) (dropped), logits = generator(o). Shapes: h_top
    (B, H), ctx (S, B, C), src_mask (S, B) bool."""
    q = h_top @ model.attn.weight                                   # (B, C): h^T W_a
    scores = torch.einsum("sbc,bc->sb", ctx, q)
    scores = scores.masked_fill(~src_mask, float("-inf"))
    alpha = torch.softmax(scores, dim=0)
    a = torch.einsum("sb,sbc->bc", alpha, ctx)
    o = torch.tanh(model.combine(torch.cat([h_top, a], dim=-1)))
    if out_mask is not None:
        o = o * out_mask
    logits = linear_into(o, model.generator.weight, model.generator.bias)
    return (logits, alpha) if return_alpha else logits


def _backward(outs, grads):
    """One autograd backward of several outputs: a scalar loss (gradient None) and state tensors with their
    incoming gradients; outputs without a graph or without a gradient are skipped."""
    pairs = [(o, g) for o, g in zip(outs, grads)
             if o is not None and o.requires_grad and (g is not None or o.dim() == 0)]
    if pairs:
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])


# ------------------------------------------------------------------------------------------------ methods
class Seq2SeqMethod:
    """A training step for a whole batch: gradients accumulated into ``model.parameters()`` (as after
    ``loss.backward()``), returns ``StepOutput(loss, state=None, stats)``. The loss is the sum of the target
    tokens' cross-entropies divided by the number of target tokens (``normalize="tokens"``) or of sentences
    (``"sents"``, what the reference's OpenNMT trainer used); ``stats["loss_divisor"]`` says which number."""

    name = "?"
    keep_words = False
    normalize = "tokens"

    def check_model(self, model):
        pass

    def options(self) -> dict:
        """The options that make this method differ from its defaults (the normalisation is the batch's, not
        the method's, so it is not one)."""
        return {}

    def label(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options().items()))
        return f"{self.name}({opts})" if opts else self.name

    def step(self, model: Seq2Seq, src, src_lengths, tgt_in, tgt_out, tgt_lengths, on_phase=None) -> StepOutput:
        """``on_phase(name)``, if given, is called with ``"start"`` before anything of the batch is built, then
        ``"encoded"`` and ``"decoded"`` at the end of each side's forward pass (memory meters read it)."""
        self.check_model(model)
        if on_phase is not None:
            on_phase("start")
        run = BatchRun(model, src, src_lengths, tgt_in, tgt_out, tgt_lengths, keep_words=self.keep_words,
                       normalize=self.normalize, on_phase=on_phase)
        loss, extra = self.run(run)
        stats = run.stats()
        stats["loss_divisor"] = run.divisor
        stats.update(extra)
        stats["method"] = self.name
        return StepOutput(loss=loss.detach(), state=None, stats=stats)

    def step_batch(self, model, batch, on_phase=None) -> StepOutput:
        """``step`` on a ``revbench.tasks.nmt.data.Batch``."""
        return self.step(model, batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, batch.tgt_lengths,
                         on_phase=on_phase)

    def run(self, run: BatchRun):
        raise NotImplementedError


class Seq2SeqBPTT(Seq2SeqMethod):
    """Autograd through the whole exact forward: every encoder and decoder step's graph is kept."""

    name = "bptt"

    def __init__(self, normalize: str = "tokens"):
        self.normalize = normalize

    def run(self, run):
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


class Seq2SeqReversible(Seq2SeqMethod):
    """Reversible backprop through decoder then encoder (see the module docstring)."""

    name = "reversible"
    keep_words = True

    def __init__(self, verify: bool = True, normalize: str = "tokens"):
        self.verify = verify
        self.normalize = normalize

    def check_model(self, model):
        if not model.reversible:
            raise ValueError(f"method 'reversible' needs a reversible cell (revgru, revlstm, nf-revgru, nf-revlstm); "
                             f"cell {model.cell_type!r} cannot be reversed: use 'bptt'")

    def run(self, run):
        m = run.model
        all_hidden = m.context.all_hidden
        # 1. forward without a graph: keep final states, buffers, the slice (or all hidden states for 'all')
        enc = run.enc.start(m.init_state(run.B))
        stored = []
        for s in range(run.S):
            enc, out = run.enc.advance(s, enc, grad=False)
            if all_hidden:
                stored.append(out)
        enc_final = enc
        run.phase("encoded")
        dec = run.dec.start_from(enc_final)
        for t in range(run.T):
            dec, _ = run.dec.advance(t, dec, grad=False)
        run.phase("decoded")
        # 2. the stored hidden part of the context, as one leaf that collects its gradient over decoder steps
        if all_hidden:
            hidden = torch.stack(stored).requires_grad_()
        elif run.enc.slices is not None:
            hidden = from_fixed(run.enc.slices.data.to(torch.int64), run.dtype).requires_grad_()
        else:
            hidden = None
        del stored
        # 3. decoder reverse pass: rebuild, replay with autograd, attention + loss, backpropagate
        total, grads = None, None
        for t in range(run.T - 1, -1, -1):
            prev = run.dec.reverse(t, dec)
            leaf = run.dec.leaf(prev)
            nxt, top = run.dec.advance(t, leaf, grad=True, known=dec)
            with torch.enable_grad():
                loss = run.step_loss(t, top, run.context(hidden))
            floats = nxt.floats()
            _backward([loss, *floats], [None, *(grads if grads is not None else [None] * len(floats))])
            grads = leaf.grads()
            total = loss.detach() if total is None else total + loss.detach()
            dec = prev
        if self.verify:
            _check_same(dec, enc_final, "decoder")
            if not run.dec.buffers_empty(dec):
                raise RuntimeError("decoder reversal did not return its buffers to empty")
        hidden_grad = None if hidden is None or hidden.grad is None else hidden.grad
        D = m.context.hidden_dim(m.hidden_size)
        del hidden
        # 4. encoder reverse pass, from the gradient w.r.t. its final state plus the context gradient per step
        enc = enc_final
        for s in range(run.S - 1, -1, -1):
            prev = run.enc.reverse(s, enc)
            leaf = run.enc.leaf(prev)
            nxt, top = run.enc.advance(s, leaf, grad=True, known=enc)
            floats = nxt.floats()
            outs, gs = list(floats), list(grads)
            if hidden_grad is not None:
                outs.append(top[:, :D])
                gs.append(hidden_grad[s])
            _backward(outs, gs)
            grads = leaf.grads()
            enc = prev
        if self.verify and not run.enc.buffers_empty(enc):
            raise RuntimeError("encoder reversal did not return its buffers to empty")
        if total is None:
            total = torch.zeros((), dtype=run.dtype)
        return total, {"stored_states_peak": 1}


class _PlannedSide:
    """One side of a batch in the step API that ``baselines.executor.execute`` runs plans over (``T``,
    ``counters``, ``advance(t, carry, grad) -> (carry, loss)``, ``leaf``, ``backward``). ``step_loss(t, top)``
    is what step t contributes to the objective when it runs with autograd: the decoder's attention loss, or
    for the encoder the scalar sum(top[:, :D] * dL/dslice_t), whose gradient is exactly the context gradient
    that reaches step t's stored hidden units (its value means nothing and is not reported)."""

    def __init__(self, side: _Side, T: int, step_loss, on_end=None):
        self.side, self.T, self.step_loss = side, T, step_loss
        self.counters = side.counters
        self.on_end = on_end                  # called once, when the plan first reaches state T

    def advance(self, t, carry, grad=False):
        nxt, top = self.side.advance(t, carry, grad=grad)
        loss = None
        if grad:
            with torch.enable_grad():
                loss = self.step_loss(t, top)
        if t == self.T - 1 and self.on_end is not None:
            self.on_end()                     # after the step's loss: the held bytes include its graph
            self.on_end = None
        return nxt, loss

    def leaf(self, carry):
        return self.side.leaf(carry)

    def backward(self, losses, carry_end, grads_end=None):
        floats = carry_end.floats()
        _backward([torch.stack(list(losses)).sum(), *floats], [None, *(grads_end or [None] * len(floats))])


class Seq2SeqPlanned(Seq2SeqMethod):
    """A recomputing baseline (``"checkpoint"``: Chen et al.; ``"gruslys"``: Gruslys et al.) applied to each
    side: the plan the language-model method of that name makes for T steps (same options, same validation)
    runs over the decoder, then over the encoder, with ``baselines.executor``.

    1. Encoder forward without a graph, keeping its final state and the stored hidden part of the context
       (the slice, or every top-layer hidden state for ``all``): attention needs it at every decoder step.
    2. Decoder plan from the encoder's final state (its gradient is collected at state 0); per step attention,
       logits and loss, with the context's hidden part as one leaf that accumulates its gradient.
    3. Encoder plan, from the gradient w.r.t. its final state; each recomputed step receives the context
       gradient of its stored units.
    A stored state costs ``Carry.nbytes()`` (ints, floats and the live buffer for reversible cells; no word
    stack is kept). Stats add ``enc_*`` / ``dec_*`` plan counts (``stored_states_peak``, ``slots_peak``, ...).
    Sentences vary in length, so a fixed ``segments`` for checkpointing is an upper bound: a side shorter than
    ``segments`` steps is split into single steps."""

    def __init__(self, name: str, normalize: str = "tokens", **options):
        from revbench.methods import get as get_lm_method

        self.name, self.normalize, self._options = name, normalize, options
        self.planner = get_lm_method(name, **options)       # validates the options as for the language model
        if not hasattr(self.planner, "make_plan"):
            raise ValueError(f"method {name!r} does not recompute from a plan; it cannot run on the encoder-decoder")
        self._short = {}                                    # T -> planner for sides shorter than `segments`

    def options(self) -> dict:
        return self.planner.options()

    def _plan(self, side, carry0):
        from revbench.methods import get as get_lm_method

        segments = getattr(self.planner, "segments", None)
        planner = self.planner
        if segments is not None and segments > side.T:
            if side.T not in self._short:
                self._short[side.T] = get_lm_method(self.name, **{**self._options, "segments": side.T})
            planner = self._short[side.T]
        return planner.make_plan(side, carry0)

    def run(self, run):
        from baselines.executor import execute

        m = run.model
        D = m.context.hidden_dim(m.hidden_size)
        enc0 = run.enc.start(m.init_state(run.B))
        enc, stored = enc0, []
        for s in range(run.S):                      # 1. forward, no graph
            enc, out = run.enc.advance(s, enc, grad=False)
            if D:
                stored.append(out[:, :D])
        hidden = torch.stack(stored).requires_grad_() if D else None
        del stored
        run.phase("encoded")
        dec_side = _PlannedSide(run.dec, run.T, lambda t, top: run.step_loss(t, top, run.context(hidden)),
                                on_end=lambda: run.phase("decoded"))
        dec0 = run.dec.start_from(enc)
        dec_ex = execute(self._plan(dec_side, dec0), dec_side, dec0, grad_initial=True)   # 2. decoder
        hidden_grad = None if hidden is None else hidden.grad
        hidden = None                               # the decoder is done with the context

        def enc_loss(s, top):
            if hidden_grad is None:
                return torch.zeros((), dtype=run.dtype, device=top.device)
            return (top[:, :D] * hidden_grad[s]).sum()

        enc_side = _PlannedSide(run.enc, run.S, enc_loss)
        enc_ex = execute(self._plan(enc_side, enc0), enc_side, enc0,            # 3. encoder
                         grad_final=dec_ex.initial_grads)
        total = torch.stack(dec_ex.losses).sum()
        extra = {"stored_states_peak": enc_ex.stats.stored_states_peak + dec_ex.stats.stored_states_peak}
        for side, ex in (("enc", enc_ex), ("dec", dec_ex)):
            extra.update({f"{side}_{k}": v for k, v in ex.stats.as_dict().items() if k != "forward_steps"})
        extra.update(self.options())
        return total, extra


def _check_same(a: Carry, b: Carry, what):
    for la, lb in zip(a.layers, b.layers):
        for u, v in zip(la.ints, lb.ints):
            if not torch.equal(u, v):
                raise RuntimeError(f"{what} reversal did not rebuild its initial state exactly")


SEQ2SEQ_METHODS = {"bptt": Seq2SeqBPTT, "reversible": Seq2SeqReversible}
PLANNED_METHODS = ("checkpoint", "gruslys")


def get_method(name: str, **options) -> Seq2SeqMethod:
    """A seq2seq training method by name: 'bptt', 'reversible', or a recomputing baseline ('checkpoint',
    'gruslys', with the options of the language-model method of that name, plus ``normalize``)."""
    if name in PLANNED_METHODS:
        return Seq2SeqPlanned(name, **options)
    if name not in SEQ2SEQ_METHODS:
        raise ValueError(f"method {name!r} is not available for the encoder-decoder; choose one of "
                         f"{', '.join([*SEQ2SEQ_METHODS, *PLANNED_METHODS])} ('bptt-fused' runs torch's fused "
                         f"kernels over a whole sequence, which leaves no place for the per-step attention)")
    return SEQ2SEQ_METHODS[name](**options)


@torch.no_grad()
def evaluate_batch(model: Seq2Seq, src, src_lengths, tgt_in, tgt_out, tgt_lengths) -> tuple[float, int]:
    """Forward only (no graph, the model's current mode): (sum of target-token cross-entropies, target tokens)."""
    run = BatchRun(model, src, src_lengths, tgt_in, tgt_out, tgt_lengths, normalize="sents")
    carry = run.enc.start(model.init_state(run.B))
    D = model.context.hidden_dim(model.hidden_size)
    outs = []
    for s in range(run.S):
        carry, out = run.enc.advance(s, carry)
        if D:
            outs.append(out[:, :D])
    ctx = run.context(torch.stack(outs) if D else None)
    dec = run.dec.start_from(carry)
    total = 0.0
    for t in range(run.T):
        dec, top = run.dec.advance(t, dec)
        total += float(run.step_loss(t, top, ctx)) * run.divisor
    return total, run.n_tgt


# ------------------------------------------------------------------------------------------------ inference
@dataclass
class Encoded:
    """A source batch run through the encoder (no graph): the context, its mask and the final state."""
    ctx: torch.Tensor            # (S, B, C)
    src_mask: torch.Tensor       # (S, B) bool
    final: Carry


@torch.no_grad()
def encode(model: Seq2Seq, src, src_lengths) -> Encoded:
    """Run the encoder for inference (no dropout; exact fixed-point forward with the buffer words dropped,
    since nothing is reversed here)."""
    dev = model.device
    src = src.to(dev)
    S, B = src.shape
    lengths = torch.as_tensor(src_lengths).to(dev)
    src_mask = torch.arange(S, device=dev).unsqueeze(1) < lengths.unsqueeze(0)
    run = _Side(model.enc_cells, lambda t: F.embedding(src[t], model.src_emb.weight), [None] * (model.num_layers - 1),
                src_mask, False, B, model.float_dtype(), dev, slice_dim=model.context.slice_dim)
    carry = run.start(model.init_state(B))
    D = model.context.hidden_dim(model.hidden_size)
    outs = []
    for s in range(S):
        carry, out = run.advance(s, carry)
        if D:
            outs.append(out[:, :D])
    parts = ([F.embedding(src, model.src_emb.weight)] if model.context.emb else []) + ([torch.stack(outs)] if D else [])
    ctx = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    return Encoded(ctx, src_mask, carry)


class Decoder:
    """Step-by-step decoding from an ``Encoded`` source (eval mode, no graph): ``start()`` then ``step``."""

    def __init__(self, model: Seq2Seq, batch_size: int):
        self.model = model
        self.side = _Side(model.dec_cells, None, [None] * (model.num_layers - 1), None, False, batch_size,
                          model.float_dtype(), model.device)

    def start(self, enc: Encoded) -> Carry:
        return self.side.start_from(enc.final)

    @torch.no_grad()
    def step(self, tokens, carry: Carry, ctx, src_mask):
        """Feed ``tokens`` (B,): returns (next carry, log-probabilities (B, V), attention weights (S, B))."""
        x = F.embedding(tokens, self.model.tgt_emb.weight)
        carry, top = self.side.advance(None, carry, x=x)
        logits, alpha = attention_logits(self.model, top, ctx, src_mask, return_alpha=True)
        return carry, torch.log_softmax(logits.float(), dim=-1), alpha


def select_carry(carry: Carry, index) -> Carry:
    """The carry of batch rows ``index`` (beam search reordering); buffers included (they are state)."""
    def sel(t):
        return None if t is None else t.index_select(0, index)
    return Carry(tuple(LayerState(None if ls.ints is None else tuple(sel(p) for p in ls.ints),
                                  tuple(sel(f) for f in ls.floats), sel(ls.bx)) for ls in carry.layers))


__all__ = ["ContextSpec", "Seq2Seq", "Seq2SeqMasks", "BatchRun", "Seq2SeqMethod", "Seq2SeqBPTT",
           "Seq2SeqReversible", "Seq2SeqPlanned", "SEQ2SEQ_METHODS", "PLANNED_METHODS", "get_method", "attention_logits", "evaluate_batch",
           "Encoded", "encode",
           "Decoder", "select_carry"]
