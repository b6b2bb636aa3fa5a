"""The Table 3 reproduction grid: :class:`GridPoint`, the named :data:`GRID` lists and :func:`reproduce`."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from revbench.tasks.nmt.build import load_corpus
from revbench.tasks.nmt.config import make_config
from revbench.tasks.nmt.grid_report import write_grid_report
from revbench.tasks.nmt.step_memory import MEMORY_METHODS, point_memory
from revbench.tasks.nmt.train import BEST, CHECKPOINT, RESULTS, json_default, train
from revbench.tasks.engine.tasks import current as current_pool
from revbench.tasks.run_options import same_config
from revbench.util.atomic import atomic_write_json


@dataclass(frozen=True)
class GridPoint:
    """One cell of the reproduction grid: a cell type, a context and a forgetting limit."""

    cell: str
    context: str
    max_forget_bits: int | None = None

    @property
    def reversible(self) -> bool:
        return self.cell.startswith("rev") or self.cell.startswith("nf-rev")

    @property
    def id(self) -> str:
        k = "" if not self.reversible else ("-knone" if self.max_forget_bits is None else f"-k{self.max_forget_bits}")
        return f"{self.cell}-{self.context.replace(':', '').replace('+', '_')}{k}"

    @property
    def method(self) -> str:
        return "reversible" if self.reversible else "bptt"

    @classmethod
    def parse(cls, text: str) -> "GridPoint":
        """``cell/context/k`` (k an int or 'none'), e.g. ``revgru/emb+h:20/3`` or ``gru/all``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3):
            raise ValueError(f"bad grid point {text!r}: write cell/context[/k], e.g. revgru/emb+h:20/3 or gru/all")
        k = None
        if len(parts) == 3 and parts[2].lower() not in ("none", "nolimit", "no-limit"):
            try:
                k = int(parts[2])
            except ValueError:
                raise ValueError(f"bad forgetting limit {parts[2]!r} in grid point {text!r}: "
                                 f"an int or 'none'") from None
        return cls(parts[0], parts[1], k)


# In priority order: the paper's headline setting, the baseline, then the other contexts and limits.
GRID = {
    "small": [GridPoint("revgru", "emb+h:20", 3), GridPoint("gru", "all"), GridPoint("revgru", "h:20", 3),
              GridPoint("revgru", "emb", 3), GridPoint("revgru", "emb+h:20", 2), GridPoint("revgru", "emb+h:20", 5),
              GridPoint("revgru", "emb+h:20", None), GridPoint("revgru", "all", 3),
              GridPoint("revlstm", "emb+h:20", 3), GridPoint("lstm", "all")],
    "paper": [GridPoint(c, x, k) for c in ("revgru", "revlstm") for x in ("h:20", "h:100", "all", "emb", "emb+h:20")
              for k in (1, 2, 3, 5, None)] + [GridPoint("gru", "all"), GridPoint("lstm", "all")],
}
GRID["tiny"] = [GridPoint("revgru", "emb+h:4", 3), GridPoint("gru", "all")]


RUN_CONTROL = frozenset({"save_every"})
"""Config fields a finished point may differ in and still count as done (they change no result)."""


