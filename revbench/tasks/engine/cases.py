"""What an engine runs: the cases of a grid, the settings every worker shares, and one worker's pytest command.

A case is one parametrised benchmark of the suites (``revbench.measure.grids.Case``), named by its id. A worker
is ``python -m pytest SUITES -p revbench.tasks.engine.plugin --revbench-cases FILE ...`` in a fresh interpreter
(``revbench.tasks.engine.child``: it dies with whoever started it), run in the checkout that holds ``SUITES``;
the plugin streams each case's pytest-benchmark entry back (``read_events``).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

PLUGIN = "revbench.tasks.engine.plugin"


class EngineError(Exception):
    """The engine cannot run (one line). ``bad_input``: because of the arguments given (exit 2)."""

    def __init__(self, message: str, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input


@dataclass(frozen=True)
class Settings:
    """What every worker of one run shares; ``fingerprint()`` is what a resumed run must match."""
    suites: str                           # absolute path of the suites/ folder
    grid: str = "default"
    threads: int = 1
    extra: tuple = ()                     # extra pytest arguments (--pytest-args)
    suite_threads_option: bool = False    # the suites declare --revbench-threads (forwarded then)
    filter: str | None = None             # narrows the suites' parametrisation (ids are still matched exactly)
    engine: str = "local"
    env: dict = field(default_factory=dict, hash=False, compare=False)

    def fingerprint(self) -> dict:
        """What decides a case's result besides its id: a partial file made with other values is not reused."""
        return {"grid": self.grid, "threads": self.threads, "extra": list(self.extra)}

    def to_dict(self) -> dict:
        return asdict(self)


def select_cases(grid: str, sub: str | None) -> list[str]:
    """Ids of the cases of ``grid`` whose id contains ``sub`` (all without it), in the grid's order."""
    from revbench.measure.grids import get_grid

    return [c.id for c in get_grid(grid) if not sub or sub in c.id]


def suite_declares(suites: Path, option: str) -> bool:
    """Whether the suites' conftest declares a pytest option (read, not imported: no torch here)."""
    try:
        return option in (Path(suites) / "conftest.py").read_text(encoding="utf-8")
    except OSError:
        return False


def worker_args(settings: Settings, cases_file: Path, events_file: Path, suites: Path | None = None) -> list[str]:
    """The pytest arguments of one worker over the cases listed in ``cases_file``."""
    args = [str(suites or settings.suites), "-p", PLUGIN, f"--revbench-cases={cases_file}",
            f"--revbench-events={events_file}", f"--revbench-worker-threads={settings.threads}",
            f"--revbench-engine-name={settings.engine}", f"--revbench-grid={settings.grid}",
            "-p", "no:cacheprovider", "-q", "-rfEs", "--benchmark-columns=median,rounds", "--benchmark-sort=name"]
    if settings.filter:
        args.append(f"--revbench-filter={settings.filter}")
    if settings.suite_threads_option:
        args.append(f"--revbench-threads={settings.threads}")
    return args + list(settings.extra)


def worker_env(settings: Settings) -> dict:
    """The worker's environment: this one, its OpenMP/MKL threads pinned to ``threads``."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(settings.threads)
    env.update(settings.env)
    return env


def checkout_root(suites: Path) -> Path:
    """Where a worker runs (pytest's rootdir and ``python -m``'s first import path): the suites' parent."""
    return Path(suites).resolve().parent


def write_cases(path: Path, ids: list[str]) -> Path:
    path.write_text(json.dumps(list(ids)), encoding="utf-8")
    return path


def read_events(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """The complete JSON lines of ``path`` from byte ``offset`` on, and the offset after them (a line the worker
    is still writing, or that a killed worker left half-written, is not read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    events, used = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        used += len(line)
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, offset + used


def python() -> str:
    return sys.executable
