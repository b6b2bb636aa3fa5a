"""Write a file so that a failure never leaves it half-written or replaces its previous content.

The one place the project writes results, reports, checkpoints and caches: every writer here goes through
``replacing(path)``, a temporary file beside ``path`` that is renamed onto it only when writing succeeded. A kill
(SIGKILL, power loss) can still leave that temporary file behind: ``stale_temporaries`` finds such files of given
names in a folder and ``remove_stale_temporaries`` removes them (never any other file); ``stale_removal_note`` is
the line a run prints about it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

TMP_SUFFIX = ".tmp"
_RANDOM_PART = r"[a-z0-9_]{8}"          # what tempfile.mkstemp puts between prefix and suffix


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


def stale_temporaries(folder, names: Iterable[str]) -> list[Path]:
    """The temporary files ``replacing`` leaves in ``folder`` when a write of one of ``names`` is killed midway
    (``.<name>.<8 random characters>.tmp``, regular files only), sorted by name."""
    folder = Path(folder)
    patterns = [re.compile(re.escape(f".{n}.") + _RANDOM_PART + re.escape(TMP_SUFFIX)) for n in names]
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted((p for p in entries if any(r.fullmatch(p.name) for r in patterns)
                   and p.is_file() and not p.is_symlink()), key=lambda p: p.name)


def remove_stale_temporaries(folder, names: Iterable[str]) -> list[Path]:
    """Remove ``stale_temporaries(folder, names)``; return those removed. Call it only where no other process
    is writing those files (a run owns its output folder)."""
    removed = []
    for p in stale_temporaries(folder, names):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def stale_removal_note(removed: list[Path]) -> str | None:
    """The one line a run prints after ``remove_stale_temporaries`` (None when nothing was removed)."""
    if not removed:
        return None
    n = len(removed)
    return (f"removed {n} stale temporary file{'s' if n > 1 else ''} left by an interrupted write in "
            f"{str(removed[0].parent)!r}: {', '.join(p.name for p in removed)}")
