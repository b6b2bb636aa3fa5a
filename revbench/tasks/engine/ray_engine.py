"""The Ray engine: one Ray task per benchmark case, each a fresh pytest worker on whichever node Ray picks.

``connected(address, parallel)``: joins the cluster at ``address`` (or ``RAY_ADDRESS``; "auto" finds a local
one) or, with neither, starts an embedded Ray on this machine with ``parallel`` CPUs (default: all); a Ray this
process already initialised is used as it is and left running. Each task (``num_cpus=cpus``, ``num_gpus=gpus``)
runs ``python -m pytest SUITES ... --revbench-filter=CASE`` in a child that dies with the Ray worker, and returns
the events the plugin streamed; the driver applies them as the local engine does. A task whose Ray worker dies
(``RayError``) or whose pytest dies mid-case counts as a try of that case; Ray's own task retries are off, so
every case gets exactly the same one retry. Every node needs revbench installed and the suites at the same path
(a shared checkout), or a checkout of its own beside its revbench package.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from revbench.tasks.engine.cases import EngineError, Settings

INSTALL_HINT = 'the ray engine needs Ray: pip install "revbench[cluster]" (or pip install ray)'
WAIT_S = 0.5


def import_ray():
    try:
        import ray
    except ImportError:
        raise EngineError(INSTALL_HINT, bad_input=True) from None
    return ray


@contextlib.contextmanager
def connected(address: str | None = None, parallel: int | None = None, env: dict | None = None) -> Iterator:
    """Ray, initialised for the block (see the module's docstring)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                  runtime_env={"env_vars": dict(env or {})} if env else None)
    if address is None:
        kwargs["num_cpus"] = parallel or os.cpu_count()
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EngineError(f"cannot start or join Ray{f' at {address}' if address else ''}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                          bad_input=address is not None) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_case_task(settings: dict, case: str) -> dict:
    """On a Ray worker: one case in a fresh pytest child; the events it streamed, its exit status, its output's
    end."""
    from revbench.tasks.engine import child
    from revbench.tasks.engine.cases import checkout_root, read_events, worker_args, worker_env, write_cases
    from revbench.tasks.engine.local import log_tail

    s = Settings(**{**settings, "filter": case, "extra": tuple(settings.get("extra") or ())})
    suites = Path(s.suites)
    if not (suites / "conftest.py").exists():        # another node: the checkout beside its own revbench
        import revbench

        suites = Path(revbench.__file__).resolve().parents[1] / "suites"
    with tempfile.TemporaryDirectory(prefix="revbench-case-") as tmp:
        folder = Path(tmp)
        cases_file, events, log = write_cases(folder / "cases.json", [case]), folder / "events.jsonl", folder / "log"
        with open(log, "wb") as fh:
            proc = child.start("pytest", worker_args(s, cases_file, events, suites), cwd=checkout_root(suites),
                               env=worker_env(s), stdout=fh, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait()
        except BaseException:
            child.stop(proc)
            raise
        evs, _ = read_events(events)
        return {"case": case, "rc": rc, "events": evs, "log_tail": log_tail(log), "host": socket.gethostname()}


def apply_result(tracker, res: dict) -> None:
    """What a task returned, applied to the tracker as the local engine applies a worker's events."""
    case, rc = res["case"], res["rc"]
    ended = False
    for ev in res["events"]:
        if ev.get("event") == "start" and ev.get("case") == case:
            continue                                     # shown as running since it was submitted
        if ev.get("event") == "end" and ev.get("case") == case:
            ended = True
        tracker.event(ev)
    if ended:
        return
    if rc == 4:
        raise EngineError(f"pytest refused its arguments (exit status 4): check --pytest-args\n{res['log_tail']}",
                          bad_input=True)
    started = any(ev.get("event") == "start" for ev in res["events"])
    if rc in (0, 1, 5) and not started:
        tracker.not_run([case], "not run by pytest (deselected by --pytest-args?)")
        return
    why = f"signal {-rc}" if rc < 0 else f"status {rc}"
    where = "during the case" if started else "before the case started"
    tracker.lost(case, f"the worker on {res['host']} exited ({why}) {where}\n{res['log_tail']}")


def run_ray(tracker, settings: Settings, parallel: int | None = None, address: str | None = None,
            gpus_per_case: float = 0, cpus_per_case: float = 1) -> None:
    with connected(address, parallel) as ray:
        task = ray.remote(run_case_task).options(num_cpus=cpus_per_case, num_gpus=gpus_per_case or 0,
                                                 max_retries=0)
        limit = parallel or 10 ** 6
        inflight: dict = {}
        plain = {**settings.to_dict(), "engine": "ray", "extra": list(settings.extra)}
        plain.pop("env", None)
        try:
            while not tracker.finished():
                while tracker.pending and len(inflight) < limit:
                    case = tracker.take(1)[0]
                    inflight[task.remote(plain, case)] = case
                    tracker.progress.start(case)
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    case = inflight.pop(ref)
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayError as exc:        # the Ray worker died, or the task could not run
                        text = str(exc).strip().splitlines()
                        tracker.lost(case, f"the Ray task failed: {type(exc).__name__}: "
                                           f"{text[0] if text else ''}")
                        continue
                    apply_result(tracker, res)
        finally:
            for ref in inflight:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
