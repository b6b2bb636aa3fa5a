"""One run of benchmark cases through an engine, and what comes back: ``run_cases`` and ``Tracker``.

The engines (``local``: pytest children on this machine; ``ray_engine``: one Ray task per case) only start
workers and report what the plugin streams; the ``Tracker`` they report to keeps the rules every engine shares:
- a finished case goes into the partial store at once (``PartialStore.add``: atomic), so an interrupted run
  loses only the cases it was in, and the next run with the same settings skips those already finished;
- a case that fails, or whose worker dies in it, runs once more in a fresh worker (``retries``); after that it
  is failed, with its error, and the other cases go on;
- a case a worker never started (the worker died earlier) goes back to the queue without counting as a try.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from revbench.tasks.engine.cases import EngineError, Settings
from revbench.tasks.engine.partial import PartialStore
from revbench.tasks.engine.progress import Progress

RETRIES = 1


@dataclass
class Outcome:
    order: list[str]                                       # every selected case, in the grid's order
    entries: dict[str, dict] = field(default_factory=dict)  # case -> pytest-benchmark entry (this run or resumed)
    sessions: dict[str, dict] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)    # case -> error
    skipped: dict[str, str] = field(default_factory=dict)   # case -> reason
    unrecorded: list[str] = field(default_factory=list)     # passed, but pytest-benchmark recorded nothing
    resumed: int = 0


class Tracker:
    def __init__(self, ids: list[str], store: PartialStore, progress: Progress, retries: int = RETRIES):
        self.store, self.progress, self.retries = store, progress, retries
        self.outcome = Outcome(order=list(ids), resumed=sum(1 for c in ids if c in store.cases))
        self.pending = deque(c for c in ids if c not in store.cases)
        self.assigned: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.sessions: dict[str, dict] = {}                 # worker -> its session event

    def finished(self) -> bool:
        return not self.pending and not self.assigned

    def take(self, n: int | None = None) -> list[str]:
        n = len(self.pending) if n is None else n
        got = [self.pending.popleft() for _ in range(min(n, len(self.pending)))]
        self.assigned.update(got)
        return got

    # --- what the engines report -----------------------------------------------------------------------
    def event(self, ev: dict) -> None:
        """One event streamed by the plugin (see ``revbench.tasks.engine.plugin``)."""
        kind = ev.get("event")
        if kind == "session":
            self.sessions[str(ev.get("worker"))] = ev
        elif kind == "start" and ev.get("case") in self.assigned:
            self.progress.start(ev["case"])
        elif kind == "end" and ev.get("case") in self.assigned:
            self.ended(ev["case"], ev.get("outcome"), ev.get("benchmark"), ev.get("error"))

    def ended(self, case: str, outcome: str, entry: dict | None, error: str | None) -> None:
        if outcome == "passed" and entry:
            worker = (entry.get("extra_info") or {}).get("worker")
            self.store.add(case, entry, self.sessions.get(str(worker)))
            self._close(case, "done")
        elif outcome == "passed":
            self.outcome.unrecorded.append(case)
            self._close(case, "skipped", "ran, but pytest-benchmark recorded nothing")
        elif outcome == "skipped":
            self.outcome.skipped[case] = error or "skipped"
            self._close(case, "skipped", error or "")
        else:
            self.lost(case, error or "failed")

    def lost(self, case: str, error: str) -> None:
        """The case failed, or its worker died in it: once more in a fresh worker, then failed."""
        if case not in self.assigned:
            return
        self.attempts[case] = self.attempts.get(case, 0) + 1
        first = error.strip().splitlines()[0] if error.strip() else "failed"
        if self.attempts[case] <= self.retries:
            self.assigned.discard(case)
            self.pending.append(case)
            self.progress.finish(case, "retry", first)
        else:
            self.outcome.failed[case] = error
            self._close(case, "failed", first)

    def unstarted(self, cases) -> None:
        """Cases a worker was given but never started (it died before): back to the queue, no try counted."""
        back = [c for c in cases if c in self.assigned]
        self.assigned.difference_update(back)
        self.pending.extendleft(reversed(back))         # at the front, in their order

    def not_run(self, cases, reason: str) -> None:
        """Cases a worker that ended normally never ran (deselected by pytest arguments, say)."""
        for c in cases:
            if c in self.assigned:
                self.outcome.skipped[c] = reason
                self._close(c, "skipped", reason)

    def _close(self, case: str, status: str, note: str = "") -> None:
        self.assigned.discard(case)
        self.progress.finish(case, status, note)

    def result(self) -> Outcome:
        out = self.outcome
        out.entries = {c: self.store.cases[c] for c in out.order if c in self.store.cases}
        out.sessions = dict(self.store.sessions)
        return out


def run_cases(settings: Settings, ids: list[str], store: PartialStore, engine: str = "local",
              parallel: int | None = None, progress: Progress | None = None, say: Callable[[str], None] = print,
              **engine_options) -> Outcome:
    """Run the cases ``ids`` not in ``store`` yet through ``engine`` ("local" or "ray"); every result, resumed
    ones included. KeyboardInterrupt stops every worker and goes on (the store keeps what finished)."""
    progress = progress or Progress(len(ids), already=sum(1 for c in ids if c in store.cases), quiet=True)
    tracker = Tracker(ids, store, progress)
    if engine == "local":
        from revbench.tasks.engine.local import run_local

        run_local(tracker, settings, parallel=parallel or 1)
    elif engine == "ray":
        from revbench.tasks.engine.ray_engine import run_ray

        run_ray(tracker, settings, parallel=parallel, **engine_options)
    else:
        raise EngineError(f"unknown engine {engine!r} (choose local or ray)", bad_input=True)
    return tracker.result()


def build_document(outcome: Outcome) -> dict:
    """The run's pytest-benchmark document: every case's entry in the grid's order, under the machine and commit
    of the first worker (each record names its own host and worker)."""
    import datetime

    import pytest_benchmark

    entries = [outcome.entries[c] for c in outcome.order if c in outcome.entries]
    first = (entries[0].get("extra_info") or {}).get("worker") if entries else None
    session = outcome.sessions.get(str(first)) or next(iter(outcome.sessions.values()), {})
    return {"machine_info": session.get("machine_info"), "commit_info": session.get("commit_info"),
            "benchmarks": entries, "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "version": pytest_benchmark.__version__}
