"""Memory of one NMT training step: :func:`measure_step_memory` (the live-tensor peak of one step,
``revbench.measure.live.LiveTensorMeter``) and :func:`point_memory` (every method of :data:`MEMORY_METHODS` on
the :func:`representative_batch` of a trained grid point)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from revbench import methods
from revbench.models.seq2seq import Seq2Seq
from revbench.models.seq2seq.inputs import make_batch
from revbench.tasks.nmt.build import build_model, train_pairs
from revbench.tasks.nmt.config import NMTConfig
from revbench.tasks.integrity import load_model_state
from revbench.tasks.nmt.train import BEST, load_best

# Methods whose live-tensor peak every grid point measures (with their default options; reversible only for
# reversible cells): plain BPTT, Chen's sqrt(T) checkpointing, Gruslys' policy at a 5% slot budget.
MEMORY_METHODS = ("bptt", "checkpoint", "gruslys", "reversible")


def representative_batch(pairs, batch_size: int):
    """A batch of typical lengths: ``batch_size`` pairs from the middle of the length-sorted training set."""
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1]), i))
    mid = max(0, len(order) // 2 - batch_size // 2)
    chosen = order[mid:mid + batch_size]
    return make_batch([pairs[i] for i in chosen], chosen)


def measure_step_memory(model: Seq2Seq, batch, method: str, loss_norm: str = "sents", seed: int = 0) -> dict:
    """Live-tensor peak of one training step (``revbench.measure.live.LiveTensorMeter``): bytes of tensors created
    during the step and alive at once, with the parameter gradients allocated beforehand (so they are not
    counted). Returns ``live_peak_bytes``, its split and the step's paper-style stats. Gradients are cleared.

    Per side, the live bytes each forward pass leaves behind for its backward pass: ``enc_held_bytes`` (live
    at the end of the encoder's forward pass minus live at the start of the step: the encoder's graph or
    buffers, stored states and the attention context) and ``dec_held_bytes`` (live at the end of the decoder's
    forward pass minus live at the end of the encoder's). The backward pass's working set (the one step or
    stretch being recomputed) is in ``live_peak_bytes`` only."""
    from revbench.measure.live import LiveTensorMeter

    params = list(model.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    m = methods.get(method)
    meter = LiveTensorMeter(params=params)
    meter.prepare()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    model.train()
    marks = {}
    try:
        with meter:
            out = m.step(model, batch, normalize=loss_norm,
                         on_phase=lambda name: marks.setdefault(name, meter.current_bytes))
    finally:
        torch.set_rng_state(state)
        for p in params:
            p.grad = None
    figs = meter.figures()
    held = {"enc_held_bytes": marks["encoded"] - marks["start"], "dec_held_bytes": marks["decoded"] - marks["encoded"]}
    return {"method": method, **figs, **held, "stats": out.stats}


def point_memory(config: NMTConfig, corpus, run_dir: Path) -> dict:
    """Live-tensor peaks of one training step of the trained model on a representative batch, for every method
    of ``MEMORY_METHODS`` that applies (same dropout masks)."""
    torch.manual_seed(config.seed)
    model = build_model(config, corpus)
    if (run_dir / BEST).exists():
        load_model_state(model, load_best(run_dir / BEST)["model"], f"best model {str(run_dir / BEST)!r}")
    batch = representative_batch(train_pairs(config, corpus), config.batch_size)
    out = {"batch_src_len": int(batch.src.shape[0]), "batch_tgt_len": int(batch.tgt_in.shape[0]),
           "batch_size": int(batch.src.shape[1])}
    rev = config.cell.startswith(("rev", "nf-rev"))
    for name in (m for m in MEMORY_METHODS if rev or m != "reversible"):
        r = measure_step_memory(model, batch, name, config.loss_norm, seed=config.seed)
        out[f"{name}_live_peak_bytes"] = r["live_peak_bytes"]
        out[f"{name}_live_peak_other_bytes"] = r.get("live_peak_other_bytes")
        out[f"{name}_enc_held_bytes"], out[f"{name}_dec_held_bytes"] = r["enc_held_bytes"], r["dec_held_bytes"]
        if name == "reversible":
            out["step_stats"] = {k: v for k, v in r["stats"].items() if "saving" in k or "bits" in k}
    if "reversible_live_peak_bytes" in out and out["reversible_live_peak_bytes"]:
        out["allocator_saving"] = out["bptt_live_peak_bytes"] / out["reversible_live_peak_bytes"]
        for side in ("enc", "dec"):
            held = out[f"reversible_{side}_held_bytes"]
            out[f"{side}_allocator_saving"] = out[f"bptt_{side}_held_bytes"] / held if held > 0 else math.inf
    return out
