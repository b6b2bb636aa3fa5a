"""torch's own meter (:class:`ProfilerMeter`): the PyTorch profiler's memory view of the step.

``profiler_peak_bytes``: the peak of the bytes the profiler saw allocated in the step and not yet freed, above
the step's start, the same baseline convention as ``peak_bytes`` (``revbench.measure.live``): only allocations
made in the step count, and a storage that existed before the step is never counted, even when freed inside it.
It comes from the profiler's allocation events (``profile_memory=True``: every allocation and free torch's
allocators report, with address, size and time), not from our dispatch-mode bookkeeping, so it is an
independent check of ``peak_bytes``: on the default grid they agree to within a few hundred bytes (the
profiler also sees scratch buffers a kernel allocates and frees inside one op, which no op-boundary meter can).

The category split at the peak, ``profiler_activation_bytes``, ``profiler_gradient_bytes``,
``profiler_parameter_bytes``, ``profiler_temporary_bytes`` and ``profiler_other_bytes``, is torch's own
classification: ``torch.profiler.profile(profile_memory=True, record_shapes=True, with_stack=True)``, then
``prof._memory_profile()`` (``torch.profiler._memory_profiler.MemoryProfile``: the op tree, its data-flow graph
and ``Category``), walked over its timeline with the same baseline convention; "other" is torch's INPUT,
AUTOGRAD_DETAIL and OPTIMIZER_STATE plus allocations it could not tie to a tensor. The five add up to the
timeline's peak, which equals ``profiler_peak_bytes`` (tested). torch infers categories for a plain
``module(x); loss.backward()`` loop; on this project's steps (forward and backward inside one ``method.step``)
it labels most bytes input, autograd detail or nothing (a 1-layer LSTM bptt step at T = 8: 256,000 bytes
autograd detail, 1,548,412 untagged, no activation), so read the split as torch's view, not as ours. The
analysis is pure Python over every op and costs about 0.3-0.8 ms per op (6-20 s for a T = 35 step of 18,000
ops on a loaded 2-core machine), so it runs only with ``split=True``; without it the peak is read with the
profiler recording user scopes only (no op events, just the allocation events: about 2x the plain step) and
the five categories are None with the reason.

One step, run on its own: the profiler's event buffers live on the same heap and in the same resident set as
the step, so it never shares a step with the RSS or heap meters (``revbench.measure.memory.measure_apart`` runs
it in a second, identical step after the metered one; after warm-up a step is deterministic, and repeated
steps give byte-identical live-tensor and profiler figures, as the tests check). When the profiler cannot run
(another profiler is active, a torch without these APIs) every figure is None with the reason.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch

from revbench.measure.meter import Meter, as_device

__all__ = ["ProfilerMeter", "PROFILER_FIGURES", "CATEGORY_FIGURES", "SPLIT_COST_REASON"]

CATEGORY_FIGURES = ("profiler_activation_bytes", "profiler_gradient_bytes", "profiler_parameter_bytes",
                    "profiler_temporary_bytes", "profiler_other_bytes")
PROFILER_FIGURES = ("profiler_peak_bytes",) + CATEGORY_FIGURES
SPLIT_COST_REASON = ("category split not computed ({why}): torch's MemoryProfile analysis costs about 0.5 ms per "
                     "op; ProfilerMeter(split=True) or the suites' --revbench-profiler split computes it")
_CATEGORY_FIGURE = {"ACTIVATION": "profiler_activation_bytes", "GRADIENT": "profiler_gradient_bytes",
                    "PARAMETER": "profiler_parameter_bytes", "TEMPORARY": "profiler_temporary_bytes"}


def _profiler_active() -> bool:
    try:
        return bool(torch._C._autograd._profiler_enabled())
    except AttributeError:
        from torch.autograd import profiler as _ap
        return bool(getattr(_ap, "_is_profiler_enabled", False))


def _same_device(dev: torch.device, want: torch.device) -> bool:
    if dev.type != want.type:
        return False
    return want.type == "cpu" or want.index is None or dev.index == want.index


def allocation_events(result, device: torch.device) -> list[tuple[int, int, int]]:
    """(time_ns, ptr, size) of every allocation (size > 0) and free (size < 0) on ``device`` in a profiler
    result, in time order (ties in the event tree's order)."""
    from torch._C._profiler import _EventType

    found = []
    order = itertools.count()
    stack = list(reversed(result.experimental_event_tree()))
    while stack:
        e = stack.pop()
        if e.typed[0] == _EventType.Allocation:
            f = e.typed[1]
            if _same_device(f.device, device):
                found.append((e.start_time_ns, next(order), f.ptr, f.alloc_size))
        stack.extend(reversed(e.children))
    found.sort()
    return [(t, ptr, size) for t, _, ptr, size in found]


def peak_above_start(events) -> int:
    """The peak of bytes allocated in the region and alive (frees of older allocations are not counted)."""
    live: dict[int, int] = {}
    current = peak = 0
    for _, ptr, size in events:
        if size > 0:
            live[ptr] = size
            current += size
            if current > peak:
                peak = current
        elif ptr in live:
            current -= live.pop(ptr)
    return peak


def category_split(memory_profile, device: torch.device) -> tuple[int, dict[str, int]]:
    """(peak, bytes per category figure at that peak) over a ``MemoryProfile``'s timeline on ``device``:
    tensors that existed before the region (PREEXISTING) are left out, as ``peak_bytes`` leaves them out."""
    from torch.profiler._memory_profiler import Action, TensorKey

    cats = memory_profile._categories
    before: set = set()
    by_fig = dict.fromkeys(CATEGORY_FIGURES, 0)
    current = peak = 0
    at_peak = dict(by_fig)

    def fig_of(key, version) -> str:
        cat = cats.get(key, version) if isinstance(key, TensorKey) else None
        return _CATEGORY_FIGURE.get(getattr(cat, "name", ""), "profiler_other_bytes")

    for _, action, (key, version), nbytes in memory_profile.timeline:
        if not _same_device(key.device, device):
            continue
        tensor = isinstance(key, TensorKey)
        if action == Action.PREEXISTING:
            if tensor:
                before.add(key)
            continue                      # an untracked allocation freed in the region: its free is skipped below
        if tensor and key in before:
            continue
        if action == Action.CREATE:
            by_fig[fig_of(key, version)] += nbytes
            current += nbytes
        elif action == Action.DESTROY:
            if not tensor and nbytes < 0:
                continue                  # cannot happen for frees torch matched; guard the sign convention
            by_fig[fig_of(key, version)] -= nbytes
            current -= nbytes
        elif action == Action.INCREMENT_VERSION:
            by_fig[fig_of(key, version)] -= nbytes
            by_fig[fig_of(key, version + 1)] += nbytes
        if current > peak:
            peak, at_peak = current, dict(by_fig)
    return peak, at_peak


class ProfilerMeter(Meter):
    """The PyTorch profiler's memory view: ``profiler_peak_bytes`` and, with ``split=True``, torch's category
    split at the peak (see the module docstring). ``device``: whose allocations count (default cpu)."""

    name = "torch_profiler"
    figure_names = PROFILER_FIGURES
    nest_order = 40

    def __init__(self, device: str | torch.device = "cpu", split: bool = False):
        super().__init__()
        dev = as_device(device)
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise ValueError(f"ProfilerMeter needs a cpu or cuda device, got {device!r}")
        if not isinstance(split, bool):
            raise TypeError(f"split must be True or False, got {split!r}")
        self._device = dev
        self.split = split
        self.allocations = 0     # allocation and free events of the last region on the device
        self._prof: Any = None
        self._blocked = ""

    def _check(self) -> tuple[bool, str]:
        try:
            from torch._C._profiler import _EventType  # noqa: F401
            from torch.autograd import _disable_profiler, _enable_profiler, _prepare_profiler  # noqa: F401
            if self.split:
                from torch.profiler._memory_profiler import Action, Category, MemoryProfile  # noqa: F401
        except ImportError as exc:
            return False, f"this torch ({torch.__version__}) lacks the profiler API the meter reads: {exc}"
        if self._device.type == "cuda" and not torch.cuda.is_available():
            return False, "no CUDA device"
        return True, ""

    def _activities(self):
        from torch.profiler import ProfilerActivity

        acts = [ProfilerActivity.CPU]
        if self._device.type == "cuda":
            acts.append(ProfilerActivity.CUDA)
        return acts

    def _start(self) -> None:
        self._blocked = "another torch profiler is already running" if _profiler_active() else ""
        self._prof = None
        if self._blocked:
            return
        if self.split:
            self._prof = torch.profiler.profile(activities=self._activities(), profile_memory=True,
                                                record_shapes=True, with_stack=True)
            self._prof.__enter__()
            return
        from torch._C._profiler import (ProfilerConfig, ProfilerState, RecordScope,  # noqa: F401
                                        _ExperimentalConfig)
        from torch.autograd import _enable_profiler, _prepare_profiler

        try:
            config = ProfilerConfig(ProfilerState.KINETO, False, True, False, False, False, _ExperimentalConfig())
            acts = set(self._activities())
            _prepare_profiler(config, acts)
            # user scopes only: no op events, only the allocator's memory events (what the peak needs)
            _enable_profiler(config, acts, {RecordScope.USER_SCOPE})
        except (RuntimeError, TypeError) as exc:
            self._blocked = f"the profiler could not start: {str(exc).splitlines()[0][:200]}"
            return
        self._prof = "low-level"

    def _stop(self) -> dict[str, Any]:
        if self._blocked:
            return self._unavailable(self._blocked)
        if self.split:
            prof, self._prof = self._prof, None
            prof.__exit__(None, None, None)
            result = prof.profiler.kineto_results
        else:
            from torch.autograd import _disable_profiler

            self._prof = None
            result = _disable_profiler()
        events = allocation_events(result, self._device)
        self.allocations = len(events)
        out: dict[str, Any] = {"profiler_peak_bytes": peak_above_start(events)}
        if self.split:
            _, at_peak = category_split(prof._memory_profile(), self._device)
            out.update(at_peak)
        else:
            for fig in CATEGORY_FIGURES:
                out[fig] = None
                out[f"{fig}_reason"] = SPLIT_COST_REASON.format(why="the peak only was asked for")
        return out
