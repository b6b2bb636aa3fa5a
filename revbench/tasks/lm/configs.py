"""Language-model training configurations: the ``TrainConfig`` dataclass and the named configs.

``TrainConfig`` holds every number of one training run (data, model, method, optimiser, schedule,
run control). Named configs are plain dicts of field values over the defaults; ``get_config(name,
**overrides)`` builds one. Every config goes through the same ``revbench.tasks.lm.training.train``: they
differ in numbers only.

- ``paper``: the reference (AWD-LSTM style) settings of MacKay et al. as gathered in
  ``PAPER.md``: embedding 650, hidden 1150 for inner layers and 650 for the last (tied weights),
  batch 20, BPTT 70 (variable length), SGD lr 20, weight decay 1.2e-6, gradient clipping 0.25,
  dropouts output 0.4 / between layers 0.3 / input 0.4 / embedding 0.1 / weight-drop 0.5, lr / 4
  when the validation perplexity stops improving. Meant for a GPU (days on a CPU).
- ``small``: a CPU-sized model on the same code path, sized from throughput measured on a 2-core
  machine so that the whole Table-1 grid (10 runs) trains in about 45 minutes: embedding = hidden =
  128 (tied), batch 64, BPTT 35, 2 epochs, lighter dropouts (a short run cannot afford the heavy
  regularisation of a 40+ epoch schedule).
- ``tiny``: a few-second model for tests and smoke runs (synthetic corpus by default).

This module imports nothing heavy (no torch), so the CLI can list configs cheaply.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

RUN_CONTROL_FIELDS = frozenset({
    "data_dir", "verify", "device", "threads", "epochs", "max_steps", "log_interval", "checkpoint_every_steps",
    "checkpoint_every_minutes", "measure_memory", "final_memory",
})
"""Fields that may change between an interrupted run and its resumption (everything else must match)."""


@dataclass
class TrainConfig:
    """Everything one language-model training run needs. See ``revbench.tasks.lm.training.train``."""

    # data
    data: str = "ptb"                       # "ptb", "wikitext-2" or "synthetic"
    data_dir: str | None = None             # data root; None = $REVBENCH_DATA (not needed for synthetic)
    verify: bool = True                     # check SHA256SUMS
    synthetic_vocab: int = 200              # synthetic corpus only
    synthetic_tokens: int = 50_000          # synthetic corpus only (training tokens)
    # model
    cell: str = "revlstm"
    num_layers: int = 1
    emb_size: int = 650
    hidden_size: int = 1150                 # inner layers; the last layer is emb_size when weights are tied
    tie_weights: bool = True
    max_forget_bits: int | None = 3         # reversible cells only; None = no limit
    init_range: float | None = None
    dropout_emb: float = 0.1
    dropout_in: float = 0.4
    dropout_h: float = 0.3
    dropout_out: float = 0.4
    weight_drop: float = 0.5
    # method
    method: str = "reversible"              # any name of revbench.methods
    method_options: dict = field(default_factory=dict)
    # optimisation (AWD-LSTM style SGD)
    batch_size: int = 20
    eval_batch_size: int = 10
    test_batch_size: int = 1
    bptt: int = 70
    variable_bptt: bool = True              # AWD: length ~ N(bptt, 5), bptt/2 with probability 0.05
    carry_state: bool = True                # carry h across segments (AWD); False: every segment starts at zero
                                            # (no-forgetting cells: their state grows without bound on a stream)
    epochs: int = 40
    lr: float = 20.0
    clip: float = 0.25
    weight_decay: float = 1.2e-6
    lr_decay: float = 4.0                   # lr is divided by this when the validation perplexity did not improve
    seed: int = 1111
    # run control
    device: str = "cpu"
    threads: int | None = None              # torch.set_num_threads; None = torch's default
    max_steps: int | None = None            # stop (with a checkpoint) after this many training steps in total
    log_interval: int = 200                 # steps between progress records in log.jsonl
    checkpoint_every_steps: int | None = None
    checkpoint_every_minutes: float = 5.0
    measure_memory: bool = True             # meter one training step per epoch (live tensors / CUDA allocator)
    final_memory: bool = True               # after training: bptt vs this method on one segment, same model

    def layer_sizes(self) -> list[int]:
        """Hidden size of each layer: inner layers ``hidden_size``; the last ``emb_size`` when tied (AWD)."""
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        last = self.emb_size if self.tie_weights else self.hidden_size
        return [self.hidden_size] * (self.num_layers - 1) + [last]

    @property
    def reversible(self) -> bool:
        return self.cell.startswith(("rev", "nf-rev"))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**d)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field."""
        from_ = {"ptb", "wikitext-2", "synthetic"}
        if self.data not in from_:
            raise ValueError(f"data must be one of {sorted(from_)}, got {self.data!r}")
        for name in ("num_layers", "emb_size", "hidden_size", "batch_size", "eval_batch_size", "test_batch_size",
                     "bptt", "epochs", "log_interval"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("lr", "clip", "lr_decay", "weight_decay"):      # weight_decay may be 0, the others not
            v, bound = getattr(self, name), (">= 0" if name == "weight_decay" else "> 0")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 if bound == ">= 0" else v > 0):
                raise ValueError(f"{name} must be {bound}, got {v!r}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads!r}")
        if self.method == "reversible" and not self.reversible:
            raise ValueError(f"method 'reversible' needs a reversible cell (revgru, revlstm, nf-revgru, nf-revlstm), "
                             f"not {self.cell!r}: use --method bptt for ordinary cells")
        return self


