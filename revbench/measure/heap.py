"""The heap meter (:class:`HeapMeter`, Linux with glibc): every heap byte the step holds at its peak.

``heap_peak_bytes``: the peak, over the step's op boundaries, of the bytes glibc's allocator has handed out and
not yet taken back (``mallinfo2()``: ``uordblks``, the arenas' in-use bytes, plus ``hblkhd``, the bytes of the
chunks it mmapped for large requests), above that figure at the step's start.

What it counts that the live-tensor meter does not: torch's CPU allocator takes tensor data from
``posix_memalign``/``malloc``, so tensor bytes are in it (with malloc's chunk headers and alignment), and so is
everything else the C++ side of a step allocates: autograd nodes, their saved-variable records, TensorImpl and
StorageImpl objects, dispatcher and kernel scratch buffers. On the default grid it is 1.05-1.35x the
live-tensor peak (1.6x for torch-checkpoint; 1.0x for the fused kernel, whose few large tensors dominate); a
chain of ``y * 1.5`` ops keeps about 1,080 bytes of heap per autograd node and no tensor; LSTM bptt at
T = 1000 (hidden 256, batch 16) holds 282.2 MB of heap beside 259.3 MB of live tensors. What it does not
see: CUDA memory, Python objects of up to 512 bytes (CPython's own ``pymalloc`` arenas are mmapped outside
malloc; bigger ones are seen), and memory a library maps itself.

How: ``gc.collect()`` and ``malloc_trim(0)`` before the step (freed memory goes back; this changes what malloc
holds from the system, not the in-use bytes), one ``mallinfo2()`` reading as the baseline, then a
``TorchDispatchMode`` reads it again after every aten op (forward and backward) and once when the step ends;
the figure is the highest reading minus the baseline (never below 0). ``mallinfo2`` sums every arena of the
process, so allocations of other threads count too; the suites run the step on one thread.

Exact per reading, not sampled in time, and near-deterministic on one machine: repeated identical steps agree
to within a few KB (0.02 % for bptt at T = 35, about 1 % of a reversible step's 0.8 MB), from malloc's
per-thread cache (tcache: freed small chunks that ``mallinfo2`` still counts as in use) and the Python
interpreter's own allocations between ops. It runs in its own step (see ``revbench.measure.memory``), because
the other meters' bookkeeping lives on the same heap.

Not Linux, not glibc (musl, macOS), or a glibc older than 2.33 (no ``mallinfo2``; ``mallinfo``'s int fields
wrap at 2 GiB): the figure is None with the reason.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from revbench.measure.meter import Meter

__all__ = ["HeapMeter", "heap_in_use"]


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc >= 2.33): every field a size_t."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@functools.lru_cache(maxsize=1)
def _libc() -> tuple[Any, Any, str]:
    """(mallinfo2, malloc_trim, "") from the process's C library, or (None, None, reason)."""
    if not sys.platform.startswith("linux"):
        return None, None, f"the heap meter reads glibc's mallinfo2, which needs Linux (platform is {sys.platform})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError as exc:
        return None, None, f"cannot load the C library: {exc}"
    try:
        version = libc.gnu_get_libc_version
    except AttributeError:
        return None, None, "the C library is not glibc (no gnu_get_libc_version), so there is no mallinfo2"
    version.restype = ctypes.c_char_p
    try:
        info = libc.mallinfo2
    except AttributeError:
        return None, None, (f"glibc {version().decode()} has no mallinfo2 (added in 2.33; mallinfo's int fields "
                            "wrap at 2 GiB)")
    info.argtypes = []
    info.restype = _MallInfo2
    try:
        trim = libc.malloc_trim
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    except AttributeError:
        trim = None
    return info, trim, ""


def heap_in_use() -> int | None:
    """Bytes glibc's allocator has handed out and not taken back: ``uordblks + hblkhd`` of ``mallinfo2()``
    (None where there is no mallinfo2)."""
    info = _libc()[0]
    if info is None:
        return None
    m = info()
    return m.uordblks + m.hblkhd


class HeapMeter(Meter, TorchDispatchMode):
    """Peak heap bytes (``mallinfo2`` in-use + mmapped) at op boundaries above the region's start.

    See the module docstring for what it counts. The dispatch mode reads ``mallinfo2`` (about 1-7 us, more
    as the heap fragments) after every op; a step of 10,000 ops costs some 20-60 ms more.
    """

    name = "heap"
    figure_names = ("heap_peak_bytes",)
    nest_order = 80  # a dispatch mode: inside RSS / saved tensors, outside the live-tensor meter

    def __init__(self) -> None:
        Meter.__init__(self)
        TorchDispatchMode.__init__(self)
        self._base = 0
        self._peak = 0
        self.readings = 0

    def _check(self) -> tuple[bool, str]:
        info, _, reason = _libc()
        if info is None:
            return False, reason
        return True, ""

    def prepare(self) -> None:
        """Run one tiny op under a dispatch mode, so its one-time imports land outside any region."""
        if self._running or getattr(self, "_prepared", False):
            return
        with _Probe():
            torch.empty(1).add_(1)
        self._prepared = True

    def _read(self) -> None:
        used = heap_in_use()
        if used > self._peak:
            self._peak = used

    def _start(self) -> None:
        gc.collect()
        trim = _libc()[1]
        if trim is not None:
            trim(0)
        self.readings = 0
        self._info = _libc()[0]
        self._base = self._peak = heap_in_use()
        TorchDispatchMode.__enter__(self)

    def _stop(self) -> dict[str, Any]:
        TorchDispatchMode.__exit__(self, None, None, None)
        self._read()
        return {"heap_peak_bytes": max(0, self._peak - self._base)}

    def __enter__(self) -> "HeapMeter":
        self.start()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        self.stop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        m = self._info()
        used = m.uordblks + m.hblkhd
        if used > self._peak:
            self._peak = used
        self.readings += 1
        return out


class _Probe(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))
