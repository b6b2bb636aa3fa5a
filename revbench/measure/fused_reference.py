"""Cost against the fastest standard implementation: the fused ``nn.LSTM`` / ``nn.GRU`` step of the same sizes.

Every language-model record carries ``fused_time_ratio`` (the method's median step time over the fused step's)
and ``fused_peak_ratio`` (its ``peak_bytes`` over the fused step's). The reference is the ``bptt-fused`` method
(``torch.lstm`` / ``torch.gru``, what ``nn.LSTM`` / ``nn.GRU`` run; cuDNN on a GPU) on the ordinary cell of the
method's family and width: same layers, hidden and embedding sizes, batch, T, vocabulary, loss, device and dtype
(``fused_reference_config``; revlstm, nf-revlstm, lstm -> lstm; revgru, nf-revgru, gru -> gru). A reversible
cell of hidden H keeps halves of H/2 per state; the reference is the ordinary cell of hidden H.

``FusedReferenceCache`` measures the reference once per configuration per run, the way the suites measure a
method: memory with every meter by ``measure_method`` (after its warm-up step), then the step timed with
``time.perf_counter`` (pytest-benchmark's default timer) over the case's number of rounds after one warm-up
round, one iteration each, as ``benchmark.pedantic`` times the method; ``fused_time_s`` is the median and
``fused_torch_num_threads`` the ``torch.get_num_threads()`` it was timed with. The method and its reference are
timed in the same session, so with the same pinned thread count (``--revbench-threads``); a record whose
``torch_num_threads`` differs from its reference's gets no ``fused_time_ratio`` (None, with the reason).
Where the reference cannot be measured the ratios are None with a ``*_reason``.
"""
from __future__ import annotations

import statistics
import time

import torch

from revbench import methods
from revbench.measure.harness import BenchConfig, Workload, measure_method

FUSED_METHOD = "bptt-fused"
FUSED_FAMILY = {"lstm": "lstm", "revlstm": "lstm", "nf-revlstm": "lstm",
                "gru": "gru", "revgru": "gru", "nf-revgru": "gru"}
FUSED_KEYS = ("fused_reference", "fused_time_s", "fused_peak_bytes", "fused_rounds", "fused_timer",
              "fused_torch_num_threads", "fused_time_ratio", "fused_peak_ratio")
NO_ATTENTION_KERNEL = "no fused kernel for the attention decoder"


def fused_reference_cell(cell: str) -> str | None:
    """The ordinary cell whose fused kernel is the reference for ``cell`` (None: no such kernel)."""
    return FUSED_FAMILY.get(cell)


def fused_reference_config(cfg: BenchConfig) -> BenchConfig:
    """The reference configuration: ``cfg`` on the ordinary cell of its family (no forgetting limit)."""
    cell = fused_reference_cell(cfg.cell)
    if cell is None:
        raise ValueError(f"no fused kernel for cell {cfg.cell!r}")
    return cfg.with_(cell=cell, max_forget_bits=None)


def time_rounds(fn, rounds: int, warmup_rounds: int = 1) -> list[float]:
    """Seconds of each of ``rounds`` calls of ``fn`` (time.perf_counter) after ``warmup_rounds`` untimed calls."""
    for _ in range(warmup_rounds):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measure_fused_reference(cfg: BenchConfig, rounds: int = 3, warmup_rounds: int = 1, **options) -> dict:
    """Measure the fused reference of ``cfg``: {fused_reference, fused_time_s, fused_peak_bytes, fused_rounds,
    fused_timer, fused_torch_num_threads} or, where it cannot be measured, the figures None and ``reason``
    (``options``: measure_method's ``profiler`` and ``heap``, for the reference's memory record)."""
    cell = fused_reference_cell(cfg.cell)
    if cell is None:
        return {"reason": f"no fused kernel for cell {cfg.cell!r}"}
    ok, why = methods.supports(FUSED_METHOD, cell, kind="lm")
    if not ok:
        return {"reason": why}
    ref = fused_reference_config(cfg)
    out = {"fused_reference": f"{FUSED_METHOD} on {ref.config_id}"}
    try:
        method = methods.get(FUSED_METHOD)
        wl = Workload(ref)
        record = measure_method(method, ref, wl, **options)
        threads = torch.get_num_threads()
        times = time_rounds(lambda: wl.step(method), rounds, warmup_rounds)
    except (RuntimeError, ValueError) as exc:       # e.g. a width or device the kernel cannot take
        return {**out, "reason": f"the fused reference could not run: {str(exc).splitlines()[0][:200]}"}
    out.update(fused_time_s=statistics.median(times), fused_peak_bytes=record.get("peak_bytes"),
               fused_rounds=rounds, fused_torch_num_threads=threads,
               fused_timer=f"time.perf_counter, median of {rounds} rounds of 1 step after {warmup_rounds} "
                           "warm-up round(s), as pytest-benchmark times the method")
    if out["fused_peak_bytes"] is None:
        out["peak_reason"] = record.get("peak_bytes_reason") or "the fused reference's peak_bytes is unavailable"
    return out


