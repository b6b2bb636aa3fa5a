"""Running one measured region under several memory meters, independent of the code measured.

:func:`measure` runs a function once under several meters (each a :class:`~revbench.measure.meter.Meter`,
the protocol) and merges their figures into one flat dict; :func:`measuring` does the same around a ``with``
body; :func:`default_meters` picks the meters for a device; :func:`peak_figures` picks a record's headline
``peak_bytes``.

Meters (figure names are the keys of the benchmark record, see RECORD.md), one module each:

- :class:`~revbench.measure.live.LiveTensorMeter` (any device): a ``TorchDispatchMode`` that sees every op's
  outputs and tracks their storages until they die. ``live_peak_bytes`` = peak bytes of storages created in
  the region and alive at the same time (the peak above what was alive before), split at the moment of the
  peak into ``live_peak_param_bytes`` / ``live_peak_grad_bytes`` / ``live_peak_other_bytes``.
- :class:`~revbench.measure.rss.RSSMeter` (Linux): process peak resident set size, ``rss_peak_delta_bytes``.
- :class:`~revbench.measure.saved.SavedTensorsMeter`: bytes autograd saved for backward, ``saved_bytes``
  (a cross-check only).
- :class:`~revbench.measure.cuda.CudaAllocatorMeter`: the CUDA caching allocator's exact peaks,
  ``cuda_peak_allocated_bytes`` and ``cuda_peak_reserved_bytes``.
- :class:`~revbench.measure.nvml.NvmlMeter`: device and process memory sampled through NVML by a background
  thread, ``nvml_peak_used_bytes``, ``nvml_process_peak_used_bytes`` and ``nvml_samples``. On a CPU run both
  CUDA meters' figures are written as None with the reason (:class:`~revbench.measure.meter.NotHere`).

Two more meters each run in a step of their own (:func:`measure_apart`, :func:`apart_meters`), after the
metered step, because each sees the other meters' bookkeeping (both read the process heap):

- :class:`~revbench.measure.heap.HeapMeter` (Linux, glibc; CPU runs): every heap byte above the step's start at
  its peak, ``heap_peak_bytes`` (tensor data plus autograd nodes, saved-variable records, tensor objects).
- :class:`~revbench.measure.profiler_meter.ProfilerMeter`: torch's own meter, the PyTorch profiler's memory
  view, ``profiler_peak_bytes`` and its category split at the peak (``profiler_activation_bytes``, ...).

After warm-up a step is deterministic, so the extra steps measure the same computation: repeated steps give
byte-identical live-tensor and profiler figures (tests/test_profiler_meter.py).

The machine a record was measured on: :func:`revbench.measure.environment.environment_info`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

import torch

from revbench.measure.cuda import CudaAllocatorMeter
from revbench.measure.heap import HeapMeter
from revbench.measure.live import LiveTensorMeter
from revbench.measure.meter import Meter, NotHere, as_device, param_list
from revbench.measure.nvml import NvmlMeter
from revbench.measure.profiler_meter import CATEGORY_FIGURES, SPLIT_COST_REASON, ProfilerMeter
from revbench.measure.rss import RSSMeter
from revbench.measure.saved import SavedTensorsMeter

__all__ = ["measure", "measuring", "peak_figures", "default_meters", "apart_meters", "measure_apart",
           "PROFILER_SPLITS", "AUTO_SPLIT_MAX_EVENTS"]

PROFILER_SPLITS = ("auto", "split", "peak", "off")
# "auto" computes the profiler's category split when the step made at most this many allocations and frees
# (torch's MemoryProfile analysis costs about 0.5 ms per op: about 1 s at this size)
AUTO_SPLIT_MAX_EVENTS = 2000


def _check_meters(meters: Iterable[Meter]) -> list[Meter]:
    ms = list(meters)
    for m in ms:
        if not isinstance(m, Meter):
            raise TypeError(f"not a meter: {m!r} (expected a revbench.measure.meter.Meter)")
    if len({id(m) for m in ms}) != len(ms):
        raise ValueError("the same meter object was given twice")
    seen: dict[str, str] = {}
    for m in ms:
        for fig in m.figure_names:
            if fig in seen:
                raise ValueError(f"figure {fig!r} is produced by both {seen[fig]} and {m.name}")
            seen[fig] = m.name
    # outermost first; a stable sort keeps the caller's order among equals
    return sorted(ms, key=lambda m: m.nest_order)


@contextlib.contextmanager
def measuring(meters: Iterable[Meter]) -> Iterator[dict[str, Any]]:
    """Context manager: run the body under ``meters`` (nested by ``nest_order``, the live-tensor meter
    innermost) and fill the yielded dict with all their figures when the body ends."""
    ordered = _check_meters(meters)
    for m in ordered:
        if m.available()[0]:
            m.prepare()
    result: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for m in ordered:
            m.start()
            stack.callback(m.stop)
        yield result
    for m in ordered:
        result.update(m.figures())


def measure(fn: Callable[[], Any], meters: Iterable[Meter]) -> dict[str, Any]:
    """Run ``fn()`` once under all ``meters`` and return their figures merged into one flat dict.

    Meters are nested by ``nest_order`` (NVML outermost, then the CUDA allocator, RSS, saved tensors and the
    live-tensor meter innermost), so the live-tensor meter sees only ``fn``'s ops. Unavailable meters give
    ``None`` figures with ``<figure>_reason``. If ``fn`` raises, every meter is stopped and the error propagates.
    """
    if not callable(fn):
        raise TypeError(f"measure() needs a callable, got {type(fn).__name__}")
    with measuring(meters) as figures:
        fn()
    return figures


def peak_figures(figures: dict[str, Any]) -> dict[str, Any]:
    """The record's headline ``peak_bytes`` and ``peak_bytes_meter`` from :func:`measure`'s figures: the CUDA
    allocator's exact ``cuda_peak_allocated_bytes`` where there is one, else the live-tensor meter's
    ``live_peak_bytes``; None with ``peak_bytes_reason`` when neither was measured."""
    for fig, meter in (("cuda_peak_allocated_bytes", "cuda_allocator"), ("live_peak_bytes", "live_tensors")):
        if figures.get(fig) is not None:
            return {"peak_bytes": figures[fig], "peak_bytes_meter": meter}
    reasons = [f"{fig}: {figures[f'{fig}_reason']}" for fig in ("cuda_peak_allocated_bytes", "live_peak_bytes")
               if figures.get(f"{fig}_reason")]
    return {
        "peak_bytes": None,
        "peak_bytes_meter": None,
        "peak_bytes_reason": "; ".join(reasons) or "neither the CUDA allocator nor the live-tensor meter was used",
    }


def default_meters(device: str | torch.device, params: Iterable[torch.Tensor] | None = None) -> list[Meter]:
    """The meters for a step on ``device``: on cuda NVML + CUDA allocator + saved tensors + live tensors
    (restricted to that device); on cpu RSS + saved tensors + live tensors (CPU storages)."""
    dev = as_device(device)
    if dev is None:
        raise ValueError("default_meters needs a device ('cpu' or 'cuda[:N]')")
    plist = param_list(params, "default_meters")
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
        return [NvmlMeter(dev), CudaAllocatorMeter(dev), SavedTensorsMeter(plist), LiveTensorMeter(plist, device=dev)]
    if dev.type == "cpu":
        why = ("this run is on cpu (the CUDA meters measure cuda runs only)" if torch.cuda.is_available()
               else "no CUDA device: this run is on cpu")
        return [NotHere("nvml", NvmlMeter.figure_names, why, NvmlMeter.nest_order),
                NotHere("cuda_allocator", CudaAllocatorMeter.figure_names, why, CudaAllocatorMeter.nest_order),
                RSSMeter(), SavedTensorsMeter(plist), LiveTensorMeter(plist, device=dev)]
    raise ValueError(f"unsupported device {str(dev)!r}: expected 'cpu' or 'cuda[:N]'")


def apart_meters(device: str | torch.device, profiler: str = "auto", heap: bool = True) -> list[Meter]:
    """The meters that each need a step of their own, for a step on ``device``: the heap meter (CPU runs;
    on cuda its figure is None with the reason) and torch's profiler meter (``profiler``: "split" for the
    category split, "peak" for the peak only, "auto" for the peak and, when the step is small enough to
    afford it, the split; "off": its figures None with the reason). ``heap=False``: the heap figure is None
    with the reason (saves a step: the heap step costs about 3-4x a plain step, the profiler's about 2x)."""
    dev = as_device(device)
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: expected 'cpu' or 'cuda[:N]'")
    if profiler not in PROFILER_SPLITS:
        raise ValueError(f"profiler must be one of {', '.join(PROFILER_SPLITS)}, got {profiler!r}")
    if not heap:
        heap_meter: Meter = NotHere("heap", HeapMeter.figure_names,
                                    "the heap meter was switched off (--revbench-heap off)")
    elif dev.type == "cpu":
        heap_meter = HeapMeter()
    else:
        heap_meter = NotHere("heap", HeapMeter.figure_names,
                             "the heap meter counts host (malloc) memory: this run's tensors are on cuda")
    if profiler == "off":
        prof: Meter = NotHere("torch_profiler", ProfilerMeter.figure_names,
                              "the profiler meter was switched off (--revbench-profiler off)")
    else:
        prof = ProfilerMeter(dev, split=profiler == "split")
        prof.auto_split = profiler == "auto"
    return [heap_meter, prof]


def measure_apart(fn: Callable[[], Any], meters: Iterable[Meter]) -> dict[str, Any]:
    """Run ``fn()`` once per available meter, each meter alone (nothing else measuring that step), and merge the
    figures (an unavailable meter's: None with the reason, without a step).

    A :class:`ProfilerMeter` made by :func:`apart_meters` with ``profiler="auto"`` that saw at most
    ``AUTO_SPLIT_MAX_EVENTS`` allocations and frees runs ``fn()`` once more with the category split."""
    out: dict[str, Any] = {}
    for m in _check_meters(meters):
        if not m.available()[0]:          # nothing to measure: no step is spent on it
            out.update(m.figures())
            continue
        figures = measure(fn, [m])
        if isinstance(m, ProfilerMeter) and getattr(m, "auto_split", False) and figures["profiler_peak_bytes"] \
                is not None:
            if m.allocations <= AUTO_SPLIT_MAX_EVENTS:
                split = ProfilerMeter(m._device, split=True)
                figures = measure(fn, [split])
            else:
                for fig in CATEGORY_FIGURES:
                    figures[f"{fig}_reason"] = SPLIT_COST_REASON.format(
                        why=f"the step made more than {AUTO_SPLIT_MAX_EVENTS} allocations and frees, the most "
                            "that auto splits")
        out.update(figures)
    return out
