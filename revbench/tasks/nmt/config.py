"""The configuration of an NMT training run: :class:`NMTConfig`, the named :data:`CONFIGS` and :func:`make_config`.

``tiny`` is for tests, ``small`` for a CPU, ``paper`` the paper's Multi30K setting: 1 layer, H = emb = 300,
batch 64, SGD with gradient-norm clipping at 5, uniform init +-0.1, dropout 0.4, lr 1.0 LSTM / 0.5 RevLSTM /
0.2 GRU and RevGRU (:data:`PAPER_LR`), halved whenever the validation perplexity gets worse, as the reference's
OpenNMT trainer did.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from revbench import methods
from revbench.tasks.run_options import check_count, check_real, check_seed, configured_method

PAPER_LR = {"lstm": 1.0, "revlstm": 0.5, "nf-revlstm": 0.5, "gru": 0.2, "revgru": 0.2, "nf-revgru": 0.2}


@dataclass
class NMTConfig:
    """Everything a training run depends on (saved in the checkpoint; a resume must match)."""

    data: str = "multi30k"                 # "multi30k" or "synthetic"
    cell: str = "revgru"
    context: str = "emb+h:20"
    max_forget_bits: int | None = 3
    method: str = "reversible"             # "reversible", "bptt", "checkpoint" or "gruslys"
    method_options: dict = dataclasses.field(default_factory=dict)   # e.g. {"segments": 4}, {"budget": 0.1}
    num_layers: int = 1
    hidden_size: int = 300
    emb_size: int = 300
    batch_size: int = 64
    epochs: int = 80
    lr: float | None = None                # None: the paper's rate for the cell (PAPER_LR)
    lr_decay: float = 0.5                  # multiply the rate by this when validation perplexity gets worse
    clip: float = 5.0                      # gradient-norm clipping
    dropout: float = 0.4
    init_range: float = 0.1
    loss_norm: str = "sents"               # loss = sum of token cross-entropies / sentences (OpenNMT) or tokens
    min_freq: int = 1                      # vocabulary: words seen at least this often in train
    max_train: int | None = None           # use only the first N training pairs (None: all)
    beam_size: int = 5
    length_penalty: float = 0.0            # beam score / length**alpha (0: raw log-probability, OpenNMT's default)
    replace_unk: bool = True
    seed: int = 1
    save_every: int = 200                  # checkpoint every N training steps (and at every epoch end)
    dtype: str = "float32"
    synthetic_train: int = 2000            # synthetic corpus sizes
    synthetic_vocab: int = 30

    def resolved_lr(self) -> float:
        return float(self.lr) if self.lr is not None else PAPER_LR[self.cell]

    def make_method(self):
        """The configured training method (``revbench.methods.get``); its step takes ``normalize=loss_norm``."""
        return configured_method(self.method, self.method_options)

    def validate(self) -> "NMTConfig":
        from revbench.core.cells import CELL_TYPES, REVERSIBLE_CELLS, validate_max_forget_bits
        from revbench.models.seq2seq import ContextSpec

        if self.data not in ("multi30k", "synthetic"):
            raise ValueError(f"data must be 'multi30k' or 'synthetic', got {self.data!r}")
        if self.cell not in CELL_TYPES:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELL_TYPES)}")
        ContextSpec.parse(self.context)
        if self.cell in REVERSIBLE_CELLS:
            validate_max_forget_bits(self.max_forget_bits)
        if not isinstance(self.method_options, dict):
            raise ValueError(f"method_options must be a dict of the method's options, got {self.method_options!r}")
        self.make_method()                 # an unknown method or a bad option is a clear ValueError
        ok, why = methods.supports(self.method, self.cell, kind="seq2seq")
        if not ok and self.method != "reversible":
            raise ValueError(why)
        if self.method == "reversible" and self.cell not in REVERSIBLE_CELLS:
            raise ValueError(f"method 'reversible' needs a reversible cell, not {self.cell!r}; use --method bptt")
        for name in ("num_layers", "hidden_size", "emb_size", "batch_size", "epochs", "min_freq", "beam_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        check_real(self.lr, "lr (--lr)", allow_none=True)
        check_real(self.length_penalty, "length_penalty (--length-penalty)")
        check_real(self.dropout, "dropout (--dropout)", minimum=0)
        if not self.dropout < 1:
            raise ValueError(f"dropout (--dropout) must be below 1, got {self.dropout!r}")
        check_count(self.save_every, "save_every (--save-every)", allow_none=False)
        check_seed(self.seed, "seed (--seed)")
        if self.loss_norm not in ("sents", "tokens"):
            raise ValueError(f"loss_norm must be 'sents' or 'tokens', got {self.loss_norm!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.max_train is not None and self.max_train < 1:
            raise ValueError(f"max_train must be a positive int or None, got {self.max_train!r}")
        return self


# Named configurations: field overrides of NMTConfig's defaults (which are the paper's Multi30K setting).
CONFIGS = {
    "paper": {},
    # CPU-sized: a quarter of the paper's width, a vocabulary of words seen twice, 10 epochs (at 3 the LSTM
    # baseline was still far from trained: validation perplexity 91, 48, 38 after epochs 1-3)
    "small": dict(hidden_size=128, emb_size=128, min_freq=2, epochs=10, save_every=100),
    # for tests and smoke runs: the synthetic corpus, a tiny model, a higher rate so one epoch learns
    "tiny": dict(data="synthetic", hidden_size=32, emb_size=16, batch_size=16, epochs=1, lr=1.0, dropout=0.1,
                 loss_norm="tokens",
                 context="emb+h:4", beam_size=3, save_every=0, synthetic_train=400),
}


def make_config(name: str = "paper", **overrides) -> NMTConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown NMT configuration {name!r}; choose one of {', '.join(CONFIGS)}")
    fields = {f.name for f in dataclasses.fields(NMTConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown NMT configuration field(s) {', '.join(bad)}")
    values = {**CONFIGS[name], **overrides}
    return NMTConfig(**values).validate()
