"""One process at a time in a folder: ``folder_lock`` (the primitive) and ``run_lock`` (a training run's folder).

Two processes in one folder (two ``reproduce`` invocations resuming the same run, two ``revbench run`` on one
``--out``) would remove each other's temporary files and overwrite each other's checkpoints and results. The lock
is an exclusive ``flock`` on the folder itself, taken without waiting: nothing is written for it, and the kernel
drops it when its process ends, however it ends, so a killed run never leaves a folder locked. Where ``fcntl``
or the filesystem's ``flock`` is missing, nothing is locked.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:         # pragma: no cover - not POSIX
    fcntl = None


class RunFolderBusy(ValueError):
    """Another process trains in this folder."""


@contextlib.contextmanager
def folder_lock(folder: Path, busy: Callable[[], Exception]) -> Iterator[None]:
    """Hold an exclusive lock on the existing folder ``folder``; raise ``busy()`` if another process holds it."""
    if fcntl is None:       # pragma: no cover
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        except OSError:     # a filesystem without flock
            pass
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(folder) -> Iterator[None]:
    """``folder_lock`` on a training run's folder (created if needed); ``RunFolderBusy`` (exit 2) when taken."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder, lambda: RunFolderBusy(
            f"{folder} is in use: another revbench process is training there; wait for it to end, or choose "
            "another --out")):
        yield
