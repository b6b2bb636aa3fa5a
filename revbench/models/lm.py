"""Language model: embedding, a stack of recurrent cells, tied output layer, AWD-style regularisation.

Regularisation (Merity et al.'s AWD-LSTM, as the paper uses it), all sampled once
per segment by ``sample_masks`` and reused by every recomputation of the segment:
embedding dropout (whole words), locked dropout on the input, between layers and
on the output, and recurrent weight-drop (DropConnect on the hidden-to-hidden
weights). All rates default to 0 (a deterministic model); training configs set them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from revbench.core.cells import CELL_TYPES, DEFAULT, make_cell, resolve_max_forget_bits
from revbench.core.fixedpoint import to_fixed
from revbench.core.protocol import StepOutput
from revbench.models.segment import Segment


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _locked_mask(shape, p, like: torch.Tensor) -> torch.Tensor | None:
    if p <= 0:
        return None
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p) / (1 - p)


@dataclass
class SegmentMasks:
    """Dropout masks of one segment (None = no dropout there)."""
    emb_rows: torch.Tensor | None = None                  # [vocab] scale per word (embedding dropout)
    inputs: torch.Tensor | None = None                    # [B, emb]
    between: list = field(default_factory=list)           # per layer except the last: [B, H_l] or None
    outputs: torch.Tensor | None = None                   # [B, H_last]
    weights: list = field(default_factory=list)           # per layer: {name: mask like the weight} (weight-drop)


class RNNLM(nn.Module):
    """Word-level language model over any cell of ``revbench.core.cells``.

    ``hidden_size`` is an int (every layer) or a list with one size per layer (AWD: 1150 inner, last = emb).
    Input and output embeddings are tied when ``tie_weights`` and the last layer's size equals ``emb_size``.
    """

    kind = "lm"

    def __init__(self, vocab_size: int, emb_size: int, hidden_size, num_layers: int = 1, cell: str = "revlstm",
                 max_forget_bits: int | None | str = DEFAULT, dropout_emb: float = 0.0, dropout_in: float = 0.0,
                 dropout_h: float = 0.0, dropout_out: float = 0.0, weight_drop: float = 0.0,
                 tie_weights: bool = True, init_range: float | None = None):
        super().__init__()
        if cell not in CELL_TYPES:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELL_TYPES)}")
        if not _positive_int(num_layers):
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if isinstance(hidden_size, (list, tuple)):
            sizes = list(hidden_size)
        elif _positive_int(hidden_size):
            sizes = [hidden_size] * num_layers
        else:
            raise ValueError(f"hidden_size must be a positive int or a list of them (one per layer), got "
                             f"{hidden_size!r}")
        if len(sizes) != num_layers:
            raise ValueError(f"hidden_size lists {len(sizes)} sizes but num_layers is {num_layers}")
        for name, v in (("vocab_size", vocab_size), ("emb_size", emb_size), *(("hidden_size", s) for s in sizes)):
            if not _positive_int(v):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name, p in (("dropout_emb", dropout_emb), ("dropout_in", dropout_in), ("dropout_h", dropout_h),
                        ("dropout_out", dropout_out), ("weight_drop", weight_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p!r}")
        self.cell_type = cell
        self.max_forget_bits = resolve_max_forget_bits(cell, max_forget_bits)
        self.vocab_size, self.emb_size, self.hidden_sizes, self.num_layers = vocab_size, emb_size, sizes, num_layers
        self.dropout_emb, self.dropout_in, self.dropout_h = dropout_emb, dropout_in, dropout_h
        self.dropout_out, self.weight_drop = dropout_out, weight_drop
        self.encoder = nn.Embedding(vocab_size, emb_size)
        ins = [emb_size] + sizes[:-1]
        self.cells = nn.ModuleList(make_cell(cell, i, h, self.max_forget_bits) for i, h in zip(ins, sizes))
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        self.tied = bool(tie_weights and sizes[-1] == emb_size)
        r = 0.1 if init_range is None else init_range
        nn.init.uniform_(self.encoder.weight, -r, r)
        nn.init.zeros_(self.decoder.bias)
        if self.tied:
            self.decoder.weight = self.encoder.weight
        else:
            nn.init.uniform_(self.decoder.weight, -r, r)
        if init_range is not None:
            for c in self.cells:
                c.reset_parameters(init_range)

    @property
    def reversible(self) -> bool:
        return self.cells[0].reversible

    @property
    def hidden_size(self) -> int:
        return self.hidden_sizes[-1]

    def float_dtype(self) -> torch.dtype:
        return self.encoder.weight.dtype

    def init_state(self, batch_size: int, device=None) -> list[tuple[torch.Tensor, ...]]:
        """Zero state: per layer a tuple of tensors (int64 fixed point for reversible cells, float otherwise)."""
        if not _positive_int(batch_size):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        device = device or self.encoder.weight.device
        state = []
        for c in self.cells:
            if c.reversible:
                state.append(tuple(torch.zeros(s, dtype=torch.int64, device=device) for s in c.part_shapes(batch_size)))
            else:
                state.append(tuple(torch.zeros(s, dtype=self.float_dtype(), device=device)
                                   for s in c.part_shapes(batch_size)))
        return state

    def state_from_floats(self, floats: list[tuple[torch.Tensor, ...]]):
        """Convert float states (e.g. from an ordinary model) into this model's representation."""
        return [tuple(to_fixed(t) for t in layer) if c.reversible else tuple(t.detach() for t in layer)
                for c, layer in zip(self.cells, floats)]

    def sample_masks(self, batch_size: int) -> SegmentMasks:
        """Sample the segment's dropout masks from torch's global RNG (fixed order); none in eval mode."""
        m = SegmentMasks()
        if not self.training:
            m.between = [None] * (self.num_layers - 1)
            m.weights = [{} for _ in self.cells]
            return m
        w = self.encoder.weight
        if self.dropout_emb > 0:
            m.emb_rows = torch.empty(self.vocab_size, dtype=w.dtype, device=w.device).bernoulli_(
                1 - self.dropout_emb) / (1 - self.dropout_emb)
        m.inputs = _locked_mask((batch_size, self.emb_size), self.dropout_in, w)
        m.between = [_locked_mask((batch_size, h), self.dropout_h, w) for h in self.hidden_sizes[:-1]]
        m.outputs = _locked_mask((batch_size, self.hidden_sizes[-1]), self.dropout_out, w)
        m.weights = []
        for c in self.cells:
            params = dict(c.named_parameters())
            m.weights.append({n: _locked_mask(params[n].shape, self.weight_drop, params[n])
                              for n in c.recurrent_weights} if self.weight_drop > 0 else {})
        return m

    def describe(self) -> dict:
        return {"cell": self.cell_type, "num_layers": self.num_layers, "hidden_size": self.hidden_sizes[-1],
                "hidden_sizes": list(self.hidden_sizes), "emb_size": self.emb_size, "vocab_size": self.vocab_size,
                "max_forget_bits": self.max_forget_bits if self.reversible else None,
                "dtype": str(self.float_dtype()).replace("torch.", "")}

    def run_step(self, method, inputs, targets, state, lengths=None) -> StepOutput:
        """One truncated segment trained by ``method`` (``method.step(model, ...)`` calls this): the language
        model is one chain, the ``Segment``. ``inputs``/``targets``: LongTensor (T, B); ``state``: from
        ``init_state`` or the previous step's ``out.state``; ``lengths``: optional (B,) valid steps."""
        seg = Segment(self, inputs, targets, lengths, keep_words=method.keep_words)
        res = method.run_chain(seg, seg.start(state))
        seg.finish()
        stats = seg.stats()
        stats.update(res.stats)
        stats["method"] = method.name
        stats["finite"] = bool(torch.isfinite(res.loss))     # False: the loss is NaN/inf (training diverged)
        return StepOutput(loss=res.loss.detach(), state=seg.final_state(res.final), stats=stats)
