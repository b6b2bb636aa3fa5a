"""The repeat task of section 4 (``run_repeat``): a model trained and tested per cell and sequence length.

Target at step t = input at step t-1 (``revbench.tasks.repeat.data.repeat_task``). For each model and sequence
length a fresh model is trained from a zero initial state per sequence, with the loss over every
scored step, and tested on fresh sequences. Why exactly reversible (no-forgetting) models must
fail: if a model solves the task, its output at step t+1 is x_t, so running its reverse pass from
(h_T, x_T) recovers x_{T-1} from the output at h_T, then h_{T-1} from (h_T, x_T), then x_{T-2}, and
so on: h_T must determine the whole input sequence, (T-1) log2(V) bits, in a state of fixed size
whose additive (volume-preserving) updates cannot discard anything. A small state relative to the
sequence's information makes this fail at moderate lengths; ordinary cells and buffered reversible
cells need to hold only the last symbol (the buffer keeps what forgetting destroys).

The report: ``revbench.tasks.repeat.report``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from revbench.tasks.cells import CELL_LABEL, FORGETTING_CELLS


@dataclass
class RepeatSettings:
    """The repeat-task experiment. Chosen so that the information of a sequence, (T-1) log2(symbols) bits,
    outgrows a small hidden state (32 units) within the lengths tried, while one symbol (3 bits) is easy."""
    symbols: int = 8
    hidden_size: int = 32
    emb_size: int = 32
    batch_size: int = 32
    steps: int = 400
    lr: float = 1e-2            # Adam
    clip: float = 1.0
    eval_sequences: int = 512
    max_forget_bits: int | None = 3
    seed: int = 0


REPEAT_MODELS = ("gru", "nf-revgru", "revgru", "lstm", "nf-revlstm", "revlstm")
REPEAT_LENGTHS = (3, 5, 10, 20, 40, 80)


def repeat_label(cell: str, k) -> str:
    if cell in FORGETTING_CELLS:
        return f"{CELL_LABEL[cell]} ({'no limit' if k is None else f'k={k}'})"
    return CELL_LABEL[cell]


def _repeat_pass(model, inputs, grad: bool):
    """Run the model over (T, B) inputs from a zero state; logits (T, B, V) of every step."""
    import torch

    from revbench.models.segment import Segment

    seg = Segment(model, inputs, inputs)        # the segment's own loss is not used (targets = any valid ids)
    carry = seg.start(model.init_state(inputs.size(1)))
    out = []
    with torch.set_grad_enabled(grad):
        for t in range(seg.T):
            carry, _ = seg.advance(t, carry, grad=grad)
            out.append(model.decoder(model.cells[-1].output(carry.layers[-1].floats)))
    return seg, torch.stack(out)


def train_repeat(cell: str, seq_len: int, s: RepeatSettings) -> dict:
    """Train one model on the repeat task at one length; accuracy on fresh sequences.

    Training: Adam, ``steps`` batches of fresh random sequences, each from a zero state, loss = mean
    cross-entropy over steps 1..T-1 (step 0 has nothing to repeat), backpropagated through the whole
    sequence by autograd (for reversible cells this gives the same gradients as reversible backprop:
    straight-through through the fixed-point updates). Evaluation: eval mode, ``eval_sequences`` fresh
    sequences, accuracy = argmax == target over steps 1..T-1 (``revbench.tasks.repeat.data.repeat_task_accuracy``).
    """
    import torch
    import torch.nn.functional as F

    from revbench.tasks.repeat.data import REPEAT_IGNORE_INDEX, repeat_task, repeat_task_accuracy
    from revbench.models.lm import RNNLM

    torch.manual_seed(s.seed)
    model = RNNLM(s.symbols, s.emb_size, s.hidden_size, 1, cell=cell,
                  max_forget_bits=s.max_forget_bits if cell in FORGETTING_CELLS else None, tie_weights=False)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    g = torch.Generator().manual_seed(s.seed + 1)
    t0 = time.perf_counter()
    losses = []
    model.train()
    for _ in range(s.steps):
        x, y = repeat_task(s.symbols, seq_len, s.batch_size, generator=g)
        opt.zero_grad()
        seg, logits = _repeat_pass(model, x, grad=True)
        loss = F.cross_entropy(logits.reshape(-1, s.symbols), y.reshape(-1), ignore_index=REPEAT_IGNORE_INDEX)
        loss.backward()
        seg.finish()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
        opt.step()
        losses.append(float(loss.detach()))
    train_s = time.perf_counter() - t0
    model.eval()
    ge = torch.Generator().manual_seed(s.seed + 7919)
    with torch.no_grad():
        x, y = repeat_task(s.symbols, seq_len, s.eval_sequences, generator=ge)
        _, logits = _repeat_pass(model, x, grad=False)
        acc = repeat_task_accuracy(logits, y)
        hits = (logits.argmax(-1) == y)[1:].float()              # (T-1, B)
        q = max(1, hits.size(0) // 4)
        acc_first, acc_last = float(hits[:q].mean()), float(hits[-q:].mean())
    tail = losses[-max(1, len(losses) // 10):]
    return {"model": repeat_label(cell, s.max_forget_bits), "cell": cell, "seq_len": seq_len, "accuracy": acc,
            "accuracy_first_quarter": acc_first, "accuracy_last_quarter": acc_last,
            "final_train_loss": sum(tail) / len(tail), "chance": 1.0 / s.symbols,
            "sequence_bits": (seq_len - 1) * math.log2(s.symbols), "state_units": s.hidden_size,
            "max_forget_bits": s.max_forget_bits if cell in FORGETTING_CELLS else None,
            "steps": s.steps, "batch_size": s.batch_size, "symbols": s.symbols, "train_s": train_s}


def run_repeat(lengths=REPEAT_LENGTHS, models=REPEAT_MODELS, settings: RepeatSettings | None = None,
               out_dir=None, say=print, pool=None) -> list[dict]:
    """Train every (model, length); returns rows. ``pool`` (``revbench.tasks.engine.tasks.Pool`` with engine
    "ray"): each (model, length) is a task of the pool; a failed one is said and left out of the rows."""
    s = settings or RepeatSettings()
    for c in models:
        if c not in CELL_LABEL:
            raise ValueError(f"unknown cell {c!r}; choose from {', '.join(CELL_LABEL)}")
    for T in lengths:
        if T < 2:
            raise ValueError(f"sequence lengths must be >= 2 (step 0 has nothing to repeat), got {T}")
    rows = []
    if pool is not None and pool.remote:
        jobs = [(f"{c}-T{T}", (c, T, s)) for c in models for T in lengths]
        results = pool.map(train_repeat, jobs)
        for name, _ in jobs:
            if not results[name].ok:
                say(f"  {name} FAILED: {results[name].error.splitlines()[0]}")
        return [results[name].value for name, _ in jobs if results[name].ok]
    from revbench.tasks.engine.progress import eta_text

    t0, total = time.monotonic(), len(models) * len(lengths)
    for c in models:
        for T in lengths:
            row = train_repeat(c, T, s)
            rows.append(row)
            left = (time.monotonic() - t0) / len(rows) * (total - len(rows))
            say(f"  [{len(rows)}/{total}] {row['model']:<16} T={T:<4} accuracy {row['accuracy']:.3f}  (first/last "
                f"quarter {row['accuracy_first_quarter']:.2f}/{row['accuracy_last_quarter']:.2f})  "
                f"{row['train_s']:.1f}s, ETA {eta_text(left)}")
    return rows
