"""The live-tensor meter (:class:`LiveTensorMeter`, any device) and its storage bookkeeping.

A ``TorchDispatchMode`` that sees every op's outputs and tracks their storages until they die.
``live_peak_bytes`` = peak bytes of storages created in the region and alive at the same time (the peak above
what was alive before), split at the moment of the peak into ``live_peak_param_bytes`` /
``live_peak_grad_bytes`` / ``live_peak_other_bytes``.
"""
from __future__ import annotations

import functools
import threading
import weakref
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from revbench.measure.meter import Meter, as_device, param_list, storage_of

__all__ = ["LiveTensorMeter"]


def _leaves(obj: Any) -> Iterator[Any]:
    """The leaves of an op's arguments or results: aten ops only nest tuples, lists and dicts (a cheaper
    ``tree_leaves``, which dominated the meter's overhead)."""
    if isinstance(obj, (tuple, list)):
        for o in obj:
            if isinstance(o, (tuple, list, dict)):
                yield from _leaves(o)
            elif o is not None and not isinstance(o, (int, float, bool, str, torch.dtype, torch.device)):
                yield o
    elif isinstance(obj, dict):
        yield from _leaves(list(obj.values()))
    else:
        yield obj


_OTHER, _PARAM, _GRAD = 0, 1, 2


class _Live:
    """One tracked storage: a weak reference to it, its size, the bytes it adds and its category."""

    __slots__ = ("ref", "key", "nbytes", "counted", "kind", "seq")

    def __init__(self, ref: weakref.ref, key: tuple, nbytes: int, counted: int, kind: int, seq: int) -> None:
        self.ref = ref
        self.key = key
        self.nbytes = nbytes
        self.counted = counted
        self.kind = kind
        self.seq = seq  # order of creation: alive now and created no later than the peak = alive at the peak


