"""Memory meters for one measured region, independent of the code measured.

Every meter follows one small protocol (:class:`Meter`): a ``name``, ``available() -> (bool, reason)``,
``start()``/``stop()`` (or ``with meter:``), and after the region ``figures() -> dict``. Figures are integers
(bytes or counts). A meter that cannot measure here reports each of its figures as ``None`` together with
``<figure>_reason`` (a string saying why); it never reports 0 for "unavailable".

Meters (figure names are the keys of the benchmark record, see RECORD.md):

- :class:`LiveTensorMeter` (any device): a ``TorchDispatchMode`` that sees every op's outputs and tracks
  their storages until they die. ``live_peak_bytes`` = peak bytes of storages created in the region and alive
  at the same time (the peak above what was alive before), split at the moment of the peak into
  ``live_peak_param_bytes`` / ``live_peak_grad_bytes`` / ``live_peak_other_bytes``.
- :class:`RSSMeter` (Linux): process peak resident set size, ``rss_peak_delta_bytes``.
- :class:`SavedTensorsMeter`: bytes autograd saved for backward, ``saved_bytes`` (a cross-check only).
- :class:`CudaAllocatorMeter`: the CUDA caching allocator's exact peaks, ``cuda_peak_allocated_bytes`` and
  ``cuda_peak_reserved_bytes``.
- :class:`NvmlMeter`: device and process memory sampled through NVML by a background thread,
  ``nvml_peak_used_bytes``, ``nvml_process_peak_used_bytes`` and ``nvml_samples``.

:func:`measure` runs a function once under several meters; :func:`default_meters` picks the meters for a
device; :func:`environment_info` describes the machine for a record.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import platform
import socket
import subprocess
import sys
import threading
import weakref
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "Meter",
    "LiveTensorMeter",
    "RSSMeter",
    "SavedTensorsMeter",
    "CudaAllocatorMeter",
    "NvmlMeter",
    "measure",
    "measuring",
    "peak_figures",
    "default_meters",
    "environment_info",
]


# ----------------------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------------------
class Meter:
    """Base class of all meters: the uniform protocol.

    Subclasses set ``name``, ``figure_names`` and ``nest_order`` (meters with a lower order are entered first,
    i.e. sit further out, when :func:`measure` nests them) and implement ``_check()``, ``_start()``,
    ``_stop()`` and ``_figures()``.
    """

    name: str = "meter"
    figure_names: tuple[str, ...] = ()
    nest_order: int = 50

    def __init__(self) -> None:
        self._availability: tuple[bool, str] | None = None
        self._running = False
        self._result: dict[str, Any] | None = None

    # -- availability -----------------------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when this meter can measure here, else ``(False, reason)``. Cached."""
        if self._availability is None:
            try:
                self._availability = self._check()
            except Exception as exc:  # a probe that fails is a reason, not a crash
                self._availability = (False, f"{type(exc).__name__}: {exc}")
        return self._availability

    def _check(self) -> tuple[bool, str]:
        return True, ""

    def prepare(self) -> None:
        """One-time warm-up before a region (lazy imports, library loading), so that no meter's first use
        lands inside another meter's region. :func:`measuring` calls it on every meter before starting any."""

    # -- region -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin measuring. Does nothing (but is allowed) when the meter is unavailable."""
        if self._running:
            raise RuntimeError(f"{self.name} meter is already measuring a region; meters are not re-entrant")
        self._result = None
        self._running = True
        if self.available()[0]:
            try:
                self._start()
            except BaseException:
                self._running = False
                raise

    def stop(self) -> None:
        """End the region; the figures are read here."""
        if not self._running:
            raise RuntimeError(f"{self.name} meter was stopped without being started")
        self._running = False
        ok, reason = self.available()
        if not ok:
            self._result = self._unavailable(reason)
            return
        self._result = dict(self._stop())

    def __enter__(self) -> "Meter":
        self.start()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        self.stop()

    def figures(self) -> dict[str, int | None]:
        """The figures of the last region: ``{figure: int}``, or ``{figure: None, figure_reason: str}``."""
        ok, reason = self.available()
        if not ok:
            return self._unavailable(reason)
        if self._running:
            raise RuntimeError(f"{self.name} meter is still measuring; call figures() after the region")
        if self._result is None:
            raise RuntimeError(f"{self.name} meter has not measured a region yet")
        return dict(self._result)

    def _unavailable(self, reason: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for fig in self.figure_names:
            out[fig] = None
            out[f"{fig}_reason"] = reason
        return out

    def _start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _stop(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _as_device(device: str | torch.device | None) -> torch.device | None:
    if device is None:
        return None
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a str or torch.device, not {type(device).__name__}")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None


def _param_list(params: Iterable[torch.Tensor] | None, who: str) -> list[torch.Tensor] | None:
    if params is None:
        return None
    if isinstance(params, torch.Tensor):
        params = [params]
    out = list(params)
    for i, p in enumerate(out):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{who}: params must be tensors (e.g. model.parameters()); item {i} is {type(p).__name__}")
    return out


def _storage_of(t: torch.Tensor) -> torch.UntypedStorage | None:
    """The untyped storage of a plain tensor, or None for tensors without one (sparse, meta, subclasses)."""
    if t.device.type == "meta" or t.is_sparse:
        return None
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


# ----------------------------------------------------------------------------------------------------------
# Live tensors (TorchDispatchMode)
# ----------------------------------------------------------------------------------------------------------
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
        self._params = _param_list(params, "LiveTensorMeter")
        self._device = _as_device(device)
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
        st = _storage_of(g)
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
                st = _storage_of(a)
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
                st = _storage_of(t)
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


# ----------------------------------------------------------------------------------------------------------
# Process peak RSS (Linux)
# ----------------------------------------------------------------------------------------------------------
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes."""
    with open(_STATUS, "rb") as f:
        for line in f:
            if line.startswith(field.encode() + b":"):
                parts = line.split()
                return int(parts[1]) * 1024
    raise KeyError(f"{field} not found in {_STATUS}")


def _reset_hwm() -> None:
    with open(_CLEAR_REFS, "w") as f:
        f.write("5")


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


class RSSMeter(Meter):
    """Process peak resident set size during the region (Linux).

    How: at the start, ``gc.collect()``, glibc's ``malloc_trim(0)`` (returns freed heap to the OS), then write
    ``5`` to ``/proc/self/clear_refs`` (resets the high-water mark ``VmHWM`` to the current RSS) and read
    ``VmRSS``. At the end, read ``VmHWM``. ``rss_peak_delta_bytes`` = VmHWM(end) - VmRSS(start).
    Coarse (page granularity, counts everything the process touches, including Python objects and the other
    meters' bookkeeping) but independent of the code measured. Best run each configuration in a fresh process.
    """

    name = "rss"
    figure_names = ("rss_peak_delta_bytes",)
    nest_order = 30

    def _check(self) -> tuple[bool, str]:
        if not sys.platform.startswith("linux"):
            return False, f"process peak RSS needs Linux /proc (platform is {sys.platform})"
        try:
            _status_bytes("VmHWM")
            _status_bytes("VmRSS")
        except (OSError, KeyError) as exc:
            return False, f"cannot read VmHWM/VmRSS from {_STATUS}: {exc}"
        try:
            _reset_hwm()
        except OSError as exc:
            return False, f"cannot reset the RSS high-water mark ({_CLEAR_REFS}: {exc})"
        return True, ""

    def _start(self) -> None:
        gc.collect()
        trim = _malloc_trim()
        if trim is not None:
            trim(0)
        _reset_hwm()
        self._rss_start = _status_bytes("VmRSS")

    def _stop(self) -> dict[str, Any]:
        return {"rss_peak_delta_bytes": _status_bytes("VmHWM") - self._rss_start}


# ----------------------------------------------------------------------------------------------------------
# Saved tensors (autograd hooks)
# ----------------------------------------------------------------------------------------------------------
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
        self._params = _param_list(params, "SavedTensorsMeter") or []
        self._exclude_tensors = _param_list(exclude, "SavedTensorsMeter") or []
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
            st = _storage_of(t)
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
        st = _storage_of(t)
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


# ----------------------------------------------------------------------------------------------------------
# CUDA caching allocator
# ----------------------------------------------------------------------------------------------------------
def _cuda_device(device: str | torch.device | None) -> torch.device:
    dev = _as_device(device)
    if dev is None:
        return torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda":
        raise ValueError(f"a CUDA meter needs a cuda device, got {str(dev)!r}")
    return torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)


class CudaAllocatorMeter(Meter):
    """Exact peaks of PyTorch's CUDA caching allocator during the region.

    How: synchronise, ``reset_peak_memory_stats``, record ``memory_allocated``/``memory_reserved`` before;
    at the end synchronise and read ``max_memory_allocated``/``max_memory_reserved``.
    ``cuda_peak_allocated_bytes`` = max allocated - allocated before (tensor bytes, rounded up to the
    allocator's 512-byte blocks); ``cuda_peak_reserved_bytes`` = max reserved - reserved before (what the
    allocator holds from the driver, cached blocks included; 0 when the cache already held enough).
    Note: it resets the device's global peak statistics.
    """

    name = "cuda_allocator"
    figure_names = ("cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes")
    nest_order = 20

    def __init__(self, device: str | torch.device | None = None):
        super().__init__()
        dev = _as_device(device)
        if dev is not None and dev.type != "cuda":
            raise ValueError(f"CudaAllocatorMeter needs a cuda device, got {str(dev)!r}")
        self._device_arg = dev

    def _check(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        dev = _cuda_device(self._device_arg)
        if dev.index >= torch.cuda.device_count():
            return False, f"{dev} does not exist ({torch.cuda.device_count()} CUDA devices visible)"
        return True, ""

    def _start(self) -> None:
        dev = self._dev = _cuda_device(self._device_arg)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        self._alloc0 = torch.cuda.memory_allocated(dev)
        self._reserved0 = torch.cuda.memory_reserved(dev)

    def _stop(self) -> dict[str, Any]:
        dev = self._dev
        torch.cuda.synchronize(dev)
        return {
            "cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated(dev) - self._alloc0,
            "cuda_peak_reserved_bytes": torch.cuda.max_memory_reserved(dev) - self._reserved0,
        }


# ----------------------------------------------------------------------------------------------------------
# NVML (sampled)
# ----------------------------------------------------------------------------------------------------------
def _import_pynvml():
    import pynvml  # from the nvidia-ml-py package

    return pynvml


def _nvml_handle(pynvml, index: int):
    """The NVML handle of CUDA device ``index`` (CUDA's numbering, which CUDA_VISIBLE_DEVICES renumbers).

    NVML numbers devices by PCI order and ignores CUDA_VISIBLE_DEVICES, so match by UUID (then PCI bus id)
    rather than by index.
    """
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        s = str(uuid)
        for cand in ((s,) if s.startswith(("GPU-", "MIG-")) else (f"GPU-{s}", s)):
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(cand)
            except pynvml.NVMLError:
                pass
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        pci = f"{getattr(props, 'pci_domain_id', 0):08X}:{bus:02X}:{getattr(props, 'pci_device_id', 0):02X}.0"
        try:
            return pynvml.nvmlDeviceGetHandleByPciBusId(pci)
        except pynvml.NVMLError:
            pass
    try:  # torch's own mapping (parses CUDA_VISIBLE_DEVICES, indices or UUIDs)
        return pynvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(index))
    except Exception:
        pass
    if "CUDA_VISIBLE_DEVICES" not in os.environ and pynvml.nvmlDeviceGetCount() == 1:
        return pynvml.nvmlDeviceGetHandleByIndex(0)
    raise LookupError(f"cannot match CUDA device {index} to an NVML device (by UUID, PCI bus id or index)")


class NvmlMeter(Meter):
    """Device and process GPU memory as NVML sees it, sampled by a background thread (~every 1 ms).

    How: before the region, one sample sets the baseline; a daemon thread then reads
    ``nvmlDeviceGetMemoryInfo(h, version=nvmlMemory_v2).used`` (device-wide, v2 excludes reserved memory) and
    this process's ``usedGpuMemory`` from ``nvmlDeviceGetComputeRunningProcesses`` (matched by ``os.getpid()``)
    until the region ends (after a synchronise and one last sample).
    ``nvml_peak_used_bytes`` / ``nvml_process_peak_used_bytes`` = highest sample - baseline (the baseline is
    itself a sample, so never negative); ``nvml_samples`` = number of samples. Includes the CUDA context, the
    allocator's cached memory and (device-wide) other processes; can miss spikes shorter than a sample. In a
    container the PIDs NVML reports are the host's, so the process figure may be unavailable.
    """

    name = "nvml"
    figure_names = ("nvml_peak_used_bytes", "nvml_process_peak_used_bytes", "nvml_samples")
    nest_order = 10

    def __init__(self, device: str | torch.device | None = None, interval_s: float = 0.001):
        super().__init__()
        dev = _as_device(device)
        if dev is not None and dev.type != "cuda":
            raise ValueError(f"NvmlMeter needs a cuda device, got {str(dev)!r}")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self._device_arg = dev
        self.interval_s = float(interval_s)
        self._thread: threading.Thread | None = None

    def _check(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        try:
            pynvml = _import_pynvml()
        except ImportError as exc:
            return False, f"pynvml is not installed (pip install nvidia-ml-py): {exc}"
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            return False, f"NVML unavailable: {exc}"
        try:
            _nvml_handle(pynvml, _cuda_device(self._device_arg).index)
        except (pynvml.NVMLError, LookupError) as exc:
            return False, f"NVML device lookup failed: {exc}"
        finally:
            pynvml.nvmlShutdown()
        return True, ""

    def _sample(self) -> None:
        pynvml, h = self._nvml, self._handle
        used = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2).used
        proc = None
        try:
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                if p.pid == self._pid and p.usedGpuMemory is not None:
                    proc = int(p.usedGpuMemory)
                    break
        except pynvml.NVMLError as exc:
            self._proc_error = f"nvmlDeviceGetComputeRunningProcesses failed: {exc}"
        self._n += 1
        self._max_used = max(self._max_used, int(used))
        if proc is not None:
            self._max_proc = proc if self._max_proc is None else max(self._max_proc, proc)

    def _loop(self) -> None:
        try:
            while not self._halt.is_set():
                self._sample()
                self._halt.wait(self.interval_s)
        except Exception as exc:  # reported as the figures' reason
            self._error = f"{type(exc).__name__}: {exc}"

    def _start(self) -> None:
        pynvml = self._nvml = _import_pynvml()
        pynvml.nvmlInit()
        try:
            self._dev = _cuda_device(self._device_arg)
            self._handle = _nvml_handle(pynvml, self._dev.index)
            self._pid = os.getpid()
            self._error: str | None = None
            self._proc_error: str | None = None
            self._n = 0
            self._max_used = 0
            self._max_proc: int | None = None
            torch.cuda.synchronize(self._dev)
            self._sample()  # the baseline
            self._base_used = self._max_used
            self._base_proc = self._max_proc
            self._halt = threading.Event()
            self._thread = threading.Thread(target=self._loop, name="revbench-nvml-sampler", daemon=True)
            self._thread.start()
        except BaseException:
            pynvml.nvmlShutdown()
            raise

    def _stop(self) -> dict[str, Any]:
        try:
            torch.cuda.synchronize(self._dev)
            self._halt.set()
            assert self._thread is not None
            self._thread.join()
            self._thread = None
            if self._error is None:
                self._sample()
        finally:
            self._nvml.nvmlShutdown()
        if self._error is not None:
            return self._unavailable(f"NVML sampling failed: {self._error}")
        out: dict[str, Any] = {
            "nvml_peak_used_bytes": self._max_used - self._base_used,
            "nvml_samples": self._n,
        }
        if self._max_proc is None:
            out["nvml_process_peak_used_bytes"] = None
            out["nvml_process_peak_used_bytes_reason"] = self._proc_error or (
                f"process {self._pid} is not among NVML's compute processes with a known usedGpuMemory "
                "(in a container NVML reports host PIDs)"
            )
        else:
            out["nvml_process_peak_used_bytes"] = self._max_proc - (self._base_proc or 0)
        return out


# ----------------------------------------------------------------------------------------------------------
# Running a region under several meters
# ----------------------------------------------------------------------------------------------------------
def _check_meters(meters: Iterable[Meter]) -> list[Meter]:
    ms = list(meters)
    for m in ms:
        if not isinstance(m, Meter):
            raise TypeError(f"not a meter: {m!r} (expected a revbench.measure.memory.Meter)")
    if len({id(m) for m in ms}) != len(ms):
        raise ValueError("the same meter object was given twice")
    seen: dict[str, str] = {}
    for m in ms:
        for fig in m.figure_names:
            if fig in seen:
                raise ValueError(f"figure {fig!r} is produced by both {seen[fig]} and {m.name}")
            seen[fig] = m.name
    # outermost first; a stable sort keeps the caller's order among equals
    return sorted(ms, key=lambda m: m.nest_order)


@contextlib.contextmanager
def measuring(meters: Iterable[Meter]) -> Iterator[dict[str, Any]]:
    """Context manager: run the body under ``meters`` (nested by ``nest_order``, the live-tensor meter
    innermost) and fill the yielded dict with all their figures when the body ends."""
    ordered = _check_meters(meters)
    for m in ordered:
        if m.available()[0]:
            m.prepare()
    result: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for m in ordered:
            m.start()
            stack.callback(m.stop)
        yield result
    for m in ordered:
        result.update(m.figures())


def measure(fn: Callable[[], Any], meters: Iterable[Meter]) -> dict[str, Any]:
    """Run ``fn()`` once under all ``meters`` and return their figures merged into one flat dict.

    Meters are nested by ``nest_order`` (NVML outermost, then the CUDA allocator, RSS, saved tensors and the
    live-tensor meter innermost), so the live-tensor meter sees only ``fn``'s ops. Unavailable meters give
    ``None`` figures with ``<figure>_reason``. If ``fn`` raises, every meter is stopped and the error propagates.
    """
    if not callable(fn):
        raise TypeError(f"measure() needs a callable, got {type(fn).__name__}")
    with measuring(meters) as figures:
        fn()
    return figures


def peak_figures(figures: dict[str, Any]) -> dict[str, Any]:
    """The record's headline ``peak_bytes`` and ``peak_bytes_meter`` from :func:`measure`'s figures: the CUDA
    allocator's exact ``cuda_peak_allocated_bytes`` where there is one, else the live-tensor meter's
    ``live_peak_bytes``; None with ``peak_bytes_reason`` when neither was measured."""
    for fig, meter in (("cuda_peak_allocated_bytes", "cuda_allocator"), ("live_peak_bytes", "live_tensors")):
        if figures.get(fig) is not None:
            return {"peak_bytes": figures[fig], "peak_bytes_meter": meter}
    reasons = [f"{fig}: {figures[f'{fig}_reason']}" for fig in ("cuda_peak_allocated_bytes", "live_peak_bytes")
               if figures.get(f"{fig}_reason")]
    return {
        "peak_bytes": None,
        "peak_bytes_meter": None,
        "peak_bytes_reason": "; ".join(reasons) or "neither the CUDA allocator nor the live-tensor meter was used",
    }


def default_meters(device: str | torch.device, params: Iterable[torch.Tensor] | None = None) -> list[Meter]:
    """The meters for a step on ``device``: on cuda NVML + CUDA allocator + saved tensors + live tensors
    (restricted to that device); on cpu RSS + saved tensors + live tensors (CPU storages)."""
    dev = _as_device(device)
    if dev is None:
        raise ValueError("default_meters needs a device ('cpu' or 'cuda[:N]')")
    plist = _param_list(params, "default_meters")
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
        return [NvmlMeter(dev), CudaAllocatorMeter(dev), SavedTensorsMeter(plist), LiveTensorMeter(plist, device=dev)]
    if dev.type == "cpu":
        return [RSSMeter(), SavedTensorsMeter(plist), LiveTensorMeter(plist, device=dev)]
    raise ValueError(f"unsupported device {str(dev)!r}: expected 'cpu' or 'cuda[:N]'")


# ----------------------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------------------
def _cpu_model_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    return platform.processor() or None


def _git_commit(cwd: str | None = None) -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = res.stdout.strip()
    return sha if res.returncode == 0 and sha else None


def environment_info(device: str | torch.device) -> dict[str, Any]:
    """Where a record was measured: ``torch_version``, ``python_version``, ``platform``, ``device_name``
    (CPU model name, or the GPU's name on cuda), ``cpu_count``, ``commit`` (``git rev-parse HEAD`` of the
    current directory's repository, None outside one) and ``hostname``."""
    dev = _as_device(device)
    if dev is None:
        raise ValueError("environment_info needs a device ('cpu' or 'cuda[:N]')")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} requested but no CUDA device is available")
        device_name: str | None = torch.cuda.get_device_name(dev)
    elif dev.type == "cpu":
        device_name = _cpu_model_name()
    else:
        raise ValueError(f"unsupported device {str(dev)!r}: expected 'cpu' or 'cuda[:N]'")
    return {
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "commit": _git_commit(),
        "hostname": socket.gethostname(),
    }
