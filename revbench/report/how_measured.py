"""How each figure of the report is measured: the memory meters' legend and the "How measured" texts of captions."""
from __future__ import annotations

# How each memory figure is measured (legend of the meters table; captions reuse these).
METER_HOW = {
    "peak_bytes": "The step's activation memory: peak bytes of all tensors alive during one training step above "
                  "those alive before it (parameters and gradients excluded). From the CUDA allocator on a GPU, "
                  "from the live-tensor meter on the CPU (see the meter column).",
    "live_peak_bytes": "Live-tensor meter: a TorchDispatchMode that sees every op's outputs and tracks their "
                       "storages (deduplicated by storage, released through weak references); works on any device.",
    "cuda_peak_allocated_bytes": "CUDA caching allocator, torch.cuda.max_memory_allocated() after "
                                 "reset_peak_memory_stats() and a synchronise: exact bytes of tensors.",
    "cuda_peak_reserved_bytes": "CUDA caching allocator, torch.cuda.max_memory_reserved(): what the allocator held "
                                "from the driver, including cached-but-free blocks.",
    "nvml_peak_used_bytes": "NVML device memory used (nvmlDeviceGetMemoryInfo v2), sampled by a thread: includes the "
                            "CUDA context, the allocator's cache and other processes; can miss short spikes.",
    "rss_peak_delta_bytes": "Process peak RSS (VmHWM in /proc/self/status, reset through /proc/self/clear_refs after "
                            "malloc_trim) minus RSS before the step: coarse, independent of torch.",
    "saved_bytes": "Bytes saved for backward (torch.autograd.graph.saved_tensors_hooks, deduplicated by storage, "
                   "parameters and inputs excluded): a cross-check; undercounts inside checkpointed regions.",
}
METER_COLUMNS = tuple(METER_HOW)
PEAK_METER_NAMES = {
    "live_tensors": "live-tensor meter (TorchDispatchMode tracking tensor storages)",
    "cuda_allocator": "CUDA caching allocator (torch.cuda.max_memory_allocated, exact)",
}


def _rounds_text(df) -> str:
    r = df["rounds"].dropna()
    if not len(r):
        return "timed rounds"
    lo, hi = int(r.min()), int(r.max())
    return f"{lo} timed rounds" if lo == hi else f"{lo}-{hi} timed rounds"


def time_how(df) -> str:
    return (f"Time: median of {_rounds_text(df)} of one training step (pytest-benchmark, wall clock), "
            "compared as ratios to bptt on the same configuration measured in the same run.")


def peak_how(df) -> str:
    meters = sorted({str(m) for m in df["peak_bytes_meter"].dropna()}) if "peak_bytes_meter" in df else []
    names = ", ".join(PEAK_METER_NAMES.get(m, m) for m in meters) or "meter not recorded"
    return ("Memory: peak_bytes, the peak bytes of tensors alive during one training step above those alive "
            f"before it; measured by the {names}.")
