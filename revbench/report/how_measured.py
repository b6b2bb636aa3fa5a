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
    "profiler_peak_bytes": "PyTorch profiler's memory view (torch.profiler with profile_memory, record_shapes, "
                           "with_stack; MemoryProfile timeline): its peak above the step's start, on the measured "
                           "device; an independent reading of the same allocations.",
    "heap_peak_bytes": "All heap bytes above the step's start at the peak (malloc level: torch and everything else in "
                       "the process; Linux CPU only).",
    "saved_bytes": "Bytes saved for backward (torch.autograd.graph.saved_tensors_hooks, deduplicated by storage, "
                   "parameters and inputs excluded): a cross-check; undercounts inside checkpointed regions.",
}
METER_COLUMNS = tuple(METER_HOW)
# the profiler's category split at its peak (columns shown when a file has them)
PROFILER_CATEGORIES = ("activation", "gradient", "parameter", "temporary", "other")
PROFILER_SPLIT_HOW = ("The PyTorch profiler's category of the bytes alive at its peak ({cat}); the categories add "
                      "up to profiler_peak_bytes.")
BUFFER_BITS_HOW = {
    "buffer_bits_actual": "Bits the method allocates for its information buffer (64 per int64 entry of every chunk, "
                          "plus overflow flags).",
    "buffer_bits_reference": "Bits the reference implementation's whole-chunk buffer scheme would allocate, simulated "
                             "on the same gates.",
    "buffer_bits_ideal": "Σ −log2 z_q of the applied forget gates: the information the buffer must keep.",
}
NOISY_FRACTION = 0.20   # a time whose IQR exceeds this fraction of its median is marked noisy
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
    return (f"Time: median of {_rounds_text(df)} of one training step (pytest-benchmark, wall clock; IQR = "
            "interquartile range of the rounds), compared as ratios to bptt on the same configuration measured in "
            f"the same run. {machine_how(df)}")


def distinct_text(df, col: str) -> str | None:
    """The distinct values of a column, joined ('' -> None when the column is absent or empty)."""
    if col not in df:
        return None
    vals = sorted({str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in df[col].dropna()})
    return ", ".join(vals) if vals else None


def threads_text(df) -> str:
    n = distinct_text(df, "torch_num_threads")
    return f"{n} torch thread{'s' if n != '1' else ''}" if n else "torch threads not recorded"


def cpu_text(df) -> str:
    cpu = distinct_text(df, "cpu_model") or ((df.attrs.get("machine_info") or {}).get("cpu") or {}).get("brand_raw")
    return str(cpu) if cpu else "CPU model not recorded"


def machine_how(df) -> str:
    """'Machine: <device> (<device name>), CPU <model>, <n> torch threads.' for every figure's how-measured line."""
    dev = distinct_text(df, "device") or "device not recorded"
    name = distinct_text(df, "device_name")
    cpu = cpu_text(df)
    dev_text = f"{dev} ({name})" if name and name != dev else dev
    cpu_part = "" if name and name == cpu else f"; CPU {cpu}" if "not recorded" not in cpu else f"; {cpu}"
    return f"Machine: {dev_text}{cpu_part}; {threads_text(df)}."


def noisy_title(iqr, median) -> str | None:
    """The hover text of a noisy time (IQR above NOISY_FRACTION of the median), None for a steady one."""
    try:
        iqr, median = float(iqr), float(median)
    except (TypeError, ValueError):
        return None
    if not (iqr == iqr and median == median) or median <= 0 or iqr <= NOISY_FRACTION * median:
        return None
    return f"noisy: IQR {100 * iqr / median:.0f} % of the median (above {100 * NOISY_FRACTION:.0f} %)"


NOISY_LEGEND = (f"marks a noisy time: the interquartile range of its timed rounds exceeds "
                f"{100 * NOISY_FRACTION:.0f} % of the median (hover for the figure); compare such times with care.")


def peak_how(df) -> str:
    meters = sorted({str(m) for m in df["peak_bytes_meter"].dropna()}) if "peak_bytes_meter" in df else []
    names = ", ".join(PEAK_METER_NAMES.get(m, m) for m in meters) or "meter not recorded"
    return ("Memory: peak_bytes, the peak bytes of tensors alive during one training step above those alive "
            f"before it; measured by the {names}.")
