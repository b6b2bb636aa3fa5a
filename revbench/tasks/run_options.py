"""Checks of what every training run is given besides its model: the seed, the device, the method's options, how
often to checkpoint. Each raises a ``ValueError`` naming the value and what is wrong; the command line's argument
types (``revbench.cli.options``) call the same checks. ``same_config`` tells the grids whether a finished run was
made with the configuration asked for. Nothing heavy is imported here (the CLI uses it while parsing)."""
from __future__ import annotations

import json
import math
import re

SEED_MAX = 2**32 - 1
"""Seeds are 0..2^32-1: every seed a run derives from it (``seed + 2``, the NMT epoch order's
``seed * 1000003 + epoch``) then stays inside what ``torch.manual_seed`` accepts."""

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def same_config(saved: dict, wanted: dict, ignore=frozenset()) -> bool:
    """True when a finished run's saved configuration equals the one asked for, field by field, apart from the
    run-control fields in ``ignore`` (the grids use it to tell a finished run from a stale one)."""
    return isinstance(saved, dict) and all(saved.get(k) == wanted.get(k) for k in set(saved) | set(wanted)
                                           if k not in ignore)


def check_seed(seed, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{name} must be an int from 0 to {SEED_MAX}, got {seed!r}")
    return seed


def check_device(device, name: str = "device") -> str:
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return device


def check_count(value, name: str, allow_none: bool = True, minimum: int = 0) -> int | None:
    """An int >= ``minimum`` (a count of 0 usually means off), or None where ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_real(value, name: str, minimum: float | None = None, allow_none: bool = False) -> float | None:
    """A finite number (>= ``minimum`` when given), or None where ``allow_none``."""
    if value is None and allow_none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (minimum is not None and value < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}{' or None' if allow_none else ''}, got {value!r}")
    return value


def configured_method(name: str, options: dict):
    """``revbench.methods.get(name, **options)``; options the method does not take are a ValueError naming
    ``--method-options`` (a TypeError from the method's constructor otherwise)."""
    from revbench import methods

    if not isinstance(options, dict):
        raise ValueError(f"method options must be a JSON object / dict of the method's options, got {options!r}")
    try:
        return methods.get(name, **options)
    except TypeError as exc:
        raise ValueError(f"--method-options {json.dumps(options, default=str)} do not suit method {name!r}: "
                         f"{exc}") from None
