"""The NVML meter (:class:`NvmlMeter`) and its pynvml helpers.

Device and process GPU memory sampled through NVML by a background thread: ``nvml_peak_used_bytes``,
``nvml_process_peak_used_bytes`` and ``nvml_samples``.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import torch

from revbench.measure.cuda import cuda_device
from revbench.measure.meter import Meter, as_device

__all__ = ["NvmlMeter"]


def _import_pynvml():
    import pynvml  # from the nvidia-ml-py package

    return pynvml


def _nvml_handle(pynvml, index: int):
    """The NVML handle of CUDA device ``index`` (CUDA's numbering, which CUDA_VISIBLE_DEVICES renumbers).

    NVML numbers devices by PCI order and ignores CUDA_VISIBLE_DEVICES, so match by UUID (then PCI bus id)
    rather than by index.
    """
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        s = str(uuid)
        for cand in ((s,) if s.startswith(("GPU-", "MIG-")) else (f"GPU-{s}", s)):
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(cand)
            except pynvml.NVMLError:
                pass
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        pci = f"{getattr(props, 'pci_domain_id', 0):08X}:{bus:02X}:{getattr(props, 'pci_device_id', 0):02X}.0"
        try:
            return pynvml.nvmlDeviceGetHandleByPciBusId(pci)
        except pynvml.NVMLError:
            pass
    try:  # torch's own mapping (parses CUDA_VISIBLE_DEVICES, indices or UUIDs)
        return pynvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(index))
    except Exception:
        pass
    if "CUDA_VISIBLE_DEVICES" not in os.environ and pynvml.nvmlDeviceGetCount() == 1:
        return pynvml.nvmlDeviceGetHandleByIndex(0)
    raise LookupError(f"cannot match CUDA device {index} to an NVML device (by UUID, PCI bus id or index)")


class NvmlMeter(Meter):
    """Device and process GPU memory as NVML sees it, sampled by a background thread (~every 1 ms).

    How: before the region, one sample sets the baseline; a daemon thread then reads
    ``nvmlDeviceGetMemoryInfo(h, version=nvmlMemory_v2).used`` (device-wide, v2 excludes reserved memory) and
    this process's ``usedGpuMemory`` from ``nvmlDeviceGetComputeRunningProcesses`` (matched by ``os.getpid()``)
    until the region ends (after a synchronise and one last sample).
    ``nvml_peak_used_bytes`` / ``nvml_process_peak_used_bytes`` = highest sample - baseline (the baseline is
    itself a sample, so never negative); ``nvml_samples`` = number of samples. Includes the CUDA context, the
    allocator's cached memory and (device-wide) other processes; can miss spikes shorter than a sample. In a
    container the PIDs NVML reports are the host's, so the process figure may be unavailable.
    """

    name = "nvml"
    figure_names = ("nvml_peak_used_bytes", "nvml_process_peak_used_bytes", "nvml_samples")
    nest_order = 10

    def __init__(self, device: str | torch.device | None = None, interval_s: float = 0.001):
        super().__init__()
        dev = as_device(device)
        if dev is not None and dev.type != "cuda":
            raise ValueError(f"NvmlMeter needs a cuda device, got {str(dev)!r}")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self._device_arg = dev
        self.interval_s = float(interval_s)
        self._thread: threading.Thread | None = None

    def _check(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        try:
            pynvml = _import_pynvml()
        except ImportError as exc:
            return False, f"pynvml is not installed (pip install nvidia-ml-py): {exc}"
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            return False, f"NVML unavailable: {exc}"
        try:
            _nvml_handle(pynvml, cuda_device(self._device_arg).index)
        except (pynvml.NVMLError, LookupError) as exc:
            return False, f"NVML device lookup failed: {exc}"
        finally:
            pynvml.nvmlShutdown()
        return True, ""

    def _sample(self) -> None:
        pynvml, h = self._nvml, self._handle
        used = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2).used
        proc = None
        try:
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                if p.pid == self._pid and p.usedGpuMemory is not None:
                    proc = int(p.usedGpuMemory)
                    break
        except pynvml.NVMLError as exc:
            self._proc_error = f"nvmlDeviceGetComputeRunningProcesses failed: {exc}"
        self._n += 1
        self._max_used = max(self._max_used, int(used))
        if proc is not None:
            self._max_proc = proc if self._max_proc is None else max(self._max_proc, proc)

    def _loop(self) -> None:
        try:
            while not self._halt.is_set():
                self._sample()
                self._halt.wait(self.interval_s)
        except Exception as exc:  # reported as the figures' reason
            self._error = f"{type(exc).__name__}: {exc}"

    def _start(self) -> None:
        pynvml = self._nvml = _import_pynvml()
        pynvml.nvmlInit()
        try:
            self._dev = cuda_device(self._device_arg)
            self._handle = _nvml_handle(pynvml, self._dev.index)
            self._pid = os.getpid()
            self._error: str | None = None
            self._proc_error: str | None = None
            self._n = 0
            self._max_used = 0
            self._max_proc: int | None = None
            torch.cuda.synchronize(self._dev)
            self._sample()  # the baseline
            self._base_used = self._max_used
            self._base_proc = self._max_proc
            self._halt = threading.Event()
            self._thread = threading.Thread(target=self._loop, name="revbench-nvml-sampler", daemon=True)
            self._thread.start()
        except BaseException:
            pynvml.nvmlShutdown()
            raise

    def _stop(self) -> dict[str, Any]:
        try:
            torch.cuda.synchronize(self._dev)
            self._halt.set()
            assert self._thread is not None
            self._thread.join()
            self._thread = None
            if self._error is None:
                self._sample()
        finally:
            self._nvml.nvmlShutdown()
        if self._error is not None:
            return self._unavailable(f"NVML sampling failed: {self._error}")
        out: dict[str, Any] = {
            "nvml_peak_used_bytes": self._max_used - self._base_used,
            "nvml_samples": self._n,
        }
        if self._max_proc is None:
            out["nvml_process_peak_used_bytes"] = None
            out["nvml_process_peak_used_bytes_reason"] = self._proc_error or (
                f"process {self._pid} is not among NVML's compute processes with a known usedGpuMemory "
                "(in a container NVML reports host PIDs)"
            )
        else:
            out["nvml_process_peak_used_bytes"] = self._max_proc - (self._base_proc or 0)
        return out
