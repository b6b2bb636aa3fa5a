"""`revbench reproduce lm|repeat|nmt`: run a paper reproduction and write its report.

- ``lm``: the Table-1 grid {GRU, RevGRU, LSTM, RevLSTM} x max forgetting {2, 3, 5, none} on PTB
  (and WikiText-2 with ``--wikitext``); resumable; writes ``runs.csv``/``runs.json``,
  ``table1.html`` and ``README.md`` into ``--out`` (default ``reports/lm``).
- ``repeat``: the repeat task of section 4, accuracy against sequence length per model; writes
  ``repeat.csv``, ``repeat.html`` and ``README.md`` into ``--out`` (default ``reports/repeat``).
- ``nmt``: the NMT grid of Table 3, ``revbench.cli.nmt``'s ``configure_reproduce``/``main_reproduce``.

``--engine ray`` (every task): each training run is a Ray task (``--gpus-per-run``, ``--cpus-per-run``,
``--parallel``) on an embedded Ray or the cluster at ``--address``; results and checkpoints go under ``--out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from revbench.cli import nmt
from revbench.cli.run import add_engine_options
from revbench.tasks.engine.cases import EngineError
from revbench.cli.options import (EXIT_BAD_INPUT, EXIT_FAILED, LM_CORPORA, add_data_options, add_device, add_tasks,
                                  add_epochs, add_grid_control, add_report_only, add_run_control, add_seed,
                                  add_threads, command_line, run_task, say_quiet)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# ------------------------------------------------------------------------------------------- lm
def configure_lm(p: argparse.ArgumentParser) -> None:
    from revbench.tasks.lm.configs import CONFIGS

    p.add_argument("--config", default="small", choices=list(CONFIGS),
                   help="named training config for every run (default: %(default)s)")
    add_data_options(p, LM_CORPORA, "ptb", "%(default)s")
    p.add_argument("--wikitext", action="store_true", help="also run the grid on WikiText-2 (after --data)")
    p.add_argument("--cells", default="lstm,revlstm,gru,revgru",
                   help="comma-separated cells, in priority order (default: %(default)s)")
    p.add_argument("--limits", default="3,2,5,none",
                   help="comma-separated forgetting limits for RevGRU/RevLSTM (ints or 'none'); the first is run "
                        "first for every cell (default: %(default)s)")
    p.add_argument("--layers", default="1", help="comma-separated depths (default: %(default)s)")
    add_epochs(p)
    p.add_argument("--lr", type=float, default=None, metavar="X",
                   help="SGD learning rate of every run of this invocation (default: the config's); a finished run "
                        "of the grid made with another rate is retrained, so name only the runs to change (e.g. "
                        "--cells revlstm --layers 2)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at the same time, as subprocesses (default: %(default)s: one after the other "
                        "in this process)")
    add_threads(p, 1, "%(default)s, so runs can share cores", per_run=True)
    add_device(p)
    add_grid_control(p, "run", ": result.json, log.jsonl and train.out stay, and a finished run is never retrained")
    add_report_only(p, "finished runs")
    add_run_control(p, default_out=Path("reports/lm"))
    add_engine_options(p, "run")


def main_lm(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from revbench.tasks.cells import parse_limit
    from revbench.tasks.datasets import DataError, resolve_data_dir
    from revbench.tasks.lm.grid import drop_checkpoints, lm_grid, run_config, run_lm_grid
    from revbench.tasks.lm.records import lm_records
    from revbench.tasks.lm.report import lm_differences, write_lm_report
    from revbench.tasks.lm.tables import table1
    from revbench.measure.environment import environment_info

    say = say_quiet(args.quiet)
    t0 = time.monotonic()
    try:
        cells = _csv(args.cells)
        limits = [parse_limit(k) for k in _csv(args.limits)]
        layers = [int(x) for x in _csv(args.layers)]
        if args.jobs < 1 or args.threads < 1:
            raise ValueError("--jobs and --threads must be >= 1")
        datasets = [args.data] + (["wikitext-2"] if args.wikitext and args.data != "wikitext-2" else [])
        if any(d != "synthetic" for d in datasets) and not args.report_only:
            resolve_data_dir(args.data_dir)
        runs = lm_grid(cells, limits, layers, datasets)
        overrides = {"threads": args.threads, "verify": not args.no_verify}
        if args.data_dir:
            overrides["data_dir"] = str(Path(args.data_dir).resolve())
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        if args.lr is not None:
            overrides["lr"] = args.lr
        if args.device:
            overrides["device"] = args.device
        cfg0 = run_config(runs[0], args.config, overrides)    # validates the overrides once
        statuses = None
        if not args.report_only:
            say(f"revbench reproduce lm: {len(runs)} runs, config {args.config!r}, -> {args.out}/runs/")
            statuses = run_lm_grid(runs, args.config, args.out, overrides, jobs=args.jobs,
                                   budget_minutes=args.budget_minutes, quiet=args.quiet, say=say, pool=make_pool(args))
    except (ValueError, FileNotFoundError, DataError, EngineError) as exc:
        print(f"revbench reproduce lm: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    records = lm_records(args.out)
    names = {r.name for r in runs}
    records = [r for r in records if r["run"] in names]
    if not args.keep_checkpoints:
        drop_checkpoints(args.out, [r["run"] for r in records])
    cfg_dict = {k: v for k, v in cfg0.to_dict().items() if k not in ("data_dir", "cell", "max_forget_bits", "method")}
    meta = {"command": command_line(), "config_name": args.config, "config": cfg_dict,
            "duration_min": (time.monotonic() - t0) / 60.0, "environment": environment_info(cfg0.device),
            "statuses": statuses or [{"run": r.name, "status": "done" if r.name in {x["run"] for x in records}
                                      else "not finished"} for r in runs],
            "differences": lm_differences(records, cfg_dict)}
    paths = write_lm_report(args.out, records, meta)
    print(f"revbench reproduce lm: {len(records)} of {len(runs)} runs finished; table in {paths['html']}, "
          f"{paths['readme']}, {paths['csv']}")
    if records:
        for data in sorted({r["data"] for r in records}):
            print(f"\n{data}: valid ppl (actual saving x / ideal saving x):")
            print(table1(records, data).to_string(index=False))
    return 0 if len(records) == len(runs) else EXIT_FAILED


# ------------------------------------------------------------------------------------------- repeat
def configure_repeat(p: argparse.ArgumentParser) -> None:
    from revbench.tasks.repeat.experiment import REPEAT_LENGTHS, REPEAT_MODELS, RepeatSettings

    s = RepeatSettings()
    p.add_argument("--lengths", default=",".join(map(str, REPEAT_LENGTHS)),
                   help="comma-separated sequence lengths (default: %(default)s)")
    p.add_argument("--models", default=",".join(REPEAT_MODELS), help="comma-separated cells (default: %(default)s)")
    p.add_argument("--symbols", type=int, default=s.symbols, help="alphabet size (default: %(default)s)")
    p.add_argument("--hidden-size", type=int, default=s.hidden_size, help="hidden units (default: %(default)s)")
    p.add_argument("--emb-size", type=int, default=s.emb_size, help="embedding size (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=s.batch_size, help="sequences per step (default: %(default)s)")
    p.add_argument("--steps", type=int, default=s.steps, help="training steps per model (default: %(default)s)")
    p.add_argument("--lr", type=float, default=s.lr, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--max-forget-bits", default="3", help="limit of RevGRU/RevLSTM, int or 'none' (default: 3)")
    p.add_argument("--eval-sequences", type=int, default=s.eval_sequences,
                   help="test sequences per model (default: %(default)s)")
    add_seed(p, s.seed)
    add_threads(p, 1)
    add_report_only(p, "repeat.json (repeat.html, README.md, repeat.csv)")
    add_run_control(p, default_out=Path("reports/repeat"))
    add_engine_options(p, "run")


def main_repeat(args) -> int:
    import dataclasses

    import matplotlib
    import torch

    matplotlib.use("Agg")
    from revbench.tasks.cells import parse_limit
    from revbench.tasks.repeat.experiment import RepeatSettings, run_repeat
    from revbench.tasks.repeat.report import load_repeat, write_repeat_report
    from revbench.measure.environment import environment_info

    say = say_quiet(args.quiet)
    t0 = time.monotonic()
    if args.report_only:
        try:
            rows, meta = load_repeat(args.out)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            print(f"revbench reproduce repeat: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        paths = write_repeat_report(args.out, rows, meta)
        print(f"revbench reproduce repeat: report rebuilt from {len(rows)} runs: {paths['html']}")
        return 0
    try:
        lengths = [int(x) for x in _csv(args.lengths)]
        models = _csv(args.models)
        for name in ("symbols", "hidden_size", "emb_size", "batch_size", "steps", "eval_sequences", "threads"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if args.symbols < 2:
            raise ValueError("--symbols must be >= 2")
        if any(m.startswith(("rev", "nf-rev")) for m in models) and args.hidden_size % 2:
            raise ValueError("--hidden-size must be even for reversible cells (two halves)")
        s = RepeatSettings(symbols=args.symbols, hidden_size=args.hidden_size, emb_size=args.emb_size,
                           batch_size=args.batch_size, steps=args.steps, lr=args.lr,
                           eval_sequences=args.eval_sequences, max_forget_bits=parse_limit(args.max_forget_bits),
                           seed=args.seed)
        torch.set_num_threads(args.threads)
        say(f"revbench reproduce repeat: models {', '.join(models)} x lengths {lengths} -> {args.out}")
        rows = run_repeat(lengths, models, s, args.out, say=say, pool=make_pool(args))
    except (ValueError, EngineError) as exc:
        print(f"revbench reproduce repeat: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    meta = {"command": command_line(), "settings": dataclasses.asdict(s), "duration_min": (time.monotonic() - t0) / 60,
            "environment": environment_info("cpu")}
    paths = write_repeat_report(args.out, rows, meta)
    import pandas as pd
    if not rows:
        print("revbench reproduce repeat: no run finished", file=sys.stderr)
        return EXIT_FAILED
    wide = pd.DataFrame(rows).pivot_table(index="model", columns="seq_len", values="accuracy", sort=False)
    print(wide.round(3).to_string())
    print(f"revbench reproduce repeat: {paths['html']}, {paths['csv']}, {paths['readme']}")
    return 0


# ------------------------------------------------------------------------------------------- nmt
def configure_nmt(p: argparse.ArgumentParser) -> None:
    nmt.configure_reproduce(p)
    add_engine_options(p, "run")


def main_nmt(args) -> int:
    """`reproduce nmt` (revbench.cli.nmt) with the engine of --engine: its grid takes the pool from ``using``."""
    from revbench.tasks.engine.tasks import using

    try:
        pool = make_pool(args)
    except EngineError as exc:
        print(f"revbench reproduce nmt: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with using(pool):
        return nmt.main_reproduce(args)


def make_pool(args):
    """The engine's pool for a reproduction's training runs: None for the local engine (the grid trains as it
    always did), else a Ray pool; EngineError (exit 2) when Ray is not installed."""
    if args.engine != "ray":
        return None
    from revbench.tasks.engine.ray_engine import import_ray
    from revbench.tasks.engine.tasks import Pool

    import_ray()
    return Pool("ray", parallel=args.parallel, address=args.address, gpus=args.gpus_per_case,
                cpus=args.cpus_per_case, quiet=args.quiet)


# ------------------------------------------------------------------------------------------- protocol
def configure(parser: argparse.ArgumentParser) -> None:
    add_tasks(parser, [
        ("lm", "Table 1: the language-model grid (PTB, WikiText-2)",
         "Train the Table-1 grid and write the table, records and report.", configure_lm, main_lm),
        ("repeat", "section 4: the repeat task, accuracy against sequence length",
         "Train every model at every length on the repeat task; figure, CSV, report.", configure_repeat,
         main_repeat),
        ("nmt", "Table 3: the translation grid (Multi30K)", None, configure_nmt, main_nmt),
    ])


main = run_task
