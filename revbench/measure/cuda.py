"""The CUDA caching allocator meter (:class:`CudaAllocatorMeter`) and :func:`cuda_device`.

``cuda_peak_allocated_bytes`` and ``cuda_peak_reserved_bytes``: the allocator's exact peaks in the region.
:func:`cuda_device` resolves a CUDA meter's device argument (also used by the NVML meter); :func:`device_problem`
says in one line why a device cannot be used here (None when it can).
"""
from __future__ import annotations

from typing import Any

import torch

from revbench.measure.meter import Meter, as_device

__all__ = ["CudaAllocatorMeter", "cuda_device", "device_problem"]


def device_problem(device: str | torch.device) -> str | None:
    """None when ``device`` (``cpu``, ``cuda`` or ``cuda:N``) can be used on this machine, else one line saying why
    not (no CUDA build of torch, no GPU visible, or an index beyond the visible devices)."""
    dev = as_device(device)
    if dev.type != "cuda":
        return None
    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return f"device {str(dev)!r} was asked for but torch sees no CUDA device ({build}, torch {torch.__version__})"
    n = torch.cuda.device_count()
    if dev.index is not None and dev.index >= n:
        return f"device {str(dev)!r} does not exist: {n} CUDA device(s) visible (cuda:0..cuda:{n - 1})"
    return None


def cuda_device(device: str | torch.device | None) -> torch.device:
    dev = as_device(device)
    if dev is None:
        return torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda":
        raise ValueError(f"a CUDA meter needs a cuda device, got {str(dev)!r}")
    return torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)


class CudaAllocatorMeter(Meter):
    """Exact peaks of PyTorch's CUDA caching allocator during the region.

    How: synchronise, ``reset_peak_memory_stats``, record ``memory_allocated``/``memory_reserved`` before;
    at the end synchronise and read ``max_memory_allocated``/``max_memory_reserved``.
    ``cuda_peak_allocated_bytes`` = max allocated - allocated before (tensor bytes, rounded up to the
    allocator's 512-byte blocks); ``cuda_peak_reserved_bytes`` = max reserved - reserved before (what the
    allocator holds from the driver, cached blocks included; 0 when the cache already held enough).
    Note: it resets the device's global peak statistics.
    """

    name = "cuda_allocator"
    figure_names = ("cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes")
    nest_order = 20

    def __init__(self, device: str | torch.device | None = None):
        super().__init__()
        dev = as_device(device)
        if dev is not None and dev.type != "cuda":
            raise ValueError(f"CudaAllocatorMeter needs a cuda device, got {str(dev)!r}")
        self._device_arg = dev

    def _check(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        dev = cuda_device(self._device_arg)
        if dev.index >= torch.cuda.device_count():
            return False, f"{dev} does not exist ({torch.cuda.device_count()} CUDA devices visible)"
        return True, ""

    def _start(self) -> None:
        dev = self._dev = cuda_device(self._device_arg)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        self._alloc0 = torch.cuda.memory_allocated(dev)
        self._reserved0 = torch.cuda.memory_reserved(dev)

    def _stop(self) -> dict[str, Any]:
        dev = self._dev
        torch.cuda.synchronize(dev)
        return {
            "cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated(dev) - self._alloc0,
            "cuda_peak_reserved_bytes": torch.cuda.max_memory_reserved(dev) - self._reserved0,
        }
