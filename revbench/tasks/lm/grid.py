"""The language-model grid of Table 1 (``lm_grid``, ``run_lm_grid``) and the state of its runs.

The grid {GRU, RevGRU, LSTM, RevLSTM} x max forgetting {2, 3, 5 bits, no limit} (ordinary cells
once: they have no limit), trained with ``revbench.tasks.lm.training`` under one named config, reversible
cells with the ``reversible`` method and ordinary ones with ``bptt``. Each run lives in
``<out>/runs/<name>/`` (checkpoint, log, ``result.json``); a run with a ``result.json`` made with
the same configuration is skipped, and an interrupted one resumes from its checkpoint, so the grid
is resumable. Runs are ordered by priority (LSTM, RevLSTM k=3, GRU, RevGRU k=3, then the other
limits).

The tables and the report of the grid: ``revbench.tasks.lm.records``, ``revbench.tasks.lm.tables``,
``revbench.tasks.lm.report``.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from revbench.tasks.cells import CELL_LABEL, FORGETTING_CELLS, LIMITS_DEFAULT
from revbench.tasks.run_options import same_config


CELLS_DEFAULT = ("lstm", "revlstm", "gru", "revgru")


@dataclass(frozen=True)
class LMRun:
    """One point of the grid."""
    data: str
    cell: str
    num_layers: int = 1
    max_forget_bits: int | None = None      # only for cells that forget (revgru, revlstm)

    @property
    def reversible(self) -> bool:
        return self.cell.startswith(("rev", "nf-rev"))

    @property
    def method(self) -> str:
        return "reversible" if self.reversible else "bptt"

    @property
    def name(self) -> str:
        base = f"{self.data}-{self.cell}-L{self.num_layers}"
        if self.cell in FORGETTING_CELLS:
            base += "-k" + ("none" if self.max_forget_bits is None else str(self.max_forget_bits))
        return base

    @property
    def model_label(self) -> str:
        return f"{self.num_layers}-layer {CELL_LABEL.get(self.cell, self.cell)}"


def lm_grid(cells=CELLS_DEFAULT, limits=LIMITS_DEFAULT, layers=(1,), datasets=("ptb",)) -> list[LMRun]:
    """The grid in priority order: per dataset and depth, first the ordinary/no-forgetting cells and the
    forgetting cells at the first limit given, in the order of ``cells``; then the other limits."""
    for c in cells:
        if c not in CELL_LABEL:
            raise ValueError(f"unknown cell {c!r}; choose from {', '.join(CELL_LABEL)}")
    limits = list(limits)
    if not limits:
        raise ValueError("no forgetting limits given")
    first = limits[0]
    runs: list[LMRun] = []
    for data in datasets:
        for L in layers:
            for c in cells:
                runs.append(LMRun(data, c, L, first if c in FORGETTING_CELLS else None))
            for c in cells:
                if c in FORGETTING_CELLS:
                    runs += [LMRun(data, c, L, k) for k in limits if k != first]
    seen, out = set(), []
    for r in runs:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def run_config(run: LMRun, config: str, overrides: dict):
    """The TrainConfig of one grid run (no-forgetting cells start each segment from zero: see TrainConfig)."""
    from revbench.tasks.lm.configs import get_config
    extra = {"carry_state": False} if run.cell.startswith("nf-") else {}
    return get_config(config, **{**overrides, **extra, "data": run.data, "cell": run.cell,
                                 "num_layers": run.num_layers, "max_forget_bits": run.max_forget_bits,
                                 "method": run.method})


def run_status(run_dir: Path, cfg) -> str:
    """"done" (result.json with this configuration), "partial" (a checkpoint), "stale" (a result made with
    another configuration) or "new"."""
    from revbench.tasks.lm.configs import RUN_CONTROL_FIELDS

    res = run_dir / "result.json"
    if res.exists():
        try:
            saved = json.loads(res.read_text(encoding="utf-8"))["config"]
        except (OSError, ValueError, KeyError):
            return "stale"
        if same_config(saved, cfg.to_dict(), RUN_CONTROL_FIELDS) and saved.get("epochs") == cfg.epochs:
            return "done"
        return "stale"
    return "partial" if (run_dir / "checkpoint.pt").exists() else "new"


def _clear_stale(run_dir: Path) -> None:
    for name in ("result.json", "checkpoint.pt", "best.pt", "log.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()


def train_in_subprocess(cfg_file: str, run_dir: str) -> int:
    """``revbench train lm --config-file CFG --out DIR --resume`` in a child (output appended to
    ``DIR/train.out``); its exit status, RuntimeError when it failed. A job of an engine's pool."""
    from revbench.tasks.engine import child

    cmd = ["train", "lm", "--config-file", cfg_file, "--out", run_dir, "--resume"]
    with open(Path(run_dir) / "train.out", "a", encoding="utf-8") as logf:
        logf.write(f"\n$ revbench {' '.join(cmd)}\n")
        logf.flush()
        rc = child.run_module("revbench.cli", cmd, stdout=logf, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"revbench train lm exited with status {rc} (see {Path(run_dir) / 'train.out'})")
    return rc


