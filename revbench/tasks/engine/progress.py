"""Progress of a set of units of work (benchmark cases, training runs): done / running / failed and an ETA.

On a terminal it is a tqdm bar on stderr; elsewhere (a log, a pipe, the tests) one plain line per finished unit
on stdout. The ETA is tqdm's: the units still to do times the mean time of those finished in this session
(units already finished by an earlier session count as done but not in the rate). ``quiet``: nothing at all.
"""
from __future__ import annotations

import sys
import time


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(self, total: int, what: str = "cases", already: int = 0, quiet: bool = False,
                 bar: bool | None = None):
        self.total, self.what, self.quiet = total, what, quiet
        self.already = already
        self.done = already
        self.failed = self.skipped = 0
        self.running: set[str] = set()
        self.t0 = time.monotonic()
        self.finished_here = 0
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = None
        if use_bar and not quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=already, unit=what.rstrip("s") or what, dynamic_ncols=True,
                             file=sys.stderr, smoothing=0)
            self._bar.set_postfix_str(self._postfix())

    def eta(self) -> float | None:
        """Seconds left: the units still to do at the mean time per unit finished in this session."""
        if self.finished_here == 0:
            return None
        per = (time.monotonic() - self.t0) / self.finished_here
        return per * max(0, self.total - self.done - self.failed - self.skipped)

    def _postfix(self) -> str:
        return f"running {len(self.running)}, failed {self.failed}" + (f", skipped {self.skipped}"
                                                                        if self.skipped else "")

    def line(self) -> str:
        return (f"[{self.done + self.failed + self.skipped}/{self.total}] done {self.done}, {self._postfix()}, "
                f"ETA {eta_text(self.eta())}")

    def say(self, text: str) -> None:
        """A message that does not break the bar."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, flush=True)

    def start(self, unit: str) -> None:
        self.running.add(unit)
        self._refresh()

    def finish(self, unit: str, status: str = "done", note: str = "") -> None:
        """``status``: done, failed, skipped, or retry (the unit goes back to the queue)."""
        self.running.discard(unit)
        if status == "retry":
            self._refresh()
            self.say(f"  retry {unit}{': ' + note if note else ''}")
            return
        if status == "done":
            self.done += 1
        elif status == "failed":
            self.failed += 1
        else:
            self.skipped += 1
        self.finished_here += 1
        if self._bar is not None:
            self._bar.update(1)
            self._refresh()
            if status == "failed":
                self.say(f"  FAILED {unit}{': ' + note if note else ''}")
        elif not self.quiet:
            print(f"{self.line()}  {status} {unit}{' (' + note + ')' if note else ''}", flush=True)

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
