"""Where a record was measured: :func:`environment_info`, with the CPU model name, thread and git commit helpers.

Timings depend on how many threads torch's intra-op pool uses (on a busy 2-core machine one step took
2.06 / 2.52 / 9.81 s with 2 threads and 0.30 / 0.31 / 0.34 s with 1), so every record carries
``torch_num_threads``: ``torch.get_num_threads()`` when the record is made, the value in effect for the step
(the suites pin it with ``--revbench-threads N``, default 1: :func:`pin_threads`).
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from typing import Any

import torch

from revbench.measure.meter import as_device

__all__ = ["environment_info", "cpu_model", "pin_threads", "restore_threads"]


def cpu_model() -> str | None:
    """The CPU's model name: /proc/cpuinfo's "model name" (x86), "Hardware" or "cpu model" line, else
    ``platform.processor()``; None when neither names it."""
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
    (CPU model name, or the GPU's name on cuda), ``cpu_model`` (the CPU's model name on any device),
    ``cpu_count``, ``torch_num_threads`` (``torch.get_num_threads()`` now), ``commit`` (``git rev-parse HEAD`` of the
    current directory's repository, None outside one) and ``hostname``."""
    dev = as_device(device)
    if dev is None:
        raise ValueError("environment_info needs a device ('cpu' or 'cuda[:N]')")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} requested but no CUDA device is available")
        device_name: str | None = torch.cuda.get_device_name(dev)
    elif dev.type == "cpu":
        device_name = cpu_model()
    else:
        raise ValueError(f"unsupported device {str(dev)!r}: expected 'cpu' or 'cuda[:N]'")
    return {
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device_name": device_name,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "commit": _git_commit(),
        "hostname": socket.gethostname(),
    }


def pin_threads(num_threads: int) -> dict[str, Any]:
    """Pin torch's intra-op thread pool to ``num_threads`` (``torch.set_num_threads``) and, where torch still
    allows it (before any inter-op work started), the inter-op pool too (``torch.set_num_interop_threads``).

    Returns what was in effect before (``{"num_threads": ..., "interop_threads": ...}``, for
    :func:`restore_threads`) plus ``interop_pinned`` (bool) and ``interop_reason`` (why not, or "").
    """
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"the number of threads must be an integer >= 1, got {num_threads!r}")
    before = {"num_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}
    torch.set_num_threads(num_threads)
    pinned, reason = True, ""
    if torch.get_num_interop_threads() != num_threads:
        try:
            torch.set_num_interop_threads(num_threads)
        except RuntimeError as exc:  # "cannot set number of interop threads after parallel work has started"
            pinned, reason = False, str(exc).splitlines()[0]
    return {**before, "interop_pinned": pinned, "interop_reason": reason}


def restore_threads(before: dict[str, Any]) -> None:
    """Give torch back the intra-op thread count :func:`pin_threads` found (the inter-op pool cannot be
    changed twice, so it stays)."""
    torch.set_num_threads(before["num_threads"])
