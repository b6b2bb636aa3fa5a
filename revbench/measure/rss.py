"""The process peak RSS meter (:class:`RSSMeter`, Linux) and its /proc and libc helpers.

``rss_peak_delta_bytes``: the process's peak resident set size during the region above its RSS at the start.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
from typing import Any, Callable

from revbench.measure.meter import Meter

__all__ = ["RSSMeter"]


_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes."""
    with open(_STATUS, "rb") as f:
        for line in f:
            if line.startswith(field.encode() + b":"):
                parts = line.split()
                return int(parts[1]) * 1024
    raise KeyError(f"{field} not found in {_STATUS}")


def _reset_hwm() -> None:
    with open(_CLEAR_REFS, "w") as f:
        f.write("5")


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


class RSSMeter(Meter):
    """Process peak resident set size during the region (Linux).

    How: at the start, ``gc.collect()``, glibc's ``malloc_trim(0)`` (returns freed heap to the OS), then write
    ``5`` to ``/proc/self/clear_refs`` (resets the high-water mark ``VmHWM`` to the current RSS) and read
    ``VmRSS``. At the end, read ``VmHWM``. ``rss_peak_delta_bytes`` = VmHWM(end) - VmRSS(start), at least 0.
    Coarse (page granularity, counts everything the process touches, including Python objects and the other
    meters' bookkeeping) but independent of the code measured. Best run each configuration in a fresh process.
    """

    name = "rss"
    figure_names = ("rss_peak_delta_bytes",)
    nest_order = 30

    def _check(self) -> tuple[bool, str]:
        if not sys.platform.startswith("linux"):
            return False, f"process peak RSS needs Linux /proc (platform is {sys.platform})"
        try:
            _status_bytes("VmHWM")
            _status_bytes("VmRSS")
        except (OSError, KeyError) as exc:
            return False, f"cannot read VmHWM/VmRSS from {_STATUS}: {exc}"
        try:
            _reset_hwm()
        except OSError as exc:
            return False, f"cannot reset the RSS high-water mark ({_CLEAR_REFS}: {exc})"
        return True, ""

    def _start(self) -> None:
        gc.collect()
        trim = _malloc_trim()
        if trim is not None:
            trim(0)
        _reset_hwm()
        self._rss_start = _status_bytes("VmRSS")

    def _stop(self) -> dict[str, Any]:
        # the kernel updates the high-water mark lazily (on unmap, not when reclaim pages memory out), so a
        # region whose pages were reclaimed can end with VmHWM below the start's RSS: the peak was at least that
        return {"rss_peak_delta_bytes": max(0, _status_bytes("VmHWM") - self._rss_start)}
