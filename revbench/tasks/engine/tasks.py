"""Training runs of the reproductions through an engine: ``Pool.map(fn, jobs)``.

``Pool(engine="local")`` calls ``fn(*args)`` in this process, one job after the other (what the reproductions
always did); ``Pool(engine="ray", ...)`` runs each job as a Ray task (``num_gpus=gpus``, ``num_cpus=cpus``, at most
``parallel`` at a time), on an embedded Ray or the cluster at ``address`` / ``RAY_ADDRESS``. Either way a job
that raises is reported as failed and the others go on; a Ray task whose worker dies is tried once more. Jobs
write their checkpoints and results under the reproduction's ``--out`` (shared storage on a cluster), so a
rerun skips what finished, as before. Progress (done / running / failed, ETA) as for `revbench run`.

A reproduction's grid code takes the pool as an argument or, when its command line builds it elsewhere, from
``current()`` (set with ``using(pool)``).
"""
from __future__ import annotations

import contextlib
import contextvars
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator

from revbench.tasks.engine.progress import Progress

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("revbench_pool", default=None)


@dataclass
class JobResult:
    name: str
    ok: bool
    value: object = None          # fn's return value
    error: str | None = None      # one line (and, for a local job, the traceback after it)
    skipped: bool = False         # never started: the time budget was used up first


@dataclass
class Pool:
    engine: str = "local"
    parallel: int | None = None
    address: str | None = None
    gpus: float = 0.0
    cpus: float = 1.0
    quiet: bool = False

    @property
    def remote(self) -> bool:
        return self.engine == "ray"

    def map(self, fn: Callable, jobs: list[tuple[str, tuple]], what: str = "runs",
            budget_minutes: float | None = None) -> dict[str, JobResult]:
        """Run ``fn(*args)`` for every ``(name, args)`` of ``jobs``; the results by name. ``budget_minutes``: start
        no job once that many minutes have passed since the call (running ones finish); the others come back with
        ``skipped=True``."""
        progress = Progress(len(jobs), what=what, quiet=self.quiet)
        t0 = time.monotonic()

        def over_budget() -> bool:
            return budget_minutes is not None and (time.monotonic() - t0) / 60.0 >= budget_minutes

        try:
            if self.engine == "ray":
                return self._map_ray(fn, jobs, progress, over_budget)
            results = {}
            for name, args in jobs:
                if over_budget():
                    results[name] = _skipped(name)
                    continue
                progress.start(name)
                try:
                    results[name] = JobResult(name, True, fn(*args))
                except Exception as exc:           # one failed run must not stop the grid
                    results[name] = JobResult(name, False, error=f"{type(exc).__name__}: {exc}\n"
                                                                 f"{traceback.format_exc(limit=8)}")
                progress.finish(name, "done" if results[name].ok else "failed",
                                "" if results[name].ok else results[name].error.splitlines()[0])
            return results
        finally:
            progress.close()

    def _map_ray(self, fn, jobs, progress, over_budget) -> dict[str, JobResult]:
        from revbench.tasks.engine.ray_engine import WAIT_S, connected

        results: dict[str, JobResult] = {}
        with connected(self.address, self.parallel) as ray:
            task = ray.remote(fn).options(num_cpus=self.cpus, num_gpus=self.gpus or 0, max_retries=0)
            queue, tries, inflight = list(jobs), {}, {}
            limit = self.parallel or 10 ** 6
            while queue or inflight:
                if queue and over_budget():          # no new task; a retry of a started one is not new either
                    for name, _ in queue:
                        if name not in tries:
                            results[name] = _skipped(name)
                    queue = [(n, a) for n, a in queue if n in tries]
                while queue and len(inflight) < limit:
                    name, args = queue.pop(0)
                    inflight[task.remote(*args)] = (name, args)
                    progress.start(name)
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    name, args = inflight.pop(ref)
                    try:
                        results[name] = JobResult(name, True, ray.get(ref))
                    except ray.exceptions.RayTaskError as exc:           # the job raised: failed, not retried
                        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                        results[name] = JobResult(name, False, error=f"{type(cause).__name__}: {cause}")
                    except ray.exceptions.RayError as exc:               # its worker died: once more
                        tries[name] = tries.get(name, 0) + 1
                        if tries[name] <= 1:
                            queue.append((name, args))
                            progress.finish(name, "retry", type(exc).__name__)
                            continue
                        results[name] = JobResult(name, False, error=f"the Ray worker died twice: {type(exc).__name__}")
                    r = results[name]
                    progress.finish(name, "done" if r.ok else "failed", "" if r.ok else r.error.splitlines()[0])
        return results


def _skipped(name: str) -> JobResult:
    return JobResult(name, False, error="not started: the time budget was used", skipped=True)


def current() -> Pool | None:
    """The pool set by ``using`` (None: the grid runs as it always did)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(pool: Pool | None) -> Iterator[None]:
    token = _CURRENT.set(pool)
    try:
        yield
    finally:
        _CURRENT.reset(token)
