"""The protocol every memory meter follows (:class:`Meter`) and the small helpers the meters share.

Every meter follows one small protocol: a ``name``, ``available() -> (bool, reason)``, ``start()``/``stop()``
(or ``with meter:``), and after the region ``figures() -> dict``. Figures are integers (bytes or counts). A
meter that cannot measure here reports each of its figures as ``None`` together with ``<figure>_reason`` (a
string saying why); it never reports 0 for "unavailable".

:class:`NotHere` stands in for a meter that cannot apply to a run at all (the CUDA meters on a CPU run), so its
figures are still written: None, with the reason.

Helpers: :func:`as_device` (a device argument), :func:`param_list` (a ``params`` argument) and
:func:`storage_of` (a tensor's untyped storage).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

__all__ = ["Meter", "NotHere", "as_device", "param_list", "storage_of"]


class Meter:
    """Base class of all meters: the uniform protocol.

    Subclasses set ``name``, ``figure_names`` and ``nest_order`` (meters with a lower order are entered first,
    i.e. sit further out, when :func:`~revbench.measure.memory.measure` nests them) and implement
    ``_check()``, ``_start()``, ``_stop()`` and ``_figures()``.
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
        lands inside another meter's region. :func:`~revbench.measure.memory.measuring` calls it on every meter
        before starting any."""

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


class NotHere(Meter):
    """A meter that does not apply here: every one of ``figure_names`` is None with ``reason`` (e.g. the CUDA
    allocator's and NVML's figures on a CPU run: "no CUDA device: this run is on cpu")."""

    def __init__(self, name: str, figure_names: Iterable[str], reason: str, nest_order: int = 50):
        super().__init__()
        if not reason:
            raise ValueError("NotHere needs a reason")
        self.name = name
        self.figure_names = tuple(figure_names)
        self.nest_order = nest_order
        self._reason = reason

    def _check(self) -> tuple[bool, str]:
        return False, self._reason


def as_device(device: str | torch.device | None) -> torch.device | None:
    """A meter's ``device`` argument as a ``torch.device`` (None stays None)."""
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


def param_list(params: Iterable[torch.Tensor] | None, who: str) -> list[torch.Tensor] | None:
    """A meter's ``params`` argument (a tensor or an iterable of tensors) as a list; None stays None."""
    if params is None:
        return None
    if isinstance(params, torch.Tensor):
        params = [params]
    out = list(params)
    for i, p in enumerate(out):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{who}: params must be tensors (e.g. model.parameters()); item {i} is {type(p).__name__}")
    return out


def storage_of(t: torch.Tensor) -> torch.UntypedStorage | None:
    """The untyped storage of a plain tensor, or None for tensors without one (sparse, meta, subclasses)."""
    if t.device.type == "meta" or t.is_sparse:
        return None
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None
