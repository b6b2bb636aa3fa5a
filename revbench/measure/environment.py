"""Where a record was measured: :func:`environment_info`, with the CPU model name and git commit helpers."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from typing import Any

import torch

from revbench.measure.meter import as_device

__all__ = ["environment_info"]


def _cpu_model_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    return platform.processor() or None


def _git_commit(cwd: str | None = None) -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = res.stdout.strip()
    return sha if res.returncode == 0 and sha else None


def environment_info(device: str | torch.device) -> dict[str, Any]:
    """Where a record was measured: ``torch_version``, ``python_version``, ``platform``, ``device_name``
    (CPU model name, or the GPU's name on cuda), ``cpu_count``, ``commit`` (``git rev-parse HEAD`` of the
    current directory's repository, None outside one) and ``hostname``."""
    dev = as_device(device)
    if dev is None:
        raise ValueError("environment_info needs a device ('cpu' or 'cuda[:N]')")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} requested but no CUDA device is available")
        device_name: str | None = torch.cuda.get_device_name(dev)
    elif dev.type == "cpu":
        device_name = _cpu_model_name()
    else:
        raise ValueError(f"unsupported device {str(dev)!r}: expected 'cpu' or 'cuda[:N]'")
    return {
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "commit": _git_commit(),
        "hostname": socket.gethostname(),
    }
