"""What an NMT configuration builds: its corpus, its model, its training pairs and the batches of an epoch."""
from __future__ import annotations

import torch

from revbench.core.cells import REVERSIBLE_CELLS
from revbench.models.seq2seq import Seq2Seq
from revbench.tasks.nmt.batches import length_batches
from revbench.tasks.nmt.config import NMTConfig
from revbench.tasks.nmt.corpus import ParallelCorpus, load_parallel


def load_corpus(config: NMTConfig, data_dir=None, verify: bool = True) -> ParallelCorpus:
    if config.data == "synthetic":
        return load_parallel("synthetic", num_train=config.synthetic_train, num_valid=100, num_test=100,
                             vocab_size=config.synthetic_vocab, seed=config.seed)
    return load_parallel("multi30k", data_dir=data_dir, verify=verify, min_freq=config.min_freq)


def build_model(config: NMTConfig, corpus: ParallelCorpus, device: str | torch.device | None = None) -> Seq2Seq:
    """The configuration's encoder-decoder for ``corpus``' vocabularies, in its dtype, on ``device`` (default: the
    CPU; batches follow the model's device)."""
    model = Seq2Seq(len(corpus.src_vocab), len(corpus.tgt_vocab), config.emb_size, config.hidden_size,
                    config.num_layers, cell=config.cell, max_forget_bits=config.max_forget_bits if config.cell in REVERSIBLE_CELLS else None,
                    context=config.context, dropout=config.dropout, init_range=config.init_range)
    return model.to(device=device, dtype=getattr(torch, config.dtype))


def train_pairs(config: NMTConfig, corpus: ParallelCorpus):
    pairs = corpus.train.pairs()
    pairs = [p for p in pairs if len(p[0]) > 0]
    return pairs[:config.max_train] if config.max_train else pairs


def epoch_batches(config: NMTConfig, pairs, epoch: int):
    """The batches of an epoch: a deterministic function of (seed, epoch), so a resume sees the same order."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return list(length_batches(pairs, config.batch_size, shuffle=True, generator=g))
