"""The local engine: pytest children on this machine, as `revbench run` always ran the suites.

``parallel`` workers at a time (default 1: one pytest process over every pending case, today's behaviour and
the fastest on one machine, since a worker measures each configuration's bptt and fused references once); each
worker gets an equal share of the queue. A worker that dies (killed, out of memory) loses only the case it was
in: that case is retried in a fresh worker, and the cases it had not reached go back to the queue.
Each worker's output goes to a log in a temporary folder; the end of it is shown when a worker fails to start.
"""
from __future__ import annotations

import math
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from revbench.tasks.engine import child
from revbench.tasks.engine.cases import (EngineError, Settings, checkout_root, read_events, worker_args, worker_env,
                                         write_cases)

POLL_S = 0.2


@dataclass
class _Worker:
    proc: subprocess.Popen
    events: Path
    log: Path
    cases: list[str]
    offset: int = 0
    current: str | None = None
    seen: set = field(default_factory=set)
    any_event: bool = False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _start(settings: Settings, cases: list[str], folder: Path, n: int) -> _Worker:
    cases_file = write_cases(folder / f"cases-{n}.json", cases)
    events, log = folder / f"events-{n}.jsonl", folder / f"worker-{n}.log"
    with open(log, "wb") as fh:
        proc = child.start("pytest", worker_args(settings, cases_file, events), cwd=checkout_root(settings.suites),
                           env=worker_env(settings), stdout=fh, stderr=subprocess.STDOUT)
    return _Worker(proc, events, log, cases)


def _drain(w: _Worker, tracker) -> None:
    events, w.offset = read_events(w.events, w.offset)
    for ev in events:
        w.any_event = True
        if ev.get("event") == "start":
            w.current = ev.get("case")
            w.seen.add(w.current)
        elif ev.get("event") == "end":
            w.current = None
        tracker.event(ev)


def _ended(w: _Worker, tracker, rc: int) -> None:
    """A worker exited: settle the cases it held."""
    _drain(w, tracker)
    if rc == 4:
        raise EngineError(f"pytest refused its arguments (exit status 4): check --pytest-args\n{log_tail(w.log)}",
                          bad_input=True)
    if w.current is not None:
        why = f"signal {-rc}" if rc < 0 else f"status {rc}"
        tracker.lost(w.current, f"the worker died during the case (exit {why})\n{log_tail(w.log)}")
    rest = [c for c in w.cases if c not in w.seen]
    if not rest:
        return
    if rc == 5 and not w.any_event:
        raise EngineError(f"pytest selected none of the {len(w.cases)} selected case"
                          f"{'s' if len(w.cases) != 1 else ''} (exit status 5): check --pytest-args")
    if rc in (0, 1, 5):                        # a normal end: pytest chose not to run them
        tracker.not_run(rest, "not run by pytest (deselected by --pytest-args?)")
    elif not w.any_event:
        raise EngineError(f"pytest exited with status {rc} before it ran a case; its output ends:\n{log_tail(w.log)}")
    else:                                      # died midway: the cases it had not reached go back to the queue
        tracker.unstarted(rest)


def run_local(tracker, settings: Settings, parallel: int = 1) -> None:
    parallel = max(1, parallel)
    running: list[_Worker] = []
    n = 0
    with tempfile.TemporaryDirectory(prefix="revbench-run-") as tmp:
        folder = Path(tmp)
        try:
            while not tracker.finished():
                free = parallel - len(running)
                while free > 0 and tracker.pending:
                    batch = tracker.take(math.ceil(len(tracker.pending) / free))
                    running.append(_start(settings, batch, folder, n))
                    n += 1
                    free -= 1
                time.sleep(POLL_S)
                still = []
                for w in running:
                    rc = w.proc.poll()
                    if rc is None:
                        _drain(w, tracker)
                        still.append(w)
                    else:
                        _ended(w, tracker, rc)
                running = still
                if not running and not tracker.pending and not tracker.finished():
                    raise EngineError("internal: cases assigned to no worker")
        finally:
            for w in running:
                child.stop(w.proc)
