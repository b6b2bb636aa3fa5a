"""Write a file so that a failure never leaves it half-written or replaces its previous content.

The one place the project writes results, reports, checkpoints and caches: every writer here goes through
``replacing(path)``, a temporary file beside ``path`` that is renamed onto it only when writing succeeded.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def replacing(path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same folder, so the rename is atomic); when the block ends
    without an error, optionally fsync it and ``os.replace`` it onto ``path``. On any error (KeyboardInterrupt
    included) the temporary file is removed and ``path`` keeps what it had. Temporary names are
    ``.<name>.<random>.tmp``: hidden, and recognisable as litter if a kill leaves one behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path, write: Callable[[IO], None], binary: bool = False, fsync: bool = False) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then replace ``path`` with it (see ``replacing``)."""
    path = Path(path)
    with replacing(path, fsync=fsync) as tmp:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text))


def atomic_write_json(obj, path, indent: int = 1, default: Callable | None = None) -> Path:
    """``json.dump(obj)`` (keys sorted, a final newline) to ``path`` atomically."""
    def write(fh):
        json.dump(obj, fh, indent=indent, sort_keys=True, default=default)
        fh.write("\n")
    return atomic_write(path, write)


def atomic_save(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, fsynced (checkpoints survive a crash right after)."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh), binary=True, fsync=True)
