"""Named benchmark grids: lists of (method, options, configuration) cases that the suites parametrise over.

- ``default``: a small sweep over methods x cells x sequence lengths (LSTM family at T = 35, 70, 140; GRU family at
  T = 70) x hidden sizes x forgetting limits; ``torch-checkpoint`` (our step loop under torch.utils.checkpoint) and
  ``revolve`` (budget 0.1) on the four small T = 70 configurations; plus the
  paper-sized 1-layer RevLSTM (emb = hidden = 650, batch 20, T = 70, vocab 10000) for bptt and reversible.
  Finishes within 10 minutes on 2 CPU cores. CUDA cases are included and skip on a machine without a GPU.
- ``frontier``: the time-memory frontier at T = 1000 (1-layer LSTM, hidden 256, batch 16, vocab 2000): every baseline at
  budgets of 2 %, 5 % and 10 % of T, and reversible on a RevLSTM of the same size. Tens of minutes on a CPU.
- ``paper``: the paper's language-model step at 1-3 layers (emb = hidden = 650, batch 20, T = 70), and the
  paper's NMT step (RevGRU/RevLSTM encoder-decoder, emb = hidden = 300, batch 64, context emb+h:20).

Encoder-decoder cases (``Case.cfg`` a ``revbench.measure.seq2seq_bench.Seq2SeqBenchConfig``) run in
``suites/test_seq2seq_steps.py``; the default grid has a CPU-sized set of them.
- ``large``: long sequences, T up to 10,000.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# BenchConfig and Seq2SeqBenchConfig (whose modules import torch) are imported inside the grid functions, so that
# GRIDS (`revbench run --help`) costs no torch import


@dataclass(frozen=True)
class Case:
    method: str
    cfg: BenchConfig
    options: dict = field(default_factory=dict, hash=False, compare=False)
    rounds: int = 3

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.method}{'[' + opts + ']' if opts else ''}-{self.cfg.config_id}"


def _cases(methods, cfgs, rounds=3):
    return [Case(m, c, dict(o), rounds) for c in cfgs for m, o in methods]


def default_grid() -> list[Case]:
    from revbench.measure.harness import BenchConfig

    small = BenchConfig(hidden_size=128, emb_size=128, batch_size=16, vocab_size=2000, seq_len=70)
    rev_methods = [("bptt", {}), ("reversible", {}), ("checkpoint", {}),
                   ("gruslys", {"budget": 0.1, "policy": "hsm"}), ("gruslys", {"budget": 0.1, "policy": "mixed"})]
    std_methods = [("bptt", {}), ("bptt-fused", {}), ("checkpoint", {}), ("gruslys", {"budget": 0.1, "policy": "hsm"})]
    cases = []
    for T in (35, 70, 140):                                     # methods x cells x sequence lengths
        rev_cells, std_cells = (("revlstm", "revgru"), ("lstm", "gru")) if T == 70 else (("revlstm",), ("lstm",))
        cases += _cases(rev_methods, [small.with_(cell=c, seq_len=T) for c in rev_cells])
        cases += _cases(std_methods, [small.with_(cell=c, seq_len=T, max_forget_bits=None) for c in std_cells])
    pair = [("bptt", {}), ("reversible", {})]
    for k in (2, 5, None):                                      # forgetting limits (3 is above)
        cases += _cases(pair, [small.with_(cell=c, max_forget_bits=k) for c in ("revlstm", "revgru")])
    cases += _cases(pair, [small.with_(cell=c) for c in ("nf-revlstm", "nf-revgru")])
    for h in (64, 256):                                         # hidden sizes
        cases += _cases(pair, [small.with_(hidden_size=h, emb_size=h)])
    peers = [("torch-checkpoint", {"fused": False}), ("revolve", {"budget": 0.1})]   # the tools users pick instead
    cases += _cases(peers, [small.with_(cell=c) for c in ("revlstm", "revgru")]
                    + [small.with_(cell=c, max_forget_bits=None) for c in ("lstm", "gru")])
    cases += _cases(pair, [BenchConfig()])                     # the paper-sized 1-layer RevLSTM (core issue)
    gpu = BenchConfig(device="cuda")
    cases += _cases(pair, [gpu]) + _cases([("bptt", {}), ("bptt-fused", {})], [gpu.with_(cell="lstm", max_forget_bits=None)])
    return cases + seq2seq_default_cases()


def seq2seq_default_cases() -> list[Case]:
    """The encoder-decoder step side by side: RevGRU (context emb+h:20) with every method, the GRU baseline
    (attention over all hidden states) with the recomputing ones; batch 16, sentences up to 20 steps."""
    from revbench.measure.seq2seq_bench import Seq2SeqBenchConfig

    rev = Seq2SeqBenchConfig(batch_size=16, src_len=20, tgt_len=20)
    recompute = [("checkpoint", {}), ("gruslys", {"budget": 0.1, "policy": "hsm"})]
    return (_cases([("bptt", {}), ("reversible", {}), *recompute], [rev])
            + _cases([("bptt", {}), *recompute], [rev.with_(cell="gru", context="all", max_forget_bits=None)])
            + _cases([("bptt", {}), ("reversible", {})], [rev.with_(device="cuda")]))      # skip without a GPU


def frontier_grid() -> list[Case]:
    from revbench.measure.harness import BenchConfig

    # vocabulary 2000 as in the default grid: at 10000 the output layer costs ~8x the LSTM cell per step
    lstm = BenchConfig(cell="lstm", hidden_size=256, emb_size=256, batch_size=16, seq_len=1000, max_forget_bits=None,
                       vocab_size=2000)
    methods = [("bptt", {}), ("bptt-fused", {}), ("checkpoint", {}), ("checkpoint", {"recursive": True})]
    for b in (0.02, 0.05, 0.1):
        methods += [("gruslys", {"budget": b, "policy": "hsm"}), ("gruslys", {"budget": b, "policy": "mixed"})]
    # the tools a user would pick instead, swept next to ours (compile-budget skips with its reason where it
    # cannot be metered or compiled: see its supports() and CompileBudgetUnavailable)
    methods += [("torch-checkpoint", {"segments": k}) for k in (10, 32, 100)]
    methods += [("torch-checkpoint", {"fused": True})]
    methods += [("revolve", {"budget": b, "schedule": "multistage"}) for b in (0.02, 0.05, 0.1)]
    methods += [("compile-budget", {"budget": b}) for b in (1.0, 0.5, 0.1)]
    rev = lstm.with_(cell="revlstm", max_forget_bits=3)
    return _cases(methods, [lstm], rounds=3) + _cases([("bptt", {}), ("reversible", {})], [rev], rounds=3)


def paper_grid() -> list[Case]:
    from revbench.measure.harness import BenchConfig
    from revbench.measure.seq2seq_bench import Seq2SeqBenchConfig

    cases = []
    for layers in (1, 2, 3):                    # emb = hidden = 650 in every layer, batch 20, T = 70, vocab 10000
        for cell in ("revlstm", "revgru"):
            cfg = BenchConfig(cell=cell, num_layers=layers)
            cases += _cases([("bptt", {}), ("reversible", {})], [cfg], rounds=2)
    nmt = Seq2SeqBenchConfig(hidden_size=300, emb_size=300, batch_size=64, src_len=30, tgt_len=30, vocab_size=10000)
    every = [("bptt", {}), ("reversible", {}), ("checkpoint", {}), ("gruslys", {"budget": 0.1, "policy": "hsm"})]
    for cell in ("revgru", "revlstm"):          # the paper's Multi30K model (sentences up to 30 tokens)
        cases += _cases(every, [nmt.with_(cell=cell)], rounds=2)
    return cases


def large_grid() -> list[Case]:
    from revbench.measure.harness import BenchConfig

    base = BenchConfig(hidden_size=256, emb_size=256, batch_size=16, vocab_size=2000)
    cases = []
    for T in (1000, 3000, 10000):
        cases += _cases([("bptt", {}), ("reversible", {}), ("gruslys", {"budget": 0.05, "policy": "mixed"})],
                        [base.with_(seq_len=T)], rounds=1)
    return cases


GRIDS = {"default": default_grid, "frontier": frontier_grid, "paper": paper_grid, "large": large_grid}


def get_grid(name: str) -> list[Case]:
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; choose one of {', '.join(GRIDS)}")
    return GRIDS[name]()
