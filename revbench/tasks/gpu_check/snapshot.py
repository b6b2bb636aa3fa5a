"""Allocator timelines of one training step for PyTorch's memory viewer (https://pytorch.org/memory_viz).

:func:`write_snapshot` records the CUDA caching allocator's history (``torch.cuda.memory._record_memory_history``,
Python stacks) around one step and writes it with ``_dump_snapshot``: a pickle the viewer loads when the file is
dropped on its page. Each allocation carries its Python stack (``context="alloc"``). The file is written beside
its target and renamed into place (``revbench.util.atomic``); one over the limit is recorded again without stacks
(the whole timeline, no call sites), then with a quarter of the entries (the oldest dropped), else left out with
the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from revbench.util.atomic import replacing

MAX_ENTRIES = 200_000


class _TooLarge(Exception):
    pass


def write_snapshot(step: Callable[[], Any], path, limit_bytes: int, api=None,
                   max_entries: int = MAX_ENTRIES) -> dict[str, Any]:
    """Run ``step()`` under the allocator's history recorder and write the snapshot to ``path``.
    ``api``: ``torch.cuda.memory`` (injectable). Returns ``{"file", "bytes", "max_entries"}``, or
    ``{"file": None, "reason"}`` when even the smallest recording is over ``limit_bytes``."""
    if api is None:
        import torch

        api = torch.cuda.memory
    path = Path(path)
    sizes = []
    ladder = (("alloc", max_entries), (None, max_entries), (None, max_entries // 4))
    for context, entries in ladder:
        api._record_memory_history(enabled="all", context=context, stacks="python", max_entries=entries)
        try:
            step()
            with replacing(path) as tmp:
                api._dump_snapshot(str(tmp))
                size = tmp.stat().st_size
                sizes.append(size)
                if size > limit_bytes:
                    raise _TooLarge
        except _TooLarge:
            continue
        finally:
            api._record_memory_history(enabled=None)
        return {"file": path.name, "bytes": size, "max_entries": entries,
                "stacks": "python stack of each allocation" if context else "none (the file was too large with them)"}
    return {"file": None, "reason": f"the snapshot was {sizes[-1]:,} bytes even without stacks and with "
                                    f"{ladder[-1][1]:,} entries, over the {limit_bytes:,}-byte limit of a result file"}
