"""Where every task's data lives and whether it is intact: the data root, dataset folders, SHA-256 checks.

* ``resolve_data_dir`` finds the data root (argument, else ``$REVBENCH_DATA``); ``dataset_dir`` the folder of
  one dataset under it.
* ``verify`` checks files against the folder's ``SHA256SUMS`` (``<sha256>  <filename>`` lines,
  as written by ``sha256sum``) and raises a :class:`DataError` naming the file and both hashes.

Data layout expected under the data root (see ``/work/shared/data/README.md``)::

    <root>/ptb/{ptb.train.txt, ptb.valid.txt, ptb.test.txt, SHA256SUMS}
    <root>/wikitext-2/{wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens, SHA256SUMS}
    <root>/multi30k/{train,val,test2016}.{en,de} + SHA256SUMS      (see revbench.tasks.nmt.corpus)

``verify=False`` skips the checksum check; use it only for your own copy of a dataset that has no
``SHA256SUMS`` (results on unverified data are not comparable with published numbers).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

ENV_VAR = "REVBENCH_DATA"


# ----------------------------------------------------------------------------------------- errors
class DataError(ValueError):
    """A dataset is misconfigured, corrupt or malformed (the message says which file and why)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data directory, data file or ``SHA256SUMS`` file does not exist."""


class ChecksumError(DataError):
    """A data file's SHA-256 differs from the one listed in ``SHA256SUMS``."""


# ------------------------------------------------------------------------------ locating the data
def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data root: ``data_dir`` if given, else ``$REVBENCH_DATA``.

    Raises :class:`MissingDataError` if neither is set or the folder does not exist.
    """
    source = "the data_dir argument (--data-dir)"
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise MissingDataError(
                "no data directory given: pass --data-dir PATH (data_dir=... in Python) or set the "
                f"environment variable {ENV_VAR}=PATH, where PATH holds ptb/, wikitext-2/ and/or multi30k/ "
                "(each with its SHA256SUMS). The synthetic corpora need no data directory."
            )
        data_dir, source = env, f"${ENV_VAR}"
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise MissingDataError(f"data directory {str(path)!r} (from {source}) does not exist or is not a folder")
    return path.resolve()


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None, files: Iterable[str] = ()) -> Path:
    """Folder of dataset ``name``: ``<root>/<name>``, or the root itself if it directly holds ``files``.

    The second form lets ``--data-dir`` point straight at e.g. a ``ptb/`` folder.
    """
    root = resolve_data_dir(data_dir)
    sub = root / name
    if sub.is_dir():
        return sub
    files = list(files)
    if files and all((root / f).is_file() for f in files):
        return root
    raise MissingDataError(f"dataset folder {str(sub)!r} not found (expected {name}/ under the data directory {str(root)!r})")


# ------------------------------------------------------------------------------------- checksums
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def clear_verify_cache() -> None:
    """Forget every cached file hash (files are re-hashed on next ``verify``)."""
    _HASH_CACHE.clear()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, cached in-process per (resolved path, size, mtime_ns)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    digest = _HASH_CACHE.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        _HASH_CACHE[key] = digest
    return digest


def read_sha256sums(folder: str | os.PathLike) -> dict[str, str]:
    """Parse ``folder/SHA256SUMS`` (``<hex>  <name>`` or ``<hex> *<name>`` per line) into {name: hex}."""
    sums = Path(folder) / "SHA256SUMS"
    if not sums.is_file():
        raise MissingDataError(
            f"checksum file {str(sums)!r} is missing; cannot verify the data in {str(folder)!r} "
            "(create it with `sha256sum FILES > SHA256SUMS`, or pass verify=False / --no-verify for your own copy)"
        )
    out: dict[str, str] = {}
    for lineno, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{str(sums)!r} line {lineno} is not '<sha256>  <filename>': {line!r}")
        out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def verify(folder: str | os.PathLike, files: Iterable[str]) -> dict[str, str]:
    """Check each of ``files`` (names inside ``folder``) against ``folder/SHA256SUMS``.

    Returns {name: sha256}. Raises :class:`MissingDataError` for a missing file or SHA256SUMS (or a
    file SHA256SUMS does not list) and :class:`ChecksumError` naming the file, the expected and the
    actual hash on a mismatch. Hashes are cached per (path, size, mtime), so repeated loads are fast.
    """
    folder = Path(folder)
    expected = read_sha256sums(folder)
    result: dict[str, str] = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            raise MissingDataError(f"data file {str(path)!r} is missing")
        if name not in expected:
            raise MissingDataError(f"data file {name!r} has no entry in {str(folder / 'SHA256SUMS')!r}")
        actual = sha256_file(path)
        if actual != expected[name]:
            raise ChecksumError(
                f"checksum mismatch for {str(path)!r}: expected sha256 {expected[name]}, got {actual} "
                "(the file is corrupt or a different version; re-copy it)"
            )
        result[name] = actual
    return result