def _write_config(cfg, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    cfg_file = d / "config.json"
    cfg_file.write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return cfg_file


def run_lm_grid(runs: list[LMRun], config: str, out_dir, overrides: dict | None = None, jobs: int = 1,
                budget_minutes: float | None = None, quiet: bool = False, say=print, pool=None) -> list[dict]:
    """Train every run that is not done yet (resuming partial ones). Returns one status dict per run.

    ``jobs=1`` trains in this process, one run after the other; ``jobs>1`` starts up to that many
    ``revbench train lm`` subprocesses at once (each run's output in ``runs/<name>/train.out``).
    ``pool`` (``revbench.tasks.engine.tasks.Pool`` with engine "ray"): each run is a task of the pool, a
    ``revbench train lm`` child on a Ray worker (``jobs`` does not apply; the budget does).
    ``budget_minutes``: start no new run after that many minutes (running ones finish).
    """
    overrides = dict(overrides or {})
    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    plan = []
    for r in runs:
        cfg = run_config(r, config, overrides)
        d = out / "runs" / r.name
        plan.append((r, cfg, d))
    statuses = {r.name: {"run": r.name, "status": "pending"} for r, _, _ in plan}

    def over_budget():
        return budget_minutes is not None and (time.monotonic() - t0) / 60.0 >= budget_minutes

    todo = []
    for r, cfg, d in plan:
        st = run_status(d, cfg)
        if st == "done":
            statuses[r.name] = {"run": r.name, "status": "done (already)"}
            continue
        if st == "stale":
            say(f"  {r.name}: results were made with another configuration: retraining")
            _clear_stale(d)
        todo.append((r, cfg, d))

    if pool is not None and pool.remote:
        results = pool.map(train_in_subprocess, [(r.name, (str(_write_config(cfg, d)), str(d))) for r, cfg, d in todo],
                           budget_minutes=budget_minutes)
        for name, res in results.items():
            statuses[name] = {"run": name, "status": "done" if res.ok else "skipped (budget)" if res.skipped
                              else f"failed: {res.error.splitlines()[0]}"}
        return [statuses[r.name] for r, _, _ in plan]

    if jobs <= 1:
        for i, (r, cfg, d) in enumerate(todo):
            if over_budget():
                statuses[r.name] = {"run": r.name, "status": "skipped (budget)"}
                continue
            say(f"[{i + 1}/{len(todo)}] {r.name}: training ({cfg.method}) -> {d}{_eta(t0, i, len(todo))}")
            from revbench.tasks.lm.training import train
            t1 = time.monotonic()
            try:
                train(cfg, d, resume=True, quiet=quiet)
                statuses[r.name] = {"run": r.name, "status": "done", "minutes": (time.monotonic() - t1) / 60}
            except Exception as exc:  # one failed run must not stop the grid
                statuses[r.name] = {"run": r.name, "status": f"failed: {type(exc).__name__}: {exc}"}
                say(f"  {r.name} FAILED: {type(exc).__name__}: {exc}")
        return [statuses[r.name] for r, _, _ in plan]

    running: list[tuple] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < jobs and not over_budget():
            r, cfg, d = queue.pop(0)
            cfg_file = _write_config(cfg, d)
            cmd = [sys.executable, "-m", "revbench.cli", "train", "lm", "--config-file", str(cfg_file),
                   "--out", str(d), "--resume"]
            logf = open(d / "train.out", "a", encoding="utf-8")
            logf.write(f"\n$ {' '.join(cmd)}\n")
            logf.flush()
            say(f"start {r.name} ({cfg.method}); output in {d / 'train.out'}")
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
            running.append((r, proc, logf, time.monotonic()))
        if queue and over_budget() and not running:
            for r, _, _ in queue:
                statuses[r.name] = {"run": r.name, "status": "skipped (budget)"}
            queue = []
        time.sleep(1.0)
        still = []
        for r, proc, logf, ts in running:
            rc = proc.poll()
            if rc is None:
                still.append((r, proc, logf, ts))
                continue
            logf.close()
            mins = (time.monotonic() - ts) / 60
            statuses[r.name] = {"run": r.name, "status": "done" if rc == 0 else f"failed (exit {rc}; see train.out)",
                                "minutes": mins}
            say(f"{'done' if rc == 0 else 'FAILED'} {r.name} after {mins:.1f} min")
        running = still
        if over_budget() and queue and not running:
            for r, _, _ in queue:
                statuses[r.name] = {"run": r.name, "status": "skipped (budget)"}
            queue = []
    return [statuses[r.name] for r, _, _ in plan]


def _eta(t0: float, finished: int, total: int) -> str:
    """", ETA h:mm:ss" for the runs left at the mean time of the ``finished`` ones (nothing before the first)."""
    from revbench.tasks.engine.progress import eta_text

    return f", ETA {eta_text((time.monotonic() - t0) / finished * (total - finished))}" if finished else ""


def drop_checkpoints(out_dir, run_names) -> int:
    """Delete checkpoint.pt and best.pt of finished runs (those with a result.json). Returns files removed."""
    n = 0
    for name in run_names:
        d = Path(out_dir) / "runs" / name
        if not (d / "result.json").exists():
            continue
        for f in ("checkpoint.pt", "best.pt"):
            with contextlib.suppress(FileNotFoundError):
                (d / f).unlink()
                n += 1
    return n
