"""pytest plugin: ``@pytest.mark.limit_activation_memory("4 MiB")`` puts an absolute budget on a test's peak.

Registered through the ``pytest11`` entry point ``revbench`` (load it by hand with
``-p revbench.measure.pytest_plugin``). A marked test fails when its measured activation-memory peak
(``peak_bytes``) is above the limit; the message names the limit, the measured peak and by how much it is over.
Limits: ``"4 MiB"`` = 4 * 2**20, ``"4 MB"`` = 4 * 10**6, an int = bytes (see `revbench.measure.budget`); a
limit that cannot be read stops the run as a usage error (exit 4) naming the test.

Where the peak comes from (both are checked when both are there):

- ``benchmark.extra_info["peak_bytes"]``: a pytest-benchmark test that records a revbench record (revbench's
  own suites do) or sets the figure itself; None there (unavailable) fails with the recorded reason;
- the ``activation_memory`` fixture: ``activation_memory.measure(step, *args, params=..., device=...)`` runs
  ``step`` once under revbench's live-tensor meter (every tensor storage created in the call and alive at
  the same time; on a CUDA ``device`` the CUDA allocator's exact peak) and returns the figures; the budget
  applies to the highest ``peak_bytes`` of all its calls in the test.

A marked test that measures nothing fails with a message saying how to measure: it never passes silently.
The plugin imports torch only when the fixture measures, so loading it costs nothing in other suites.
"""
from __future__ import annotations

import pytest

from revbench.measure.budget import SizeError, format_size, parse_size

MARKER = "limit_activation_memory"
_LIMIT = pytest.StashKey[tuple]()   # (limit in bytes, the limit as written)


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(limit): fail the test when its activation-memory peak (peak_bytes, from benchmark.extra_info "
        "or the activation_memory fixture) exceeds limit: '4 MiB' (IEC), '4 MB' (SI) or an int of bytes (revbench)")


def _limit_of(item) -> tuple | None:
    mark = item.get_closest_marker(MARKER)
    if mark is None:
        return None
    args = list(mark.args) + ([mark.kwargs["limit"]] if "limit" in mark.kwargs else [])
    extra = sorted(set(mark.kwargs) - {"limit"})
    if len(args) != 1 or extra:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.{MARKER} takes one limit, e.g. {MARKER}('4 MiB'); got "
            f"args={mark.args!r} kwargs={mark.kwargs!r}")
    try:
        return parse_size(args[0]), args[0]
    except SizeError as exc:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARKER}: {exc}") from None


@pytest.hookimpl(trylast=True)   # after other plugins' hooks, which may add the marker themselves
def pytest_collection_modifyitems(session, config, items) -> None:
    for item in items:
        limit = _limit_of(item)
        if limit is not None:
            item.stash[_LIMIT] = limit


class ActivationMemory:
    """The ``activation_memory`` fixture: measure a callable's activation-memory peak with revbench's meters."""

    def __init__(self) -> None:
        self.measurements: list[dict] = []

    @property
    def peak_bytes(self) -> int | None:
        """The highest ``peak_bytes`` of the calls of :meth:`measure` so far (None before the first)."""
        peaks = [m["peak_bytes"] for m in self.measurements if m.get("peak_bytes") is not None]
        return max(peaks) if peaks else None

    def measure(self, fn, *args, params=None, device=None, **kwargs) -> dict:
        """Run ``fn(*args, **kwargs)`` once under the live-tensor meter (plus the CUDA allocator's meter on a
        CUDA ``device``) and return the figures: ``peak_bytes``, ``peak_bytes_meter``, ``live_peak_bytes``
        and, given the model's ``params``, its split into parameters, gradients and the rest."""
        from revbench.measure.live import LiveTensorMeter
        from revbench.measure.memory import measure, peak_figures
        from revbench.measure.meter import as_device

        if not callable(fn):
            raise TypeError(f"activation_memory.measure needs a callable, got {type(fn).__name__}")
        dev = as_device(device)
        meters = [LiveTensorMeter(params, device=dev)]
        if dev is not None and dev.type == "cuda":
            from revbench.measure.cuda import CudaAllocatorMeter

            meters.append(CudaAllocatorMeter(dev))
        figures = measure(lambda: fn(*args, **kwargs), meters)
        figures.update(peak_figures(figures))
        self.measurements.append(figures)
        return figures


@pytest.fixture
def activation_memory() -> ActivationMemory:
    """Measure a step's activation memory: ``activation_memory.measure(step)``; a
    ``@pytest.mark.limit_activation_memory`` budget on the test then applies to the measured peak."""
    return ActivationMemory()


def _measured(item) -> tuple[list[tuple[int, str]], list[str]]:
    """(peaks with where they came from, reasons a source had no figure)."""
    funcargs = getattr(item, "funcargs", {}) or {}
    peaks, unavailable = [], []
    bench = funcargs.get("benchmark")
    info = getattr(bench, "extra_info", None)
    if isinstance(info, dict) and "peak_bytes" in info:
        value = info["peak_bytes"]
        meter = info.get("peak_bytes_meter")
        where = "benchmark.extra_info['peak_bytes']" + (f" ({meter} meter)" if meter else "")
        if isinstance(value, int) and not isinstance(value, bool):
            peaks.append((value, where))
        else:
            reason = info.get("peak_bytes_reason") or f"the value is {value!r}, not a byte count"
            unavailable.append(f"{where} is unavailable: {reason}")
    meter = funcargs.get("activation_memory")
    if isinstance(meter, ActivationMemory):
        if meter.peak_bytes is not None:
            peaks.append((meter.peak_bytes, f"activation_memory.measure ({len(meter.measurements)} call"
                                            f"{'s' if len(meter.measurements) != 1 else ''}, highest peak)"))
        elif meter.measurements:
            reason = meter.measurements[-1].get("peak_bytes_reason", "no peak")
            unavailable.append(f"activation_memory.measure gave no peak: {reason}")
    return peaks, unavailable


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield          # a test that failed on its own keeps its own failure
    if _LIMIT not in item.stash:
        return result
    limit, written = item.stash[_LIMIT]
    shown = f"{MARKER}({written!r})"
    peaks, unavailable = _measured(item)
    if not peaks:
        why = "; ".join(unavailable) if unavailable else (
            "the test measured nothing: record benchmark.extra_info['peak_bytes'] (revbench's suites do) or "
            "measure the step with the activation_memory fixture: activation_memory.measure(step)")
        pytest.fail(f"{shown}: no activation-memory peak to check against {format_size(limit)}: {why}",
                    pytrace=False)
    peak, where = max(peaks)
    item.user_properties.append(("activation_peak_bytes", peak))
    item.user_properties.append(("activation_limit_bytes", limit))
    if peak > limit:
        over = peak - limit
        pct = f", +{100 * over / limit:.1f}%" if limit else ""
        pytest.fail(f"{shown}: peak_bytes {format_size(peak)} exceeds the limit {format_size(limit)} by "
                    f"{format_size(over)}{pct}; measured by {where}", pytrace=False)
    return result
