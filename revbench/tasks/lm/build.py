"""What a ``TrainConfig`` builds: its corpus (``load_data``) and its model (``build_model``)."""
from __future__ import annotations

from revbench.models.lm import RNNLM
from revbench.tasks.lm.configs import TrainConfig
from revbench.tasks.lm.corpus import Corpus, load_corpus


def load_data(cfg: TrainConfig) -> Corpus:
    """The corpus of ``cfg`` (PTB / WikiText-2 from the data directory, or the synthetic corpus)."""
    if cfg.data == "synthetic":
        return load_corpus("synthetic", vocab_size=cfg.synthetic_vocab, train_tokens=cfg.synthetic_tokens,
                           seed=cfg.seed)
    return load_corpus(cfg.data, cfg.data_dir, verify=cfg.verify)


def build_model(cfg: TrainConfig, vocab_size: int, device=None) -> RNNLM:
    """The configuration's language model for ``vocab_size`` words, on ``device`` (default: the CPU)."""
    return RNNLM(vocab_size, cfg.emb_size, cfg.layer_sizes(), cfg.num_layers, cell=cfg.cell,
                 max_forget_bits=cfg.max_forget_bits if cfg.reversible else None,
                 dropout_emb=cfg.dropout_emb, dropout_in=cfg.dropout_in, dropout_h=cfg.dropout_h,
                 dropout_out=cfg.dropout_out, weight_drop=cfg.weight_drop, tie_weights=cfg.tie_weights,
                 init_range=cfg.init_range).to(device)
