"""The saved-tensors meter (:class:`SavedTensorsMeter`): bytes autograd saved for backward.

``saved_bytes``: a cross-check of the activation memory, measured through autograd's saved-tensor hooks.
"""
from __future__ import annotations

import weakref
from typing import Any, Iterable

import torch

from revbench.measure.meter import Meter, param_list, storage_of

__all__ = ["SavedTensorsMeter"]


class SavedTensorsMeter(Meter):
    """Bytes autograd saved for backward in the region: a cross-check, not the memory figure.

    How: ``torch.autograd.graph.saved_tensors_hooks``; every saved tensor's untyped storage is counted once
    (deduplicated by device and ``data_ptr``, with a weak reference so that a later storage at a recycled
    address counts again) at its full ``untyped_storage().nbytes()`` (a view like ``xs[t]`` brings in the
    whole base storage). Storages of ``params`` (and of ``exclude``, e.g. the inputs) are left out.
    ``saved_bytes`` is the peak of saved bytes alive at once (a saved tensor dies when backward frees its
    node), so per-step recomputation (reversible backprop) is not summed over steps. Checkpointing and ``save_on_cpu`` install their
    own hooks, which take precedence inside them, so this meter undercounts there.
    The pack hook stores a detached alias of the tensor, so an output saved by its own node does not form a
    reference cycle (an identity hook would keep it alive when backward never runs).
    """

    name = "saved_tensors"
    figure_names = ("saved_bytes",)
    nest_order = 70

    def __init__(self, params: Iterable[torch.Tensor] | None = None, exclude: Iterable[torch.Tensor] | None = None):
        super().__init__()
        self._params = param_list(params, "SavedTensorsMeter") or []
        self._exclude_tensors = param_list(exclude, "SavedTensorsMeter") or []
        self._hooks_ctx: Any = None
        self._saved = 0
        self._count = 0

    @property
    def saved_tensor_count(self) -> int:
        """How many distinct storages were counted."""
        return self._count

    def _start(self) -> None:
        self._saved = 0
        self._current = 0
        self._count = 0
        self._alive: dict[tuple, list] = {}      # storage key -> [bytes, packed handles alive]
        self._excluded: set[tuple] = set()
        for t in (*self._params, *self._exclude_tensors):
            st = storage_of(t)
            if st is not None:
                self._excluded.add((st.device, st.data_ptr()))
        self._hooks_ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks_ctx.__enter__()

    def _release(self, key: tuple) -> None:
        entry = self._alive.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self._current -= entry[0]
            del self._alive[key]

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        packed = t.detach()
        st = storage_of(t)
        if st is not None:
            key = (st.device, st.data_ptr())
            if key not in self._excluded:
                entry = self._alive.get(key)
                if entry is None:
                    entry = self._alive[key] = [st.nbytes(), 0]
                    self._current += entry[0]
                    self._saved = max(self._saved, self._current)
                    self._count += 1
                entry[1] += 1
                # the graph node holds ``packed`` until backward frees it (or the graph is dropped)
                weakref.finalize(packed, self._release, key)
        return packed

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def _stop(self) -> dict[str, Any]:
        self._hooks_ctx.__exit__(None, None, None)
        self._hooks_ctx = None
        return {"saved_bytes": self._saved}
