"""Reading every meter against known truth: what the CUDA context costs, what the first calls cost, and what each
meter sees of tensors of known size.

- :func:`context_cost`: NVML device and process memory before and after this process creates its CUDA context
  (the first tensor on the device); the context's own cost is the growth minus what the caching allocator then
  holds (``memory_reserved``). It is measured before anything else touches the device.
- :func:`startup_costs`: seconds of the first calls that load libraries and kernels (context creation, the first
  cuBLAS matmul, the first cuDNN LSTM forward and backward), which a fresh machine pays once.
- :func:`calibrate`: for each known size (256 MiB, 1 GiB) one region that allocates a tensor of exactly that many
  bytes, writes it, holds it briefly (so NVML's sampler sees it) and frees it, measured by every meter;
  :func:`calibration_rows` sets each figure against the truth (``seen - expected``, ``seen / expected``).
  The CUDA allocator and the live-tensor meter must be exact; NVML shows what the driver hands out (2 MiB pages)
  and includes what the allocator caches.
"""
from __future__ import annotations

import gc
import time
from typing import Any, Callable, Iterable

import torch

from revbench.measure.memory import measure

MiB = 2 ** 20
SIZES = (256 * MiB, 1024 * MiB)
HOLD_S = 0.05           # how long a calibration tensor is held: 50 of NVML's 1 ms samples

# figure -> (meter, what it should read for a tensor of n bytes: "exact" or "about")
EXPECTED = {
    "cuda_peak_allocated_bytes": ("CUDA allocator (allocated)", "exact"),
    "cuda_peak_reserved_bytes": ("CUDA allocator (reserved)", "exact after empty_cache"),
    "live_peak_bytes": ("live-tensor meter", "exact"),
    "nvml_peak_used_bytes": ("NVML device", "about (driver pages, sampled)"),
    "nvml_process_peak_used_bytes": ("NVML process", "about (driver pages, sampled)"),
    "rss_peak_delta_bytes": ("process RSS", "about (CPU only)"),
}


def context_cost(before: dict, after: dict, reserved_bytes: int) -> dict[str, Any]:
    """The CUDA context's own bytes from two NVML readings (``revbench.measure.nvml.read_nvml``) taken before and
    after the context was created, ``reserved_bytes`` = what the caching allocator held at the second reading.
    ``context_device_bytes`` = growth of device memory used - reserved; ``context_process_bytes`` = this
    process's NVML figure after - before - reserved. None with a ``*_reason`` where NVML could not tell."""
    out: dict[str, Any] = {"allocator_reserved_bytes": int(reserved_bytes)}
    if not (before.get("available") and after.get("available")):
        why = before.get("reason") or after.get("reason") or "NVML unavailable"
        for key in ("context_device_bytes", "context_process_bytes"):
            out[key] = None
            out[f"{key}_reason"] = why
        return out
    out["context_device_bytes"] = after["device_used_bytes"] - before["device_used_bytes"] - reserved_bytes
    p0, p1 = before.get("process_used_bytes"), after.get("process_used_bytes")
    if p0 is None or p1 is None:
        out["context_process_bytes"] = None
        out["context_process_bytes_reason"] = (before.get("process_used_bytes_reason")
                                               or after.get("process_used_bytes_reason")
                                               or "NVML did not list this process")
    elif not after.get("process_listed", True):
        out["context_process_bytes"] = None
        out["context_process_bytes_reason"] = ("NVML does not list this process among the device's compute "
                                               "processes (in a container NVML reports host PIDs)")
    else:
        out["context_process_bytes"] = p1 - p0 - reserved_bytes
    if before.get("process_listed"):
        out["note"] = ("this process already had a CUDA context before the first reading: the context cost "
                       "shown is what was added since, a lower bound")
    if after.get("other_processes"):
        out["note_other"] = (f"{after['other_processes']} other process(es) use the device: the device figure "
                             "includes whatever they allocated meanwhile")
    return out


def _timed(fn, sync, clock) -> float:
    t0 = clock()
    fn()
    sync()
    return clock() - t0


def startup_costs(device: torch.device, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds of the one-time first calls: ``first_matmul_s`` (cuBLAS handle and kernels) and
    ``first_cudnn_lstm_s`` (cuDNN loaded, an nn.LSTM forward and backward), each followed by the same call again
    (``second_*``) to show what is one-time."""
    def sync():
        torch.cuda.synchronize(device)

    a = torch.randn(256, 256, device=device)
    lstm = torch.nn.LSTM(64, 64).to(device)
    x = torch.randn(8, 4, 64, device=device)

    def lstm_step():
        lstm(x)[0].sum().backward()

    out = {}
    for name, fn in (("matmul", lambda: a @ a), ("cudnn_lstm", lstm_step)):
        out[f"first_{name}_s"] = _timed(fn, sync, clock)
        out[f"second_{name}_s"] = _timed(fn, sync, clock)
    return out


def calibration_rows(nbytes: int, figures: dict) -> list[dict[str, Any]]:
    """One row per meter figure for a region that held exactly ``nbytes``: meter, figure, expected, seen,
    ``delta_bytes`` = seen - expected, ``ratio`` = seen / expected (None where the meter did not measure, with its
    reason)."""
    rows = []
    for fig, (meter, how) in EXPECTED.items():
        if fig not in figures:
            continue
        seen = figures[fig]
        row = {"tensor_bytes": nbytes, "meter": meter, "figure": fig, "expected": how, "seen_bytes": seen,
               "delta_bytes": None if seen is None else seen - nbytes,
               "ratio": None if seen is None else seen / nbytes}
        if seen is None:
            row["reason"] = figures.get(f"{fig}_reason", "not measured")
        rows.append(row)
    return rows


def cuda_calibration_meters(device: torch.device) -> list:
    from revbench.measure.cuda import CudaAllocatorMeter
    from revbench.measure.live import LiveTensorMeter
    from revbench.measure.nvml import NvmlMeter

    return [NvmlMeter(device), CudaAllocatorMeter(device), LiveTensorMeter(device=device)]


def hold_tensor(nbytes: int, device: torch.device, hold_s: float = HOLD_S, sync=None) -> None:
    """Allocate exactly ``nbytes`` on ``device``, write every byte, hold it ``hold_s`` seconds, free it."""
    x = torch.empty(nbytes, dtype=torch.uint8, device=device)
    x.fill_(1)
    if sync is not None:
        sync()
    time.sleep(hold_s)
    del x


def calibrate(device: torch.device, sizes: Iterable[int] = SIZES,
              meters_for: Callable[[torch.device], list] = cuda_calibration_meters,
              region: Callable[[int, torch.device], None] | None = None,
              empty_cache: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Every meter of ``meters_for(device)`` on one region per size in ``sizes`` (default: :func:`hold_tensor`);
    the allocator's cache is emptied before each region (``empty_cache``, default ``torch.cuda.empty_cache`` on
    a GPU), so reserved memory and NVML see the allocation itself. Returns :func:`calibration_rows` of all sizes."""
    if region is None:
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        region = lambda n, dev: hold_tensor(n, dev, sync=sync)      # noqa: E731
    if empty_cache is None:
        empty_cache = torch.cuda.empty_cache if device.type == "cuda" else (lambda: None)
    rows = []
    for n in sizes:
        gc.collect()
        empty_cache()
        figures = measure(lambda: region(n, device), meters_for(device))
        rows += calibration_rows(n, figures)
    gc.collect()
    empty_cache()
    return rows
