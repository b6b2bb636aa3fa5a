"""What the GPU check runs, most valuable first: :func:`check_cases`.

1. the paper's language-model step (emb = hidden = 650, batch 20, T = 70, vocab 10000): RevLSTM with bptt and
   reversible, LSTM with bptt and bptt-fused (cuDNN);
2. memory snapshots of one bptt and one reversible step of the paper's RevLSTM;
3. the long configuration (T = 1000, hidden 256, batch 16, vocab 2000: the ``frontier`` grid's sizes): LSTM bptt
   and bptt-fused, RevLSTM bptt and reversible;
4. the paper's NMT step (RevGRU, emb = hidden = 300, batch 64, 30 tokens): bptt and reversible;
5. the CUDA cases of the ``default`` grid not already above (the small encoder-decoder step: cheap, and what
   ``revbench run`` runs on a GPU);
6. every other registered method on the paper LM step, then on the long configuration (checkpoint, gruslys,
   torch-checkpoint, revolve, compile-budget and any third-party method);
7. the rest of the paper's NMT grid (checkpoint, gruslys; RevLSTM).

Configurations come from ``revbench.measure.grids`` (so they stay those of ``revbench run --grid ...``) with their
device replaced by the check's. A case is skipped at run time when its method does not apply
(``revbench.methods.supports``), when a method's package is missing, or when the budget runs out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from revbench.measure.grids import get_grid
from revbench.measure.harness import BenchConfig
from revbench.measure.seq2seq_bench import Seq2SeqBenchConfig

# one option set per method (methods not listed run with their defaults); lists run in order
PAPER_OPTIONS = {
    "bptt": [{}], "reversible": [{}], "bptt-fused": [{}], "checkpoint": [{}],
    "gruslys": [{"budget": 0.1, "policy": "hsm"}], "torch-checkpoint": [{"fused": False}, {"fused": True}],
    "revolve": [{"budget": 0.1}], "compile-budget": [{"budget": 0.5}],
}
LONG_OPTIONS = {
    **PAPER_OPTIONS,
    "gruslys": [{"budget": 0.05, "policy": "hsm"}, {"budget": 0.05, "policy": "mixed"}],
    "torch-checkpoint": [{"segments": 32}, {"fused": True}],
    "revolve": [{"budget": 0.05, "schedule": "multistage"}],
}
HEADLINE = ("bptt", "reversible", "bptt-fused")
PEER_ORDER = ("checkpoint", "gruslys", "torch-checkpoint", "revolve", "compile-budget")

# prior estimates of a whole case on one GPU, seconds (model and batch built, warm-up, one metered step, the fused
# reference's share, one warm-up and the timed rounds); the budget scales them by what finished cases took
PRIORS = {"paper": 12.0, "long": 45.0, "nmt": 12.0, "s2s": 6.0, "snapshot": 15.0}
SLOW = {"reversible": 1.6, "gruslys": 1.4, "revolve": 1.4, "checkpoint": 1.2, "torch-checkpoint": 1.2,
        "bptt-fused": 0.5}


@dataclass(frozen=True)
class CheckCase:
    """One thing the check runs: ``kind`` "lm" / "seq2seq" (a benchmark entry) or "snapshot" (a memory
    snapshot of one step of ``method`` on ``cfg``)."""
    kind: str
    method: str
    cfg: object
    options: dict = field(default_factory=dict, hash=False, compare=False)
    rounds: int = 3
    prior_s: float = 10.0
    section: str = ""

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.method}{'[' + opts + ']' if opts else ''}-{self.cfg.config_id}"

    @property
    def key(self) -> str:
        return ("snapshot:" if self.kind == "snapshot" else "") + self.id


def _case(kind, method, cfg, options, rounds, prior, section):
    return CheckCase(kind, method, cfg, dict(options), rounds, round(prior * SLOW.get(method, 1.0), 1), section)


def _methods(table: dict, names, cell: str) -> list[tuple[str, dict]]:
    """(method, options) of ``names`` for ``cell``; ``fused=True`` options only on the ordinary cells, whose
    nn.LSTM / nn.GRU kernels they run."""
    return [(m, o) for m in names for o in table.get(m, [{}]) if not (o.get("fused") and cell not in ("lstm", "gru"))]


def paper_lm(device: str) -> BenchConfig:
    return next(c.cfg for c in get_grid("paper") if isinstance(c.cfg, BenchConfig) and c.cfg.num_layers == 1
                and c.cfg.cell == "revlstm").with_(device=device)


def long_lm(device: str) -> BenchConfig:
    return next(c.cfg for c in get_grid("frontier") if c.cfg.cell == "lstm").with_(device=device)


def paper_nmt(device: str) -> list:
    return [c for c in get_grid("paper") if isinstance(c.cfg, Seq2SeqBenchConfig)]


def check_cases(device: str = "cuda", available=None) -> list[CheckCase]:
    """Every case of the check on ``device``, most valuable first, without duplicates. ``available``: the
    method names to offer (default ``revbench.methods.available()``)."""
    if available is None:
        from revbench import methods

        available = methods.available()
    peers = [m for m in PEER_ORDER if m in available] + sorted(set(available) - set(HEADLINE) - set(PEER_ORDER))
    rev = paper_lm(device)
    std = rev.with_(cell="lstm", max_forget_bits=None)
    long_std = long_lm(device)
    long_rev = long_std.with_(cell="revlstm", max_forget_bits=3)
    nmt = [c for c in paper_nmt(device)]
    out: list[CheckCase] = []
    add = out.append
    sec = "paper LM step"
    for cfg, names in ((rev, ("bptt", "reversible")), (std, ("bptt", "bptt-fused"))):
        for m, o in _methods(PAPER_OPTIONS, names, cfg.cell):
            add(_case("lm", m, cfg, o, 5, PRIORS["paper"], sec))
    for m in ("bptt", "reversible"):
        add(_case("snapshot", m, rev, {}, 1, PRIORS["snapshot"], "memory snapshot"))
    sec = "long LM step (T = 1000)"
    for cfg, names in ((long_std, ("bptt", "bptt-fused")), (long_rev, ("bptt", "reversible"))):
        for m, o in _methods(LONG_OPTIONS, names, cfg.cell):
            add(_case("lm", m, cfg, o, 3, PRIORS["long"], sec))
    sec = "paper NMT step"
    for c in nmt:
        if c.cfg.cell == "revgru" and c.method in ("bptt", "reversible"):
            add(_case("seq2seq", c.method, c.cfg.with_(device=device), c.options, 3, PRIORS["nmt"], sec))
    for c in get_grid("default"):           # cheap, and what `revbench run` runs on a GPU
        if str(c.cfg.device).startswith("cuda"):
            kind = "seq2seq" if isinstance(c.cfg, Seq2SeqBenchConfig) else "lm"
            add(_case(kind, c.method, c.cfg.with_(device=device), c.options, c.rounds,
                      PRIORS["s2s" if kind == "seq2seq" else "paper"], "default grid (CUDA cases)"))
    for cfg in (rev, std):
        for m, o in _methods(PAPER_OPTIONS, peers, cfg.cell):
            add(_case("lm", m, cfg, o, 5, PRIORS["paper"], "paper LM step"))
    for cfg in (long_std, long_rev):
        for m, o in _methods(LONG_OPTIONS, peers, cfg.cell):
            add(_case("lm", m, cfg, o, 3, PRIORS["long"], "long LM step (T = 1000)"))
    for c in nmt:
        add(_case("seq2seq", c.method, c.cfg.with_(device=device), c.options, 3, PRIORS["nmt"], sec))
    seen, unique = set(), []
    for c in out:
        if c.key not in seen:
            seen.add(c.key)
            unique.append(c)
    return unique
