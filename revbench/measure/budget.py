"""Byte sizes written for people: ``"4 MiB"`` -> 4 * 2**20, ``"4 MB"`` -> 4 * 10**6, ``4096`` -> 4096.

Units are explicit and case-sensitive, so that a size never means something else than it says: IEC binary
prefixes ``KiB MiB GiB TiB PiB`` (powers of 1024), SI decimal prefixes ``kB`` (or ``KB``) ``MB GB TB PB``
(powers of 1000), and ``B``/``bytes``. A plain integer (or a string of digits) is bytes. ``"4 mb"``, ``"4 Mb"``
(megabits?), ``"4 M"`` and ``"4 MIB"`` are refused, as are negative, fractional-byte, non-finite and boolean
sizes; the error says which units there are. Decimals are fine when the result is a whole number of bytes
(``"1.5 KiB"`` = 1536).

Used by the ``limit_activation_memory`` marker (`revbench.measure.pytest_plugin`).
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

UNITS = {
    "B": 1, "byte": 1, "bytes": 1,
    "kB": 10 ** 3, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12, "PB": 10 ** 15,
    "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30, "TiB": 2 ** 40, "PiB": 2 ** 50,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")
UNIT_HELP = "B, kB/KB, MB, GB, TB, PB (powers of 1000) or KiB, MiB, GiB, TiB, PiB (powers of 1024)"


class SizeError(ValueError):
    """A size that cannot be read (one line, naming the text and the accepted units)."""


def parse_size(size) -> int:
    """Bytes of ``size``: an int (bytes) or a string such as ``"4 MiB"``, ``"4 MB"``, ``"1.5 KiB"``, ``"4096"``."""
    if isinstance(size, bool):
        raise SizeError(f"{size!r} is not a size: give bytes as an int or a string such as '4 MiB' or '4 MB'")
    if isinstance(size, int):
        if size < 0:
            raise SizeError(f"{size} is not a size: a memory budget is >= 0 bytes")
        return size
    if isinstance(size, float):
        if not math.isfinite(size) or size < 0 or not size.is_integer():
            raise SizeError(f"{size!r} is not a size: give a whole number of bytes, or a string such as '4 MiB'")
        return int(size)
    if not isinstance(size, str):
        raise SizeError(f"{size!r} is not a size: give bytes as an int or a string such as '4 MiB' or '4 MB'")
    m = _SIZE_RE.match(size)
    if not m:
        raise SizeError(f"{size!r} is not a size: expected a number and a unit ({UNIT_HELP}), e.g. '4 MiB'")
    number, unit = m.group(1), m.group(2) or "B"
    if unit not in UNITS:
        hint = ""
        for known in UNITS:
            if known.lower() == unit.lower():
                hint = f" (did you mean {known!r}?)"
                break
        raise SizeError(f"{size!r}: unknown unit {unit!r}{hint}; units are case-sensitive: {UNIT_HELP}")
    try:
        exact = Decimal(number) * UNITS[unit]
    except InvalidOperation:   # pragma: no cover - the pattern only lets decimals through
        raise SizeError(f"{size!r} is not a size") from None
    if exact != exact.to_integral_value():
        raise SizeError(f"{size!r} is not a whole number of bytes ({exact} B)")
    return int(exact)


def format_size(nbytes: int) -> str:
    """``5242880`` -> ``'5,242,880 B (5.00 MiB)'``: exact bytes, and the IEC size for reading."""
    for unit, factor in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(nbytes) >= factor:
            return f"{nbytes:,} B ({nbytes / factor:.2f} {unit})"
    return f"{nbytes:,} B"
