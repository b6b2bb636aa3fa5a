"""Values the tasks' JSON files (results, logs, records) cannot hold as they are.

``json_default`` is the ``default=`` of ``json.dump``: paths become strings, tensors lists. ``finite`` maps
inf/nan (which JSON lacks) to None.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch


def json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def finite(x):
    """JSON has no inf/nan: map them to None (and keep ints/floats otherwise)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
