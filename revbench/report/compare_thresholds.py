"""Which figures `revbench compare` checks, which of them it gates by default, and how thresholds are written.

Compared figures: every ``*_bytes`` figure, the buffer bits (``buffer_bits_actual``, ``buffer_bits_ideal``,
``buffer_bits_reference`` and their ``enc_``/``dec_`` forms) and ``time_median_s``.

Exact figures (the live-tensor meter, the CUDA allocator, the PyTorch profiler's memory view, saved tensors,
the buffer bits) are deterministic for a configuration on a machine and are gated at ``memory_threshold``
(1 % by default). **Sampled meters are reported, not gated**, unless a threshold is asked for with
``--threshold FIGURE=...``:

- ``rss_peak_delta_bytes``: the kernel's resident set size, sampled per process (page granularity, other
  threads, allocator caching: 25-500 % off the tensor bytes, see MEASURING.md);
- ``nvml_peak_used_bytes``, ``nvml_process_peak_used_bytes``: device memory sampled by a background thread;
- ``heap_peak_bytes``: glibc's in-use heap above the step's start (revbench.measure.heap). Exact per reading,
  but it sums every thread's allocations and malloc's per-thread caches: repeated identical steps agree only to
  about 1 % on a small reversible step, which is the memory gate itself. Treated as sampled.

An ungated figure still has a tolerance (its sampled-meter default, or the memory threshold): changes within it
read "within"; beyond it, "warn" (shown with ``-v``), never a failure.

Thresholds are written as a percentage (``5%``), a fraction (``0.05``) or ``off``; a bare number above 1 is
refused as ambiguous (``5`` would mean +500 %; write ``5%`` or ``500%``).
"""
from __future__ import annotations

import math
import re

TIME_FIGURE = "time_median_s"
_BUFFER_BITS_RE = re.compile(r"^(enc_|dec_)?buffer_bits_(actual|ideal|reference)$")
BUFFER_BITS = tuple(f"{side}buffer_bits_{kind}" for side in ("", "enc_", "dec_")
                    for kind in ("actual", "ideal", "reference"))

# Sampled or process-level meters: reported, not gated by default. The value is the tolerance that separates
# "within" from "warn" when the figure is not gated.
SAMPLED_FIGURES = {
    "rss_peak_delta_bytes": 0.25,
    "nvml_peak_used_bytes": 0.10,
    "nvml_process_peak_used_bytes": 0.10,
    "heap_peak_bytes": 0.10,
}
DEFAULT_MEMORY_THRESHOLD = 0.01
DEFAULT_TIME_THRESHOLD = 0.25
OFF_WORDS = ("off", "none")

# statuses of a compared row (see revbench.report.compare); REGRESSED and, without allow_missing, MISSING fail
REGRESSED, MISSING = "regressed", "missing"
WARN, IMPROVED, WITHIN, UNCHANGED, SKIPPED, ADDED = "warn", "improved", "within", "unchanged", "skipped", "added"
NEW_FIGURE, DROPPED_FIGURE = "new figure", "dropped figure"
STATUS_ORDER = (MISSING, REGRESSED, WARN, IMPROVED, WITHIN, ADDED, NEW_FIGURE, DROPPED_FIGURE, UNCHANGED,
                SKIPPED)


class ThresholdError(ValueError):
    """A threshold or a figure name that cannot be used (a usage error: exit 2 in the CLI)."""


def is_comparable_figure(name: str) -> bool:
    """True for the figures compare() checks: *_bytes, the buffer bits and time_median_s."""
    return name == TIME_FIGURE or bool(_BUFFER_BITS_RE.match(name)) or name.endswith("_bytes")


def is_sampled(name: str) -> bool:
    """True for the sampled meters that are reported, not gated, by default."""
    return name in SAMPLED_FIGURES


