"""The machine a GPU check ran on: :func:`gpu_environment` (GPU, memory, driver, CUDA, cuDNN, torch, NVML)."""
from __future__ import annotations

import os
from typing import Any, Callable

import torch

from revbench.measure.environment import environment_info
from revbench.measure.nvml import pci_bus_id, read_nvml


def gpu_environment(device: torch.device, nvml_reader: Callable[[int], dict] = read_nvml) -> dict[str, Any]:
    """Everything about ``device`` (a ``cuda:N`` device) and its software that a reader of the figures needs:
    the GPU (name, memory, compute capability, multiprocessors, UUID, PCI bus id), torch and the CUDA / cuDNN it
    was built with, the cuDNN / TF32 switches that change timings, the driver and NVML versions and the device's
    memory as NVML saw it at the start (other processes included), and the host (``environment_info``)."""
    props = torch.cuda.get_device_properties(device)
    env: dict[str, Any] = {
        "gpu_name": props.name,
        "gpu_memory_bytes": int(props.total_memory),
        "gpu_compute_capability": f"{props.major}.{props.minor}",
        "gpu_multiprocessors": int(props.multi_processor_count),
        "gpu_uuid": str(getattr(props, "uuid", "")) or None,
        "gpu_pci_bus_id": pci_bus_id(props),
        "cuda_device": str(device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_device_count": torch.cuda.device_count(),
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
    }
    nv = nvml_reader(device.index)
    if nv.get("available"):
        env.update({f"nvml_{k}": v for k, v in nv.items() if k != "available"})
    else:
        env["nvml_reason"] = nv.get("reason", "NVML unavailable")
    host = environment_info("cpu")
    env.update({"host_" + k if k == "device_name" else k: v for k, v in host.items() if k != "torch_version"})
    return env


def environment_lines(env: dict) -> list[str]:
    """The environment as short ``name: value`` lines (README and the report)."""
    mib = 2 ** 20

    def get(k, default="n/a"):
        v = env.get(k)
        return default if v is None else v

    lines = [
        f"GPU: {get('gpu_name')} ({get('cuda_device')}), {env.get('gpu_memory_bytes', 0) / 2**30:.1f} GiB, "
        f"compute capability {get('gpu_compute_capability')}, {get('gpu_multiprocessors')} SMs, "
        f"UUID {get('gpu_uuid')}, PCI {get('gpu_pci_bus_id')}",
        f"torch {get('torch_version')} built for CUDA {get('torch_cuda_version')}, cuDNN {get('cudnn_version')} "
        f"(cudnn.benchmark={get('cudnn_benchmark')}, TF32 matmul={get('matmul_allow_tf32')}, "
        f"cuDNN TF32={get('cudnn_allow_tf32')})",
    ]
    if "nvml_reason" in env:
        lines.append(f"NVML: unavailable ({env['nvml_reason']})")
    else:
        used = env.get("nvml_device_used_bytes")
        lines.append(
            f"driver {get('nvml_driver_version')} (CUDA {get('nvml_cuda_driver_version')}), NVML "
            f"{get('nvml_nvml_version')}; NVML device matched by {get('nvml_matched_by')}; at the start "
            f"{'n/a' if used is None else f'{used / mib:,.0f} MiB'} used on the device by "
            f"{get('nvml_other_processes')} other process(es)")
    lines.append(f"host: {get('host_device_name')}, {get('cpu_count')} CPUs, {get('platform')}, Python "
                 f"{get('python_version')}, {get('hostname')}, commit {get('commit')}, CUDA_VISIBLE_DEVICES="
                 f"{get('cuda_visible_devices', 'unset')}")
    return lines