def point_status(run_dir: Path, cfg) -> str:
    """"done" (a results.json with memory figures made with ``cfg``), "stale" (one made with another configuration,
    or unreadable), "partial" (results without the memory figures: measured again, not retrained) or "new"."""
    done = run_dir / RESULTS
    if not done.exists():
        return "new"
    try:
        res = json.loads(done.read_text())
        saved = res["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return "stale"
    if not same_config(saved, dataclasses.asdict(cfg), RUN_CONTROL):
        return "stale"
    return "done" if "memory" in res else "partial"


def _clear_point(run_dir: Path) -> None:
    for f in (CHECKPOINT, BEST, RESULTS):
        if (run_dir / f).exists():
            (run_dir / f).unlink()


def _point_config(config_name: str, overrides: dict, p: "GridPoint"):
    return make_config(config_name, **{**overrides, "cell": p.cell, "context": p.context,
                                       "max_forget_bits": p.max_forget_bits if p.reversible else None,
                                       "method": p.method})


def _finish_point(res: dict, cfg, corpus, run_dir: Path, keep_checkpoints: bool) -> dict:
    """Measure a trained point's step memory, write its results.json, drop its weights (unless kept)."""
    tm = time.perf_counter()
    res["memory"] = point_memory(cfg, corpus, run_dir)
    res["memory_time_s"] = time.perf_counter() - tm
    atomic_write_json(res, run_dir / RESULTS, indent=2, default=json_default)
    if not keep_checkpoints:
        for f in (CHECKPOINT, BEST):
            if (run_dir / f).exists():
                (run_dir / f).unlink()
    return res


def _remote_point(config_name: str, overrides: dict, p: GridPoint, out: str, data_dir, force: bool,
                  keep_checkpoints: bool) -> str:
    """One grid point as a task of an engine's pool (its own corpus, quiet): trained, measured, written."""
    run_dir = Path(out) / "runs" / p.id
    cfg = _point_config(config_name, overrides, p)
    if force:                         # also for a stale point: the driver decided that
        _clear_point(run_dir)
    corpus = load_corpus(make_config(config_name, **overrides), data_dir)
    res = train(cfg, run_dir, resume=(run_dir / CHECKPOINT).exists(), corpus=corpus, log=lambda *a, **k: None)
    _finish_point(res, cfg, corpus, run_dir, keep_checkpoints)
    return p.id


def reproduce(config_name: str, out_dir, points=None, data_dir=None, budget_minutes: float | None = None,
              overrides: dict | None = None, force: bool = False, command: str | None = None,
              keep_checkpoints: bool = False, log=print, pool=None) -> dict:
    """Run the Table 3 grid for ``config_name`` into ``out_dir/runs/<point>/`` in priority order, then write
    ``grid.json``, ``README.md`` and ``index.html`` (after every point, so partial results are always there).
    A point with a ``results.json`` is not rerun (unless ``force``); one with a checkpoint is resumed; no new
    point starts once ``budget_minutes`` have passed. A completed point's ``checkpoint.pt``/``best.pt`` (model
    weights) are deleted unless ``keep_checkpoints``; its ``results.json`` and ``test.hyp.txt`` stay. ``pool``
    (default ``revbench.tasks.engine.tasks.current()``) with engine "ray": every point still to train is a Ray task
    (none starts once the budget is used), then the report is written as before."""
    from revbench.measure.environment import environment_info

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    pts = list(points) if points is not None else list(GRID.get(config_name, GRID["small"]))
    base = make_config(config_name, **overrides)
    corpus = load_corpus(base, data_dir)
    t0 = time.perf_counter()
    prev = {}
    if (out / "grid.json").exists():
        try:
            prev = json.loads((out / "grid.json").read_text())
        except (OSError, ValueError):
            prev = {}
    summary = {"config_name": config_name, "overrides": overrides, "command": command,
               "environment": environment_info("cpu"), "threads": torch.get_num_threads(), "points": [],
               "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "sessions": prev.get("sessions", []) if isinstance(prev, dict) else []}
    entries = {}
    for p in pts:
        entries[p.id] = {"id": p.id, "cell": p.cell, "context": p.context, "max_forget_bits": p.max_forget_bits,
                         "method": p.method, "status": "not started"}
    summary["points"] = list(entries.values())
    pool = pool if pool is not None else current_pool()
    remote = {}
    status = {p.id: point_status(out / "runs" / p.id, _point_config(config_name, overrides, p)) for p in pts}
    for p in pts:
        if status[p.id] == "stale" and not force:
            log(f"  {p.id}: results were made with another configuration: retraining")
    pending = [p for p in pts if force or status[p.id] in ("new", "stale")]
    if pool is not None and pool.remote:            # every point still to train is a task of the pool
        remote = pool.map(_remote_point, [(p.id, (config_name, overrides, p, str(out), data_dir,
                                                  force or status[p.id] == "stale", keep_checkpoints))
                                          for p in pending], budget_minutes=budget_minutes)
    over_budget = None if budget_minutes is None else f"not started: the time budget of {budget_minutes:g} min was used"
    trained = 0
    for p in pts:
        e = entries[p.id]
        run_dir = out / "runs" / p.id
        cfg = _point_config(config_name, overrides, p)
        done = run_dir / RESULTS
        if p.id in remote:
            if remote[p.id].ok:
                e.update(_point_entry(json.loads(done.read_text())), status="completed")
            elif remote[p.id].skipped:
                e["status"] = over_budget
            else:
                e["status"] = f"failed: {remote[p.id].error.splitlines()[0]}"
            continue
        if not force and status[p.id] in ("done", "partial"):
            res = json.loads(done.read_text())
            if status[p.id] == "done":
                e.update(_point_entry(res), status="completed (earlier session)")
                continue
        elif budget_minutes is not None and (time.perf_counter() - t0) / 60 > budget_minutes:
            e["status"] = over_budget
            continue
        else:
            if force or status[p.id] == "stale":
                _clear_point(run_dir)
            log(f"== [{trained + 1}/{len(pending)}] {p.id}: {cfg.cell}, context {cfg.context}, "
                f"k={cfg.max_forget_bits}, method {cfg.method}{_eta(t0, trained, len(pending))}")
            trained += 1
            res = train(cfg, run_dir, resume=(run_dir / CHECKPOINT).exists(), corpus=corpus, log=log)
        _finish_point(res, cfg, corpus, run_dir, keep_checkpoints)
        e.update(_point_entry(res), status="completed")
        summary["elapsed_s"] = time.perf_counter() - t0
        write_grid_report(summary, out)
    summary["elapsed_s"] = time.perf_counter() - t0
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    summary["sessions"].append({"started": summary["started"], "finished": summary["finished"],
                                "elapsed_s": summary["elapsed_s"], "command": command})
    write_grid_report(summary, out)
    return summary


def _eta(t0: float, finished: int, total: int) -> str:
    from revbench.tasks.engine.progress import eta_text

    return f", ETA {eta_text((time.perf_counter() - t0) / finished * (total - finished))}" if finished else ""


def _point_entry(res: dict) -> dict:
    fin = res.get("final") or {}
    mem = res.get("memory", {})
    return {"epochs": len(res.get("history", [])), "steps": res.get("steps"), "train_time_s": res.get("train_time_s"),
            "wall_time_s": res.get("wall_time_s"), "eval_time_s": res.get("eval_time_s"),
            "val_ppl": res.get("best_val_ppl"), "test_ppl": res.get("test_ppl"),
            "bleu_greedy": res.get("test_bleu_greedy"), "bleu_beam": res.get("test_bleu_beam"),
            "length_ratio_greedy": res.get("test_length_ratio_greedy"),
            "length_ratio_beam": res.get("test_length_ratio_beam"),
            "bleu_signature": res.get("bleu_signature"),
            **{k: fin.get(k) for k in ("enc_saving_actual", "enc_saving_ideal", "dec_saving_actual",
                                       "dec_saving_ideal")},
            **{f"{m}_live_peak_bytes": mem.get(f"{m}_live_peak_bytes") for m in MEMORY_METHODS},
            "allocator_saving": mem.get("allocator_saving"),
            "enc_allocator_saving": mem.get("enc_allocator_saving"),
            "dec_allocator_saving": mem.get("dec_allocator_saving"),
            "memory_batch": f"B={mem.get('batch_size')}, S={mem.get('batch_src_len')}, T={mem.get('batch_tgt_len')}"
            if mem else None}
