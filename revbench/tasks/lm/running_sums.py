"""The running sums of a language-model training run, per epoch and per log interval (kept in its checkpoint,
so a resumed run goes on adding to them), and the epoch's savings computed from them."""
from __future__ import annotations

STAT_SUMS = ("state_bits_baseline", "buffer_bits_actual", "buffer_bits_ideal")


def new_epoch_acc() -> dict:
    return {"loss_sum": 0.0, "tokens": 0, "steps": 0, "time_s": 0.0,
            **{k: 0.0 for k in STAT_SUMS}, "with_buffer_steps": 0, "memory": None}


def new_interval_acc() -> dict:
    return {"loss_sum": 0.0, "tokens": 0, "steps": 0, "time_s": 0.0, **{k: 0.0 for k in STAT_SUMS},
            "with_buffer_steps": 0}


def epoch_savings(a: dict) -> dict:
    """The paper-style savings of an epoch (or a log interval) from its running sums: ratios of sums
    (token-weighted). An interval sum from a checkpoint written before intervals kept them gives None."""
    if not a.get("with_buffer_steps"):
        return {"saving_actual": None, "saving_ideal": None, "buffer_efficiency": None}
    base, act, ideal = a["state_bits_baseline"], a["buffer_bits_actual"], a["buffer_bits_ideal"]
    return {"saving_actual": base / act if act else None, "saving_ideal": base / ideal if ideal else None,
            "buffer_efficiency": act / ideal if ideal else None}
