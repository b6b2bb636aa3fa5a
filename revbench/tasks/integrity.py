"""Checkpoints that prove they are intact: a SHA-256 of their contents is written inside them and checked on load.

``seal(payload)`` adds ``payload["integrity"] = {"algorithm": "sha256", "digest": ...}``, the digest of
``payload_digest``: a canonical walk of the payload that hashes every tensor's dtype, shape and raw bytes and every
plain value (type included), so one flipped bit inside a weight is caught, not only damage to the pickle framing
(which ``torch.load`` itself does not check: it reads the zip's records without their CRCs). ``save_sealed``
writes a sealed payload atomically (``revbench.util.atomic.atomic_save``); the file stays an ordinary
``torch.save`` dict.

``load_sealed(path, what, required=...)`` is the one reader: every way a file can be unusable (missing, a folder,
empty, truncated, random bytes, another format, not a dict, a digest that does not match, a required key missing)
raises :class:`CheckpointCorruptError`, a ``ValueError`` whose one-line message names the file and what is wrong.
A file without a digest is refused, except one that ``legacy(payload)`` recognises as written by a revbench older
than the digest: that one is used unverified, with a one-line warning (``warn``). ``load_model_state`` puts a
checkpoint's weights into a model, refusing (one line) weights that do not fit it.
"""
from __future__ import annotations

import hashlib
import math
import pickle
import struct
import sys
from pathlib import Path
from typing import Callable, Iterable

import torch

from revbench.util.atomic import atomic_save

DIGEST_KEY = "integrity"
ALGORITHM = "sha256"


class CheckpointCorruptError(ValueError):
    """A checkpoint file cannot be trusted or used (the message names the file and why)."""


# ------------------------------------------------------------------------------------------- the digest
def _feed(h, obj) -> None:
    """Hash ``obj`` with its type: tags and lengths make the encoding unambiguous."""
    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"T" if obj else b"F")
    elif isinstance(obj, int):
        h.update(b"i%d;" % obj)
    elif isinstance(obj, float):
        h.update(b"f" + (obj.hex() if math.isfinite(obj) else repr(obj)).encode() + b";")
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"s%d:" % len(data) + data)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b"b%d:" % len(obj) + bytes(obj))
    elif isinstance(obj, torch.Tensor):
        _feed_tensor(h, obj)
    elif isinstance(obj, dict):
        h.update(b"d%d:" % len(obj))
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update((b"l%d:" if isinstance(obj, list) else b"t%d:") % len(obj))
        for v in obj:
            _feed(h, v)
    else:                                   # anything else a checkpoint might hold: its pickle
        data = pickle.dumps(obj, protocol=4)
        h.update(b"o%d:" % len(data) + data)


def _feed_tensor(h, t: torch.Tensor) -> None:
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.resolve_conj().resolve_neg().cpu().contiguous()
    head = f"{t.dtype}{tuple(t.shape)}".encode()
    h.update(b"x%d:" % len(head) + head)
    h.update(struct.pack("<q", t.numel() * t.element_size()))
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())


def payload_digest(payload) -> str:
    """SHA-256 (hex) of ``payload``'s values: tensors by dtype, shape and bytes; dict order counts."""
    h = hashlib.sha256()
    _feed(h, payload)
    return h.hexdigest()


def seal(payload: dict) -> dict:
    """``payload`` plus its digest entry (the payload itself is not changed)."""
    body = {k: v for k, v in payload.items() if k != DIGEST_KEY}
    return {**body, DIGEST_KEY: {"algorithm": ALGORITHM, "digest": payload_digest(body)}}


def save_sealed(payload: dict, path) -> Path:
    """Write ``seal(payload)`` to ``path`` atomically (fsynced)."""
    return atomic_save(seal(payload), path)


# ------------------------------------------------------------------------------------------- reading
_WARNED: set[str] = set()


def _warn(msg: str) -> None:
    """Print a warning once per process (a file read twice in a run warns once)."""
    if msg not in _WARNED:
        _WARNED.add(msg)
        print(f"revbench: warning: {msg}", file=sys.stderr, flush=True)


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``: an exception in one line, for one-line errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_sealed(path, what: str, required: Iterable[str] = (), legacy: Callable[[dict], bool] | None = None,
                warn: Callable[[str], None] = _warn) -> dict:
    """The payload of the sealed checkpoint ``path`` (the digest entry removed), verified; ``what`` names the
    file in messages ("checkpoint", "best model"). See the module docstring."""
    path = Path(path)
    label = f"{what} {str(path)!r}"
    if not path.exists():
        raise CheckpointCorruptError(f"{label} does not exist")
    if path.is_dir():
        raise CheckpointCorruptError(f"{label} is a directory, not a checkpoint file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointCorruptError(f"{label} cannot be read ({describe(exc)})") from None
    if size == 0:
        raise CheckpointCorruptError(f"{label} is empty (0 bytes): its write was interrupted or it was truncated")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:            # torch.load fails on damage with any of a dozen exception types
        raise CheckpointCorruptError(f"{label} cannot be read ({describe(exc)}): it is truncated, damaged or "
                                     "not a torch.save file") from None
    if not isinstance(obj, dict):
        raise CheckpointCorruptError(f"{label} holds a {type(obj).__name__}, not a revbench checkpoint (a dict)")
    entry = obj.pop(DIGEST_KEY, None)
    if entry is None:
        if legacy is None or not legacy(obj):
            raise CheckpointCorruptError(f"{label} carries no integrity digest, so it cannot be verified: it was "
                                         "not written by revbench's checkpoint writer or has been altered")
        warn(f"{label} carries no integrity digest (written by an older revbench): using it unverified")
    else:
        if not (isinstance(entry, dict) and entry.get("algorithm") == ALGORITHM
                and isinstance(entry.get("digest"), str)):
            raise CheckpointCorruptError(f"{label} has a malformed integrity entry ({entry!r:.80}): it was altered")
        actual = payload_digest(obj)
        if actual != entry["digest"]:
            raise CheckpointCorruptError(
                f"{label} is corrupt: its contents do not match the SHA-256 digest written with it (expected "
                f"{entry['digest'][:16]}..., got {actual[:16]}...); it was damaged after it was written: do not "
                "resume from it (restore a copy, or start a new run in another folder)")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointCorruptError(f"{label} lacks the key(s) {', '.join(map(repr, missing))}: not a complete "
                                     f"{what} of this kind of run")
    return obj


def load_model_state(model: torch.nn.Module, state, label: str) -> None:
    """``model.load_state_dict(state)``, or a one-line :class:`CheckpointCorruptError` naming ``label`` (the file)
    and the keys or shapes that do not fit."""
    if not isinstance(state, dict):
        raise CheckpointCorruptError(f"{label}: its model entry is a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(getattr(state[k], 'shape', ()))} instead of {tuple(v.shape)}" for k, v in own.items()
              if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape)]
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"unexpected {', '.join(unexpected)}"] if unexpected else []) + ([f"shape of {'; '.join(shapes)}"]
                                                                           if shapes else [])
    if problems:
        raise CheckpointCorruptError(f"{label}: its weights do not fit this model ({'; '.join(problems)})")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointCorruptError(f"{label}: its weights cannot be loaded ({describe(exc)})") from None