def check_run_fields(cfg: TrainConfig) -> None:
    """ValueError naming the first bad run-control field (seed, device, checkpoint intervals)."""
    from revbench.tasks.run_options import check_count, check_device, check_real, check_seed

    check_seed(cfg.seed)
    check_device(cfg.device)
    check_count(cfg.checkpoint_every_steps, "checkpoint_every_steps (--checkpoint-every-steps)")
    check_real(cfg.checkpoint_every_minutes, "checkpoint_every_minutes (--checkpoint-every-minutes)", minimum=0,
               allow_none=True)


# Named configs: field values over the TrainConfig defaults (which are the paper's).
CONFIGS: dict[str, dict] = {
    "paper": {},
    "small": dict(
        emb_size=128, hidden_size=128, batch_size=64, eval_batch_size=10, test_batch_size=10, bptt=35,
        epochs=2, lr=20.0, clip=0.25, weight_decay=1.2e-6,
        dropout_emb=0.0, dropout_in=0.1, dropout_h=0.1, dropout_out=0.1, weight_drop=0.1,
        log_interval=100, checkpoint_every_minutes=3.0, threads=1,
    ),
    "tiny": dict(
        data="synthetic", synthetic_vocab=50, synthetic_tokens=4_000, emb_size=16, hidden_size=16, batch_size=8,
        eval_batch_size=4, test_batch_size=4, bptt=10, epochs=1, lr=5.0, clip=0.5,
        dropout_emb=0.05, dropout_in=0.1, dropout_h=0.1, dropout_out=0.1, weight_drop=0.1,
        log_interval=10, measure_memory=False, final_memory=False, threads=1,
    ),
}

DESCRIPTIONS = {
    "paper": "MacKay et al.'s AWD-style settings (emb 650, hidden 1150/650, batch 20, bptt 70, lr 20, 40 epochs); "
             "for a GPU",
    "small": "CPU-sized: emb = hidden = 128 tied, batch 64, bptt 35, 2 epochs, light dropout",
    "tiny": "seconds: synthetic corpus, 16 units, 1 epoch (tests, smoke runs)",
}


def config_names() -> list[str]:
    return list(CONFIGS)


def get_config(name: str, **overrides) -> TrainConfig:
    """The named config with ``overrides`` (TrainConfig field values) applied, validated."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    values = {**CONFIGS[name], **{k: v for k, v in overrides.items()}}
    return TrainConfig.from_dict(values).validate()
