"""Write a file so that a failure never leaves it half-written or replaces its previous content."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, IO


def atomic_write(path, write: Callable[[IO], None], binary: bool = False, fsync: bool = False) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, optionally fsync, then ``os.replace`` it onto
    ``path``. On any error the temporary file is removed and ``path`` keeps what it had."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
