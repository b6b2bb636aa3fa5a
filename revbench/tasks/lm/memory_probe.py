"""The memory of one language-model training step: ``measure_step`` meters one method's step,
``compare_memory`` steps the same segment of the same model by ``bptt`` and by the run's method (same dropout
masks) and gives their peak ratio."""
from __future__ import annotations

import torch

from revbench import methods
from revbench.measure import memory
from revbench.tasks.jsonio import finite


def measure_step(model, method, inputs, targets, state, seed: int, device: str) -> dict:
    """Meter one step of ``method`` (grads already allocated, zeroed in place; masks from ``seed``).

    Returns the record's memory figures (``peak_bytes``, ``live_peak_bytes``, ...) and the step's
    paper-style stats. Parameter gradients are left zeroed; the RNG state is restored afterwards.
    """
    rng = torch.get_rng_state()
    try:
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()
        torch.manual_seed(seed)
        outs = []
        figures = memory.measure(lambda: outs.append(method.step(model, inputs, targets, state)),
                                 memory.default_meters(device, list(model.parameters())))
        stats = outs[0].stats
        outs.clear()
        for p in model.parameters():
            p.grad.zero_()
    finally:
        torch.set_rng_state(rng)
    rec = {k: v for k, v in memory.peak_figures(figures).items()}
    for k in ("live_peak_bytes", "cuda_peak_allocated_bytes", "rss_peak_delta_bytes", "saved_bytes"):
        rec[k] = figures.get(k)
    for k in ("saving_actual", "saving_ideal", "buffer_efficiency", "state_bits_baseline", "buffer_bits_actual",
              "buffer_bits_ideal"):
        rec[k] = finite(stats.get(k)) if k.startswith(("saving", "buffer_eff")) else stats.get(k)
    return rec


def compare_memory(model, method_name: str, method_options: dict, inputs, targets, seed: int, device: str) -> dict:
    """``bptt`` and ``method_name`` on the same segment of the same model with the same dropout masks.

    Returns ``{"segment": {T, B}, "bptt": figures, method_name: figures, "allocator_saving": bptt peak /
    method peak}`` (the saving is None for ordinary cells, whose method is bptt itself).
    """
    was = model.training
    model.train()
    try:
        state = model.init_state(inputs.size(1))
        out = {"segment": {"seq_len": int(inputs.size(0)), "batch_size": int(inputs.size(1))}}
        out["bptt"] = measure_step(model, methods.get("bptt"), inputs, targets, state, seed, device)
        if method_name != "bptt":
            out[method_name] = measure_step(model, methods.get(method_name, **method_options), inputs, targets,
                                            state, seed, device)
            a, b = out["bptt"].get("peak_bytes"), out[method_name].get("peak_bytes")
            out["allocator_saving"] = a / b if a and b else None
        else:
            out["allocator_saving"] = None
        out["method"] = method_name
    finally:
        model.train(was)
    return out