def parse_fraction(text: str) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05, '150%' -> 1.5. Raises ThresholdError (one line) for anything else."""
    raw = str(text).strip()
    pct = raw.endswith("%")
    number = raw[:-1].strip() if pct else raw
    try:
        value = float(number)
    except ValueError:
        raise ThresholdError(f"{raw!r} is not a threshold: give a percentage (5%), a fraction (0.05) "
                             "or off") from None
    if not math.isfinite(value) or value < 0:
        raise ThresholdError(f"{raw!r} is not a threshold: it must be a finite growth >= 0 (5%, 0.05 or off)")
    if pct:
        return value / 100.0
    if value > 1:
        raise ThresholdError(f"{raw!r} is ambiguous: as a fraction it means +{100 * value:g}%; "
                             f"write {value:g}% or {100 * value:g}% (or a fraction <= 1 such as 0.05)")
    return value


def parse_threshold(text: str) -> float | None:
    """parse_fraction, plus 'off'/'none' -> None (report, do not gate)."""
    if str(text).strip().lower() in OFF_WORDS:
        return None
    return parse_fraction(text)


def parse_figure_threshold(text: str) -> tuple[str, float | None]:
    """'peak_bytes=5%' -> ('peak_bytes', 0.05); 'rss_peak_delta_bytes=off' -> (..., None)."""
    figure, sep, value = str(text).partition("=")
    figure = figure.strip()
    if not sep or not figure or not value.strip():
        raise ThresholdError(f"{text!r}: expected FIGURE=THRESHOLD, e.g. peak_bytes=5%, peak_bytes=0.05 "
                             "or rss_peak_delta_bytes=off")
    check_figure(figure)
    try:
        return figure, parse_threshold(value)
    except ThresholdError as exc:
        raise ThresholdError(f"{figure}: {exc}") from None


def check_figure(figure: str) -> None:
    if not is_comparable_figure(figure):
        raise ThresholdError(f"{figure!r} is not a compared figure (time_median_s, the buffer bits "
                             "buffer_bits_actual/ideal/reference, or a figure ending in _bytes)")


def format_threshold(value: float | None) -> str:
    return "off" if value is None else f"+{100 * value:g}%"


def resolve(figures, memory_threshold: float | None = DEFAULT_MEMORY_THRESHOLD,
            time_threshold: float | None = DEFAULT_TIME_THRESHOLD, per_figure: dict | None = None,
            gate_time: bool = True) -> dict[str, tuple[float, bool]]:
    """figure -> (tolerance, gated) for every figure in ``figures``.

    ``memory_threshold``/``time_threshold`` None = off (reported, not gated, at the default tolerance);
    ``per_figure[f]`` a fraction gates ``f`` at it (sampled meters included), None reports it only.
    """
    for label, value in (("memory_threshold", memory_threshold), ("time_threshold", time_threshold)):
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value) or value < 0):
            raise ThresholdError(f"{label} must be a finite fraction >= 0 (e.g. 0.01 for 1%) or None, "
                                 f"got {value!r}")
    per_figure = dict(per_figure or {})
    for fig, thr in per_figure.items():
        check_figure(fig)
        if thr is not None and (not isinstance(thr, (int, float)) or isinstance(thr, bool)
                                or not math.isfinite(thr) or thr < 0):
            raise ThresholdError(f"threshold for {fig!r} must be a fraction >= 0 or None, got {thr!r}")
    out = {}
    for fig in figures:
        if fig == TIME_FIGURE:
            default, gated = (DEFAULT_TIME_THRESHOLD if time_threshold is None else time_threshold,
                              time_threshold is not None and gate_time)
        elif fig in SAMPLED_FIGURES:
            default, gated = SAMPLED_FIGURES[fig], False
        else:
            default, gated = (DEFAULT_MEMORY_THRESHOLD if memory_threshold is None else memory_threshold,
                              memory_threshold is not None)
        if fig in per_figure:
            thr = per_figure[fig]
            default, gated = (default, False) if thr is None else (thr, fig != TIME_FIGURE or gate_time)
        out[fig] = (float(default), bool(gated))
    return out
