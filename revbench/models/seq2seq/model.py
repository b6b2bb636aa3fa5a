"""Attention encoder-decoder whose encoder and decoder are reversible (MacKay et al. 2018, section 5).

Model
-----
* Encoder: a stack of cells over the source (any cell of ``revbench.core.cells``). With a reversible cell every
  layer keeps its state in fixed point with its own information buffer, exactly as the language model does
  (the per-part update is ``revbench.core.state.StateUpdater`` / ``StateUndoer``).
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

Training: ``revbench.methods.get(name, **options).step(model, batch)`` with any method of the one registry
that applies (``revbench.models.seq2seq.step``: how the encoder's and decoder's chains connect).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from revbench.core.cells import CELL_TYPES, DEFAULT, REVERSIBLE_CELLS, make_cell, resolve_max_forget_bits
from revbench.core.protocol import StepOutput
from revbench.models.seq2seq.step import run_step


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

    kind = "seq2seq"

    def __init__(self, src_vocab: int, tgt_vocab: int, emb_size: int = 300, hidden_size: int = 300,
                 num_layers: int = 1, cell: str = "revgru", max_forget_bits: int | None | str = DEFAULT,
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
        self.max_forget_bits = resolve_max_forget_bits(cell, max_forget_bits)
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

    def run_step(self, method, batch, normalize: str = "tokens", on_phase=None) -> StepOutput:
        """One batch trained by ``method`` (``method.step(model, batch, ...)`` calls this); see
        ``revbench.models.seq2seq.step.run_step``."""
        return run_step(self, method, batch, normalize=normalize, on_phase=on_phase)