class LiveTensorMeter(Meter, TorchDispatchMode):
    """Peak bytes of tensor storages created in the region and alive at the same time.

    How: a ``TorchDispatchMode`` sees every aten op run on this thread (forward and autograd backward; the
    autograd engine carries the mode to its device threads too) including factory functions
    (``torch.empty``/``zeros``). For each tensor an op returns it takes the untyped storage and:

    - a storage already tracked is not counted again (views, in-place ops); if it grew (resize) the growth
      counts;
    - a storage that is among the op's inputs but not tracked existed before the region (an in-place
      accumulation into an existing ``.grad``, a view of a parameter): it is not counted, only a growth would be;
    - a storage with the same device and ``data_ptr`` as a tracked live storage is an alias: not counted;
    - anything else is a new storage: its ``nbytes()`` are added to the live total.

    A weak reference to each tracked storage releases its bytes when the storage is freed, so each event costs
    O(1) and the whole run is linear in the number of ops. ``UntypedStorage.resize_`` (not an aten op) is
    patched while measuring so that ``storage.resize_(0)`` releases bytes.

    Figures: ``live_peak_bytes`` is the maximum of the live total (starting at 0, so never negative; storages
    that existed before the region are never counted, even when freed inside it). At the moment that maximum is
    first reached, the live bytes are split into ``live_peak_param_bytes`` (storages of the given parameters,
    e.g. parameters created or re-pointed with ``set_`` inside the region), ``live_peak_grad_bytes`` (storages
    that are, or later become, some parameter's ``.grad`` while alive: recognised by a post-accumulate-grad
    hook on each parameter, so a gradient buffer AccumulateGrad adopts without a copy counts as gradient even
    when the peak came just before the adoption) and ``live_peak_other_bytes`` (activations, temporaries,
    incoming gradients that are added into an existing ``.grad`` and freed). The three add up to
    ``live_peak_bytes``. Without ``params`` the split is unavailable (None, with a reason). Sizes are storage
    ``nbytes()``, without the CUDA allocator's rounding. ``p.grad = t`` assigned by hand is not recognised.

    Not seen: memory a kernel allocates internally without returning it as a tensor, tensors created outside
    the dispatcher (``torch.from_numpy``), and, with ``device`` given, storages on other devices.
    """

    name = "live_tensors"
    figure_names = ("live_peak_bytes", "live_peak_param_bytes", "live_peak_grad_bytes", "live_peak_other_bytes")
    nest_order = 90  # innermost: sees only the measured code, none of the other meters' bookkeeping

    def __init__(self, params: Iterable[torch.Tensor] | None = None, device: str | torch.device | None = None):
        Meter.__init__(self)
        TorchDispatchMode.__init__(self)
        self._params = param_list(params, "LiveTensorMeter")
        self._device = as_device(device)
        self._lock = threading.RLock()
        self._reset()

    # -- state ------------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._by_id: dict[int, _Live] = {}
        self._by_key: dict[tuple, int] = {}
        self._current = 0
        self._by_kind = [0, 0, 0]
        self._peak = 0
        self._peak_by_kind = [0, 0, 0]
        self._seq = 0
        self._peak_seq = 0
        self._param_ids: set[int] = set()
        self._hooks: list[Any] = []
        self._orig_resize: Any = None

    @property
    def current_bytes(self) -> int:
        """Bytes of tracked storages alive now (during or right after the region)."""
        return self._current

    @property
    def peak_bytes(self) -> int:
        """The peak so far (``live_peak_bytes`` once the region ended)."""
        return self._peak

    def prepare(self) -> None:
        """Run one tiny op under the mode: the first dispatch imports torch._dynamo (about 80 MB of RSS and
        800 modules), which must not happen inside an RSS meter's region."""
        if self._running or getattr(self, "_prepared", False):
            return
        probe = LiveTensorMeter()
        with probe:
            torch.empty(1).add_(1)
        self._prepared = True

    def _start(self) -> None:
        self._reset()
        if self._params is not None:
            self._param_ids = {id(p) for p in self._params}
            for p in self._params:
                if p.requires_grad and p.is_leaf:
                    self._hooks.append(p.register_post_accumulate_grad_hook(self._on_grad_accumulated))
        self._patch_resize()
        TorchDispatchMode.__enter__(self)

    def _stop(self) -> dict[str, Any]:
        try:
            TorchDispatchMode.__exit__(self, None, None, None)
        finally:
            self._unpatch_resize()
            for h in self._hooks:
                h.remove()
            self._hooks = []
        with self._lock:
            peak, split = self._peak, self._peak_by_kind
            # drop the weak references: storages that die later must not call back into this meter
            self._by_id = {}
            self._by_key = {}
        out: dict[str, Any] = {"live_peak_bytes": peak}
        if self._params is None:
            reason = "no parameters were passed to LiveTensorMeter(params=...), so bytes cannot be split"
            for fig in ("live_peak_param_bytes", "live_peak_grad_bytes", "live_peak_other_bytes"):
                out[fig] = None
                out[f"{fig}_reason"] = reason
        else:
            out["live_peak_param_bytes"] = split[_PARAM]
            out["live_peak_grad_bytes"] = split[_GRAD]
            out["live_peak_other_bytes"] = split[_OTHER]
        return out

    # the context-manager protocol is the meter's (start/stop), not TorchDispatchMode's bare push/pop
    def __enter__(self) -> "LiveTensorMeter":
        self.start()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        self.stop()

    # -- bookkeeping ------------------------------------------------------------------------------------
    def _wanted(self, t: torch.Tensor) -> bool:
        dev = self._device
        if dev is None:
            return True
        if t.device.type != dev.type:
            return False
        return dev.index is None or t.device.index == dev.index

    def _add(self, st: torch.UntypedStorage, key: tuple, nbytes: int, counted: int, kind: int) -> None:
        sid = id(st)
        ref = weakref.ref(st, functools.partial(self._on_storage_freed, sid))
        self._seq += 1
        self._by_id[sid] = _Live(ref, key, nbytes, counted, kind, self._seq)
        self._by_key[key] = sid
        self._change(kind, counted)

    def _change(self, kind: int, delta: int) -> None:
        self._current += delta
        self._by_kind[kind] += delta
        if self._current > self._peak:
            self._peak = self._current
            self._peak_by_kind = list(self._by_kind)
            self._peak_seq = self._seq

    def _on_storage_freed(self, sid: int, ref: weakref.ref) -> None:
        with self._lock:
            e = self._by_id.get(sid)
            if e is None or e.ref is not ref:
                return
            del self._by_id[sid]
            if self._by_key.get(e.key) == sid:
                del self._by_key[e.key]
            self._change(e.kind, -e.counted)

    def _reclassify(self, st: torch.UntypedStorage, kind: int) -> None:
        e = self._by_id.get(id(st))
        if e is None or e.ref() is not st or e.kind == kind:
            return
        self._by_kind[e.kind] -= e.counted
        self._by_kind[kind] += e.counted
        if e.seq <= self._peak_seq:
            # the storage was alive at the peak (it has been alive since its creation): it was already
            # this parameter's gradient (or parameter) buffer then, so the peak's split moves with it
            self._peak_by_kind[e.kind] -= e.counted
            self._peak_by_kind[kind] += e.counted
        e.kind = kind

    def _on_grad_accumulated(self, p: torch.Tensor) -> None:
        g = p.grad
        if g is None:
            return
        st = storage_of(g)
        if st is not None:
            with self._lock:
                self._reclassify(st, _GRAD)

    def _resized(self, st: torch.UntypedStorage) -> None:
        """A tracked storage may have changed size (and address): count the difference."""
        e = self._by_id.get(id(st))
        if e is None or e.ref() is not st:
            return
        nbytes = st.nbytes()
        if nbytes != e.nbytes:
            delta = nbytes - e.nbytes
            e.nbytes = nbytes
            e.counted += delta
            self._change(e.kind, delta)
        key = (st.device, st.data_ptr())
        if key != e.key:
            sid = id(st)
            if self._by_key.get(e.key) == sid:
                del self._by_key[e.key]
            e.key = key
            if st.data_ptr() != 0:
                self._by_key[key] = sid

    def _patch_resize(self) -> None:
        orig = torch.UntypedStorage.resize_
        meter = self

        @functools.wraps(orig)
        def resize_(st, size):
            res = orig(st, size)
            with meter._lock:
                meter._resized(st)
            return res

        self._orig_resize = orig
        self._resize_was_own = "resize_" in torch.UntypedStorage.__dict__
        torch.UntypedStorage.resize_ = resize_  # type: ignore[method-assign]

    def _unpatch_resize(self) -> None:
        if self._orig_resize is not None:
            if self._resize_was_own:
                torch.UntypedStorage.resize_ = self._orig_resize  # type: ignore[method-assign]
            else:
                del torch.UntypedStorage.resize_  # back to the inherited method
            self._orig_resize = None

    @staticmethod
    def _input_storages(args: Sequence[Any], kwargs: dict) -> dict[int, tuple[Any, int]]:
        """id(storage) -> (storage, nbytes now) for every tensor or storage argument of an op."""
        found: dict[int, tuple[Any, int]] = {}
        for a in _leaves([*args, *kwargs.values()] if kwargs else args):
            if isinstance(a, torch.Tensor):
                st = storage_of(a)
            elif isinstance(a, torch.UntypedStorage):
                st = a
            elif isinstance(a, torch.TypedStorage):
                st = a._untyped_storage
            else:
                continue
            if st is not None and id(st) not in found:
                found[id(st)] = (st, st.nbytes())
        return found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        schema = getattr(func, "_schema", None)
        mutable = bool(schema is not None and schema.is_mutable)
        # sizes of the input storages before a mutating op (an out= argument may be resized by it)
        before = self._input_storages(args, kwargs) if mutable else None
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            outs: list[Any] = [out]
        elif isinstance(out, (tuple, list)):
            outs = list(_leaves(out))
        else:
            return out
        with self._lock:
            inputs = before
            for t in outs:
                if not isinstance(t, torch.Tensor) or not self._wanted(t):
                    continue
                st = storage_of(t)
                if st is None:
                    continue
                e = self._by_id.get(id(st))
                if e is not None and e.ref() is st:  # tracked: a view, an in-place op, a resize
                    self._resized(st)
                    if mutable and id(t) in self._param_ids:
                        self._reclassify(st, _PARAM)
                    continue
                if inputs is None:
                    inputs = self._input_storages(args, kwargs)
                nbytes = st.nbytes()
                known = inputs.get(id(st))
                if known is not None and known[0] is st:
                    # a storage that existed before the region (or outside the tracked device set):
                    # only what an out= / resize op added to it is new memory
                    grown = nbytes - known[1] if mutable else 0
                    if grown > 0:
                        kind = _PARAM if id(t) in self._param_ids else _OTHER
                        self._add(st, (st.device, st.data_ptr()), nbytes, grown, kind)
                    continue
                ptr = st.data_ptr()
                if nbytes == 0 or ptr == 0:
                    continue
                key = (st.device, ptr)
                other = self._by_key.get(key)
                if other is not None:
                    oe = self._by_id.get(other)
                    if oe is not None and oe.ref() is not None:
                        continue  # another storage object over the same memory: an alias, not new bytes
                kind = _PARAM if id(t) in self._param_ids else _OTHER
                self._add(st, key, nbytes, nbytes, kind)
        return out
