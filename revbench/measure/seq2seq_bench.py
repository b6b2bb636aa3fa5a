"""The harness for the attention encoder-decoder: one training step of any seq2seq method, measured the same way
as a language-model step (``revbench.measure.harness``), as one flat record of kind ``"seq2seq"``.

A ``Seq2SeqBenchConfig`` names a model (``revbench.models.seq2seq.Seq2Seq``) and a synthetic batch: ``batch_size``
random sentence pairs whose source lengths are spread evenly over [src_len / 2, src_len] and target lengths over
[tgt_len / 2, tgt_len] (so both sides are padded, as in real batches). The record adds to the language model's:

- ``kind`` = ``"seq2seq"``, ``context``, ``src_len``, ``tgt_len``; ``seq_len`` = src_len + tgt_len, the recurrent
  steps of one training step (the largest sentence lengths, padding included);
- ``enc_held_bytes`` / ``dec_held_bytes``: the live bytes each side's forward pass leaves for its backward pass
  (live-tensor meter read at the end of each forward pass; see ``revbench.tasks.nmt.step_memory.measure_step_memory``);
- the paper-style figures per side (``enc_saving_actual``, ``dec_saving_ideal``, ...: ``BatchRun.stats``); the
  single-segment figures of a language-model record (``saving_actual``, ...) are null with a reason.
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass, replace

import torch

from revbench.core.buffer_reference import simulating
from revbench.measure import memory
from revbench.measure.environment import environment_info
from revbench.measure.fused_reference import no_fused_reference
from revbench.measure.harness import BaselineCache, base_record, target_dtype
from revbench.measure.live import LiveTensorMeter
from revbench import methods
from revbench.models.seq2seq import Seq2Seq

KIND = "seq2seq"
SIDE_FIGURES = ("enc_state_bits_baseline", "enc_buffer_bits_actual", "enc_buffer_bits_ideal", "enc_context_bits_actual",
                "enc_saving_actual", "enc_saving_ideal", "dec_state_bits_baseline", "dec_buffer_bits_actual",
                "dec_buffer_bits_ideal", "dec_saving_actual", "dec_saving_ideal", "enc_buffer_bits_reference",
                "dec_buffer_bits_reference")


@dataclass(frozen=True)
class Seq2SeqBenchConfig:
    """One encoder-decoder and one synthetic batch (random tokens; an untrained model's gates)."""
    cell: str = "revgru"
    context: str = "emb+h:20"
    num_layers: int = 1
    hidden_size: int = 128
    emb_size: int = 128
    batch_size: int = 32
    src_len: int = 30
    tgt_len: int = 30
    max_forget_bits: int | None = 3
    vocab_size: int = 2000
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    @property
    def reversible(self) -> bool:
        return self.cell.startswith(("rev", "nf-rev"))

    @property
    def config_id(self) -> str:
        k = "knone" if self.max_forget_bits is None or not self.reversible else f"k{self.max_forget_bits}"
        ctx = self.context.replace(":", "").replace("+", "_")
        return (f"s2s-{self.cell}-{ctx}-L{self.num_layers}-H{self.hidden_size}-E{self.emb_size}-B{self.batch_size}"
                f"-S{self.src_len}-T{self.tgt_len}-{k}-V{self.vocab_size}-{self.device}-{self.dtype}")

    def with_(self, **changes) -> "Seq2SeqBenchConfig":
        return replace(self, **changes)


def _lengths(n: int, top: int) -> list[int]:
    """n lengths spread evenly over [ceil(top / 2), top], the longest first."""
    low = max(1, (top + 1) // 2)
    if n == 1:
        return [top]
    return [top - round(i * (top - low) / (n - 1)) for i in range(n)]


class Seq2SeqWorkload:
    """The model and one padded batch of a configuration (deterministic from the seed)."""

    def __init__(self, cfg: Seq2SeqBenchConfig):
        from revbench.models.seq2seq.inputs import make_batch

        dtype = target_dtype(cfg)
        for name in ("src_len", "tgt_len", "batch_size"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(cfg, name)!r}")
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.model = Seq2Seq(cfg.vocab_size, cfg.vocab_size, cfg.emb_size, cfg.hidden_size, cfg.num_layers,
                             cell=cfg.cell, max_forget_bits=cfg.max_forget_bits if cfg.reversible else None,
                             context=cfg.context).to(device=cfg.device, dtype=dtype)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        # the target side gets an EOS appended by make_batch: draw tgt_len - 1 tokens so T = tgt_len
        srcs, tgts = _lengths(cfg.batch_size, cfg.src_len), _lengths(cfg.batch_size, max(1, cfg.tgt_len - 1))
        pairs = [(torch.randint(4, cfg.vocab_size, (ls,), generator=g).tolist(),
                  torch.randint(4, cfg.vocab_size, (lt,), generator=g).tolist()) for ls, lt in zip(srcs, tgts)]
        self.batch = make_batch(pairs)             # BatchRun moves it to the model's device

    def warm_up(self, method):
        """One step on the first two sentence pairs' first steps: allocates the parameter gradients."""
        b = self.batch
        S, T = min(2, b.src.shape[0]), min(2, b.tgt_in.shape[0])
        method.step(self.model, b._replace(src=b.src[:S, :2], src_lengths=b.src_lengths[:2].clamp(max=S),
                                           tgt_in=b.tgt_in[:T, :2], tgt_out=b.tgt_out[:T, :2],
                                           tgt_lengths=b.tgt_lengths[:2].clamp(max=T)))

    def step(self, method, on_phase=None):
        out = method.step(self.model, self.batch, on_phase=on_phase)
        if self.cfg.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out


def measure_seq2seq(method, cfg: Seq2SeqBenchConfig, workload: Seq2SeqWorkload | None = None,
                    profiler: str = "auto", heap: bool = True) -> dict:
    """Warm up, then measure one training step of ``method`` on ``cfg`` with every meter, then one identical step
    for each meter that needs a step of its own (the heap meter unless ``heap=False``, torch's profiler in mode
    ``profiler``: see ``memory.apart_meters``). Returns the record."""
    wl = workload or Seq2SeqWorkload(cfg)
    wl.warm_up(method)
    gc.collect()
    params = list(wl.model.parameters())
    meters = memory.default_meters(cfg.device, params)
    live = next(m for m in meters if isinstance(m, LiveTensorMeter))
    marks, outs = {}, []

    def on_phase(name):
        marks.setdefault(name, live.current_bytes)

    with simulating():          # the reference buffer, in the measured step only (enc_/dec_buffer_bits_reference)
        figures = memory.measure(lambda: outs.append(wl.step(method, on_phase)), meters)
    stats = outs[0].stats
    outs.clear()
    figures.update(memory.measure_apart(lambda: wl.step(method), memory.apart_meters(cfg.device, profiler, heap)))
    record = base_record(KIND, method, cfg, figures)
    record["seq_len"] = cfg.src_len + cfg.tgt_len
    if figures.get("live_peak_bytes") is not None and {"start", "encoded", "decoded"} <= set(marks):
        record["enc_held_bytes"] = marks["encoded"] - marks["start"]
        record["dec_held_bytes"] = marks["decoded"] - marks["encoded"]
    else:
        record["enc_held_bytes"] = record["dec_held_bytes"] = None
        record["enc_held_bytes_reason"] = record["dec_held_bytes_reason"] = "the live-tensor meter did not run"
    for key in SIDE_FIGURES:
        record[key] = stats.get(key)
        if record[key] is not None and not math.isfinite(record[key]):
            record[key] = None
            record[f"{key}_reason"] = "nothing was forgotten on this side (no-forgetting cell): the ratio is infinite"
        elif record[key] is None:
            record[f"{key}_reason"] = ("this method does not keep the information buffer" if cfg.reversible
                                       else "this cell has no buffer")
    for key in ("state_bits_baseline", "buffer_bits_actual", "buffer_bits_ideal", "saving_actual", "saving_ideal",
                "buffer_efficiency"):
        record[key] = None
        record[f"{key}_reason"] = "encoder-decoder: see the enc_/dec_ figures"
    for key in ("forward_steps", "reverse_steps", "stored_states_peak"):
        record[key] = stats.get(key)
    no_fused_reference(record)          # no fused kernel for the attention decoder
    record.update(environment_info(cfg.device))
    return record


def add_side_savings(record: dict, bptt: dict | None) -> dict:
    """``enc_allocator_saving`` / ``dec_allocator_saving``: bptt's held bytes on the same configuration over
    this record's (None with a reason when either is missing)."""
    for side in ("enc", "dec"):
        key, held = f"{side}_allocator_saving", record.get(f"{side}_held_bytes")
        base = None if bptt is None else bptt.get(f"{side}_held_bytes")
        if base and held:
            record[key] = base / held
        else:
            record[key] = None
            record[f"{key}_reason"] = ("no bptt measurement on this configuration" if not base
                                       else f"{side}_held_bytes unavailable")
    return record


def bptt_cache(**options) -> BaselineCache:
    """``revbench.measure.harness.BaselineCache`` of encoder-decoder bptt records (``options``: measure_seq2seq's
    ``profiler`` and ``heap``)."""
    return BaselineCache(measure=lambda cfg: measure_seq2seq(methods.get("bptt"), cfg, **options))


__all__ = ["KIND", "Seq2SeqBenchConfig", "Seq2SeqWorkload", "measure_seq2seq", "add_side_savings",
           "bptt_cache"]