class FusedReferenceCache:
    """Fused references measured once per reference configuration (``config_id``) per run.
    ``measure(cfg, rounds)`` defaults to ``measure_fused_reference``."""

    def __init__(self, measure=None, **options):
        self._measure = measure or (lambda cfg, rounds: measure_fused_reference(cfg, rounds, **options))
        self._refs: dict[str, dict] = {}

    def reference(self, cfg: BenchConfig, rounds: int = 3) -> dict:
        if fused_reference_cell(cfg.cell) is None:
            return self._measure(cfg, rounds)
        key = fused_reference_config(cfg).config_id
        if key not in self._refs:
            self._refs[key] = self._measure(cfg, rounds)
        return self._refs[key]


def add_fused_ratios(record: dict, ref: dict, time_median_s: float | None,
                     time_reason: str = "the method's step was not timed (benchmarks disabled?)") -> dict:
    """Add the fused reference's figures and ``fused_time_ratio`` = time_median_s / fused_time_s,
    ``fused_peak_ratio`` = peak_bytes / fused_peak_bytes to ``record`` (None with a reason where either is
    missing)."""
    for key in ("fused_reference", "fused_time_s", "fused_peak_bytes", "fused_rounds", "fused_timer",
                "fused_torch_num_threads"):
        record[key] = ref.get(key)
    reason = ref.get("reason")
    fused_t, fused_p, peak = ref.get("fused_time_s"), ref.get("fused_peak_bytes"), record.get("peak_bytes")
    if reason:
        for key in ("fused_reference", "fused_time_s", "fused_peak_bytes", "fused_torch_num_threads"):
            if record[key] is None:
                record[f"{key}_reason"] = reason
    ours, theirs = record.get("torch_num_threads"), ref.get("fused_torch_num_threads")
    if fused_t and time_median_s and ours is not None and theirs is not None and ours != theirs:
        record["fused_time_ratio"] = None
        record["fused_time_ratio_reason"] = (f"the fused reference was timed with {theirs} thread(s), the method "
                                             f"with {ours}: the times are not comparable")
    elif fused_t and time_median_s:
        record["fused_time_ratio"] = time_median_s / fused_t
    else:
        record["fused_time_ratio"] = None
        record["fused_time_ratio_reason"] = reason or (time_reason if not time_median_s else
                                                       "the fused reference's time is unavailable")
    if fused_p and peak:
        record["fused_peak_ratio"] = peak / fused_p
    else:
        record["fused_peak_ratio"] = None
        record["fused_peak_ratio_reason"] = reason or ref.get("peak_reason") or "peak_bytes unavailable"
    return record


def no_fused_reference(record: dict, reason: str = NO_ATTENTION_KERNEL) -> dict:
    """Every fused figure None with ``reason`` (e.g. the encoder-decoder: its decoder attends at every step)."""
    for key in FUSED_KEYS:
        record[key] = None
        record[f"{key}_reason"] = reason
    return record


def benchmark_median(benchmark) -> float | None:
    """pytest-benchmark's median of the timed rounds of ``benchmark`` (None when it did not time them)."""
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    return getattr(stats, "median", None)
