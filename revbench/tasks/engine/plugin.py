"""The pytest plugin an engine loads into each worker (``-p revbench.tasks.engine.plugin``).

It changes nothing in how the suites measure. It
- keeps only the cases named in ``--revbench-cases FILE`` (a JSON list of case ids, matched exactly against the
  parametrised id, so one id never selects another that contains it);
- pins torch's threads (``--revbench-worker-threads N``: ``torch.set_num_threads``) for the session;
- streams one JSON line per event to ``--revbench-events FILE`` (flushed at once, so the engine sees each case
  the moment it ends, and a worker that dies loses only the case it was in):
  ``{"event": "session", "machine_info", "commit_info"}`` once (pytest-benchmark's own, as in its JSON),
  ``{"event": "start", "case"}``, and ``{"event": "end", "case", "outcome": passed|failed|skipped, "seconds",
  "error", "benchmark"}`` where ``benchmark`` is pytest-benchmark's entry for the case exactly as its
  ``--benchmark-json`` writes it (``as_dict(include_data=True)``), with where it ran added to its record:
  ``engine``, ``worker`` (host:pid) and ``torch_num_threads`` (when the suite did not write it).
"""
from __future__ import annotations

import json
import os
import socket
import time

import pytest


def pytest_addoption(parser):
    g = parser.getgroup("revbench engine")
    g.addoption("--revbench-cases", default=None, help="JSON file with the case ids to run (exact match)")
    g.addoption("--revbench-events", default=None, help="JSON-lines file the engine reads the results from")
    g.addoption("--revbench-worker-threads", type=int, default=None, help="torch.set_num_threads for the session")
    g.addoption("--revbench-engine-name", default="local", help="the engine, written into every record")


def case_id(item) -> str | None:
    spec = getattr(item, "callspec", None)
    return spec.id if spec is not None else None


class _Stream:
    def __init__(self, config):
        self.config = config
        self.path = config.getoption("--revbench-events")
        self.engine = config.getoption("--revbench-engine-name")
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.sent_session = False
        self.outcome: dict[str, dict] = {}
        self.started: dict[str, float] = {}
        self.seen = 0

    def emit(self, event: dict) -> None:
        if not self.path:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def session(self) -> None:
        if self.sent_session:
            return
        self.sent_session = True
        bs = getattr(self.config, "_benchmarksession", None)
        machine = commit = None
        if bs is not None:
            machine = bs.get_machine_info()
            commit = self.config.hook.pytest_benchmark_generate_commit_info(config=self.config)
        self.emit({"event": "session", "machine_info": machine, "commit_info": commit, "worker": self.worker})

    def new_benchmarks(self) -> list:
        bs = getattr(self.config, "_benchmarksession", None)
        if bs is None:
            return []
        fresh = bs.benchmarks[self.seen:]
        self.seen = len(bs.benchmarks)
        return [b for b in fresh if not b.has_error]


def pytest_configure(config):
    config._revbench_stream = _Stream(config)
    threads = config.getoption("--revbench-worker-threads")
    if threads:
        import torch

        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    path = config.getoption("--revbench-cases")
    if not path:
        return
    with open(path, encoding="utf-8") as fh:
        wanted = set(json.load(fh))
    keep = [it for it in items if case_id(it) in wanted]
    drop = [it for it in items if case_id(it) not in wanted]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    stream = item.config._revbench_stream
    cid = case_id(item)
    if cid is not None:
        stream.session()
        stream.started[item.nodeid] = time.monotonic()
        stream.outcome[item.nodeid] = {"outcome": "passed", "error": None}
        stream.emit({"event": "start", "case": cid})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    stream = item.config._revbench_stream
    state = stream.outcome.get(item.nodeid)
    if state is None:
        return
    if report.failed and state["outcome"] != "failed":
        state.update(outcome="failed", error=_error_text(report))
    elif report.skipped and state["outcome"] == "passed":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        state.update(outcome="skipped", error=reason.removeprefix("Skipped: "))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    yield
    stream = item.config._revbench_stream
    cid = case_id(item)
    state = stream.outcome.pop(item.nodeid, None)
    if cid is None or state is None:
        return
    benches = stream.new_benchmarks()
    bench = None
    if state["outcome"] == "passed" and benches:
        bench = benches[-1].as_dict(include_data=True)
        record = bench["extra_info"] = dict(bench.get("extra_info") or {})
        record["engine"] = stream.engine
        record["worker"] = stream.worker
        if record.get("torch_num_threads") is None:
            import torch

            record["torch_num_threads"] = torch.get_num_threads()
        from pytest_benchmark.utils import safe_dumps

        bench = json.loads(safe_dumps(bench))             # what --benchmark-json writes, byte for byte
    stream.emit({"event": "end", "case": cid, "outcome": state["outcome"], "error": state["error"],
                 "seconds": time.monotonic() - stream.started.pop(item.nodeid, time.monotonic()),
                 "benchmark": bench})


def _error_text(report, limit: int = 4000) -> str:
    """One line naming the failure, then the end of pytest's report of it."""
    crash = getattr(report.longrepr, "reprcrash", None)
    head = crash.message.splitlines()[0] if crash is not None and crash.message else f"{report.when} failed"
    text = report.longreprtext or ""
    return head + ("\n" + text[-limit:] if text else "")
