"""When the check stops starting cases: a wall-clock budget, a reserve for writing the results, and estimates.

A case starts only when its estimated duration fits in what is left of the budget after the reserve. Each case
carries a prior estimate (seconds on one GPU, deliberately generous); once cases have run, priors are scaled by the
median of (actual / prior) of the finished ones (clamped to [0.25, 10]), so a slower or faster machine adapts
the estimates. A case already running is never interrupted: the estimate is what keeps the check in its budget.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

SCALE_LIMITS = (0.25, 10.0)


@dataclass
class Budget:
    """``total_s`` seconds from ``start`` (the clock's reading when the budget was made), ``reserve_s`` of them kept
    for writing the results. ``clock``: seconds, monotonic (injectable for tests)."""
    total_s: float
    reserve_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    start: float | None = None
    ratios: list = field(default_factory=list)

    def __post_init__(self):
        if not self.total_s > 0:
            raise ValueError(f"the budget must be positive, got {self.total_s!r} s")
        if self.start is None:
            self.start = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left for cases (the reserve excluded)."""
        return self.total_s - self.reserve_s - self.elapsed()

    def scale(self) -> float:
        """How much longer than their priors the finished cases took (median; 1 before any has run)."""
        if not self.ratios:
            return 1.0
        lo, hi = SCALE_LIMITS
        return min(hi, max(lo, statistics.median(self.ratios)))

    def estimate(self, prior_s: float) -> float:
        return prior_s * self.scale()

    def refusal(self, prior_s: float) -> str | None:
        """None when a case with this prior may start now, else the reason it may not."""
        need, left = self.estimate(prior_s), self.left()
        if need <= left:
            return None
        return (f"budget: {max(left, 0.0):.0f} s left of {self.total_s:.0f} s (after {self.reserve_s:.0f} s kept "
                f"for writing the results), the case needs about {need:.0f} s")

    def finished(self, prior_s: float, actual_s: float) -> None:
        """Record a finished case's duration (updates the scale of later estimates)."""
        if prior_s > 0 and actual_s >= 0:
            self.ratios.append(actual_s / prior_s)
