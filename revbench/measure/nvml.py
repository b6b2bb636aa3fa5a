"""The NVML meter (:class:`NvmlMeter`) and its pynvml helpers.

Device and process GPU memory sampled through NVML by a background thread: ``nvml_peak_used_bytes``,
``nvml_process_peak_used_bytes`` and ``nvml_samples``. :func:`match_nvml_device` maps a CUDA device to its NVML
handle (by UUID, then PCI bus id; NVML ignores CUDA_VISIBLE_DEVICES); :func:`read_nvml` takes one reading
(device and process memory, driver and NVML versions) for the environment and the meters' calibration.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import torch

from revbench.measure.cuda import cuda_device
from revbench.measure.meter import Meter, as_device

__all__ = ["NvmlMeter", "match_nvml_device", "pci_bus_id", "read_nvml"]


def _import_pynvml():
    import pynvml  # from the nvidia-ml-py package

    return pynvml


def match_nvml_device(pynvml, index: int):
    """``(handle, matched_by)``: the NVML handle of CUDA device ``index`` (CUDA's numbering, which
    CUDA_VISIBLE_DEVICES renumbers) and how it was found: ``"uuid"``, ``"pci_bus_id"``, ``"torch index map"`` or
    ``"only device"``.

    NVML numbers devices by PCI order and ignores CUDA_VISIBLE_DEVICES, so match by UUID (then PCI bus id)
    rather than by index. LookupError when nothing matches.
    """
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        s = str(uuid)
        for cand in ((s,) if s.startswith(("GPU-", "MIG-")) else (f"GPU-{s}", s)):
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(cand), "uuid"
            except pynvml.NVMLError:
                pass
    pci = pci_bus_id(props)
    if pci is not None:
        try:
            return pynvml.nvmlDeviceGetHandleByPciBusId(pci), "pci_bus_id"
        except pynvml.NVMLError:
            pass
    try:  # torch's own mapping (parses CUDA_VISIBLE_DEVICES, indices or UUIDs)
        return pynvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(index)), "torch index map"
    except Exception:
        pass
    if "CUDA_VISIBLE_DEVICES" not in os.environ and pynvml.nvmlDeviceGetCount() == 1:
        return pynvml.nvmlDeviceGetHandleByIndex(0), "only device"
    raise LookupError(f"cannot match CUDA device {index} to an NVML device (by UUID, PCI bus id or index)")


def pci_bus_id(props) -> str | None:
    """NVML's PCI bus id text (``"00000000:3B:00.0"``) of torch device properties, None without ``pci_bus_id``."""
    bus = getattr(props, "pci_bus_id", None)
    if bus is None:
        return None
    return f"{getattr(props, 'pci_domain_id', 0):08X}:{bus:02X}:{getattr(props, 'pci_device_id', 0):02X}.0"


def _nvml_handle(pynvml, index: int):
    """The NVML handle of CUDA device ``index`` (see :func:`match_nvml_device`)."""
    return match_nvml_device(pynvml, index)[0]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_nvml(index: int, pid: int | None = None) -> dict[str, Any]:
    """One NVML reading of CUDA device ``index``, for the environment and the meters' calibration.

    ``device_used_bytes`` / ``device_total_bytes`` (``nvmlDeviceGetMemoryInfo``, v2: reserved memory
    excluded), ``process_used_bytes`` (this process's ``usedGpuMemory``: 0 when NVML lists no compute process of
    ours, None with ``process_used_bytes_reason`` when NVML cannot tell), ``other_processes`` (how many other
    compute processes use the device), ``matched_by``, ``driver_version``, ``nvml_version`` and
    ``cuda_driver_version`` (the highest CUDA version the driver supports, e.g. ``"12.8"``). Without NVML:
    ``{"available": False, "reason": ...}``.
    """
    try:
        pynvml = _import_pynvml()
    except ImportError as exc:
        return {"available": False, "reason": f"pynvml is not installed (pip install nvidia-ml-py): {exc}"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"available": False, "reason": f"NVML unavailable: {exc}"}
    pid = os.getpid() if pid is None else pid
    try:
        handle, how = match_nvml_device(pynvml, index)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
        out: dict[str, Any] = {"available": True, "matched_by": how, "device_used_bytes": int(mem.used),
                               "device_total_bytes": int(mem.total)}
        try:
            procs = list(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
        except pynvml.NVMLError as exc:
            out.update(process_used_bytes=None, other_processes=None,
                       process_used_bytes_reason=f"nvmlDeviceGetComputeRunningProcesses failed: {exc}")
        else:
            mine = [p for p in procs if p.pid == pid]
            out["other_processes"] = len(procs) - len(mine)
            if mine and mine[0].usedGpuMemory is None:
                out["process_used_bytes"] = None
                out["process_used_bytes_reason"] = "NVML lists this process without a usedGpuMemory figure"
            else:
                out["process_used_bytes"] = int(mine[0].usedGpuMemory) if mine else 0
                out["process_listed"] = bool(mine)
        for key, fn in (("driver_version", "nvmlSystemGetDriverVersion"),
                        ("nvml_version", "nvmlSystemGetNVMLVersion")):
            try:
                out[key] = _text(getattr(pynvml, fn)())
            except (pynvml.NVMLError, AttributeError) as exc:
                out[key] = None
                out[f"{key}_reason"] = f"{fn} failed: {exc}"
        try:
            v = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
            out["cuda_driver_version"] = f"{v // 1000}.{v % 1000 // 10}"
        except (pynvml.NVMLError, AttributeError, TypeError, ValueError) as exc:
            out["cuda_driver_version"] = None
            out["cuda_driver_version_reason"] = f"nvmlSystemGetCudaDriverVersion_v2 failed: {exc}"
        return out
    except (pynvml.NVMLError, LookupError) as exc:
        return {"available": False, "reason": f"NVML device lookup failed: {exc}"}
    finally:
        pynvml.nvmlShutdown()


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
