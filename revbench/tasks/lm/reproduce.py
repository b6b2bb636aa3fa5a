"""Paper reproductions: the language-model grid of Table 1, and the repeat task of section 4.

Language modelling (``run_lm_grid``, ``lm_records``, ``table1``, ``write_lm_report``)
-------------------------------------------------------------------------------------
The grid {GRU, RevGRU, LSTM, RevLSTM} x max forgetting {2, 3, 5 bits, no limit} (ordinary cells
once: they have no limit), trained with ``revbench.tasks.lm.training`` under one named config, reversible
cells with the ``reversible`` method and ordinary ones with ``bptt``. Each run lives in
``<out>/runs/<name>/`` (checkpoint, log, ``result.json``); a run with a ``result.json`` made with
the same configuration is skipped, and an interrupted one resumes from its checkpoint, so the grid
is resumable. Runs are ordered by priority (LSTM, RevLSTM k=3, GRU, RevGRU k=3, then the other
limits). The report holds a Table-1-shaped table (rows: models; columns: limits; cells: valid
perplexity with the savings) next to the paper's numbers (as recalled in PAPER.md, unverified),
the per-run records, the reversible models relative to their ordinary counterparts, and the
allocator saving (bptt's peak / reversible's peak, one segment of the same trained model with the
same dropout masks).

The repeat task (``run_repeat``, ``write_repeat_report``)
-------------------------------------------------------
Target at step t = input at step t-1 (``revbench.tasks.data.repeat_task``). For each model and sequence
length a fresh model is trained from a zero initial state per sequence, with the loss over every
scored step, and tested on fresh sequences. Why exactly reversible (no-forgetting) models must
fail: if a model solves the task, its output at step t+1 is x_t, so running its reverse pass from
(h_T, x_T) recovers x_{T-1} from the output at h_T, then h_{T-1} from (h_T, x_T), then x_{T-2}, and
so on: h_T must determine the whole input sequence, (T-1) log2(V) bits, in a state of fixed size
whose additive (volume-preserving) updates cannot discard anything. A small state relative to the
sequence's information makes this fail at moderate lengths; ordinary cells and buffered reversible
cells need to hold only the last symbol (the buffer keeps what forgetting destroys).
"""
from __future__ import annotations

import contextlib
import html
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LIMITS_DEFAULT = (2, 3, 5, None)
CELLS_DEFAULT = ("lstm", "revlstm", "gru", "revgru")
CELL_LABEL = {"gru": "GRU", "lstm": "LSTM", "revgru": "RevGRU", "revlstm": "RevLSTM", "nf-revgru": "NF-RevGRU",
              "nf-revlstm": "NF-RevLSTM"}
BASELINE_OF = {"revgru": "gru", "revlstm": "lstm", "nf-revgru": "gru", "nf-revlstm": "lstm"}
FORGETTING_CELLS = ("revgru", "revlstm")

# PAPER.md, Table 1: PTB validation perplexity (memory saving). As recalled, UNVERIFIED.
PAPER_TABLE1 = [
    # (layers, cell, {limit: (ppl, saving)}, baseline cell, baseline ppl)
    (1, "revgru", {2: (82.2, 13.8), 3: (81.1, 10.8), 5: (81.1, 7.4), None: (81.5, 6.4)}, "gru", 82.2),
    (2, "revgru", {2: (83.8, 14.8), 3: (83.8, 12.0), 5: (82.2, 9.4), None: (82.3, 4.9)}, "gru", 81.5),
    (1, "revlstm", {2: (79.8, 13.8), 3: (79.4, 10.1), 5: (78.4, 7.4), None: (78.2, 4.9)}, "lstm", 78.0),
    (2, "revlstm", {2: (74.7, 14.0), 3: (72.8, 10.0), 5: (72.9, 7.3), None: (72.9, 4.9)}, "lstm", 73.0),
    (3, "revlstm", {2: (72.8, 14.1), 3: (72.4, 10.5), 5: (72.6, 8.1), None: (72.4, 5.0)}, "lstm", 70.7),
]
PAPER_NOTE = ("Paper numbers as recalled in PAPER.md, UNVERIFIED against the paper's text: rough targets only. "
              "Which of the two savings (actual or ideal) the paper's brackets report is also unverified.")


def limit_label(k) -> str:
    return "no limit" if k is None else f"{k} bit"


def parse_limit(text: str):
    t = str(text).strip().lower()
    if t in ("none", "no", "nolimit", "no-limit", "inf"):
        return None
    try:
        k = int(t)
    except ValueError:
        raise ValueError(f"a forgetting limit is an int from 1 to 10 or 'none', got {text!r}") from None
    if not 1 <= k <= 10:
        raise ValueError(f"a forgetting limit is an int from 1 to 10 or 'none', got {k}")
    return k


# =========================================================================================== LM grid
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


def _same_config(a: dict, b: dict) -> bool:
    from revbench.tasks.lm.configs import RUN_CONTROL_FIELDS
    return all(a.get(k) == b.get(k) for k in set(a) | set(b) if k not in RUN_CONTROL_FIELDS)


def run_status(run_dir: Path, cfg) -> str:
    """"done" (result.json with this configuration), "partial" (a checkpoint), "stale" (a result made with
    another configuration) or "new"."""
    res = run_dir / "result.json"
    if res.exists():
        try:
            saved = json.loads(res.read_text(encoding="utf-8"))["config"]
        except (OSError, ValueError, KeyError):
            return "stale"
        if _same_config(saved, cfg.to_dict()) and saved.get("epochs") == cfg.epochs:
            return "done"
        return "stale"
    return "partial" if (run_dir / "checkpoint.pt").exists() else "new"


def _clear_stale(run_dir: Path) -> None:
    for name in ("result.json", "checkpoint.pt", "best.pt", "log.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()


def run_lm_grid(runs: list[LMRun], config: str, out_dir, overrides: dict | None = None, jobs: int = 1,
                budget_minutes: float | None = None, quiet: bool = False, say=print) -> list[dict]:
    """Train every run that is not done yet (resuming partial ones). Returns one status dict per run.

    ``jobs=1`` trains in this process, one run after the other; ``jobs>1`` starts up to that many
    ``revbench train lm`` subprocesses at once (each run's output in ``runs/<name>/train.out``).
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

    if jobs <= 1:
        for i, (r, cfg, d) in enumerate(todo):
            if over_budget():
                statuses[r.name] = {"run": r.name, "status": "skipped (budget)"}
                continue
            say(f"[{i + 1}/{len(todo)}] {r.name}: training ({cfg.method}) -> {d}")
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
            d.mkdir(parents=True, exist_ok=True)
            cfg_file = d / "config.json"
            cfg_file.write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
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


# ------------------------------------------------------------------------------------------ records
def lm_record(result: dict, run_name: str) -> dict:
    """One flat record from a run's result.json."""
    fm = result.get("final_memory") or {}
    bptt_peak = (fm.get("bptt") or {}).get("peak_bytes")
    method_fig = fm.get(result["method"]) if result["method"] != "bptt" else fm.get("bptt")
    last = (result.get("history") or [{}])[-1]
    env = result.get("environment") or {}
    cfg = result.get("config") or {}
    return {
        "run": run_name, "data": result["data"], "model": f"{result['num_layers']}-layer "
                                                          f"{CELL_LABEL.get(result['cell'], result['cell'])}",
        "cell": result["cell"], "num_layers": result["num_layers"], "max_forget_bits": result["max_forget_bits"],
        "limit": limit_label(result["max_forget_bits"]) if result["cell"] in FORGETTING_CELLS else "-",
        "method": result["method"], "epochs": result["epochs"], "valid_ppl": result["valid_ppl"],
        "test_ppl": result["test_ppl"], "saving_actual": result.get("saving_actual"),
        "saving_ideal": result.get("saving_ideal"),
        "buffer_efficiency": (result["saving_ideal"] / result["saving_actual"]
                              if result.get("saving_actual") and result.get("saving_ideal") else None),
        "allocator_saving": result.get("allocator_saving"),
        "bptt_peak_bytes": bptt_peak, "method_peak_bytes": (method_fig or {}).get("peak_bytes"),
        "peak_meter": (fm.get("bptt") or {}).get("peak_bytes_meter"),
        "memory_segment": f"T={fm['segment']['seq_len']} B={fm['segment']['batch_size']}" if fm.get("segment") else None,
        "train_ppl_last_epoch": last.get("train_ppl"), "parameters": result.get("parameters"),
        "layer_sizes": "/".join(str(s) for s in result.get("layer_sizes", [])),
        "batch_size": cfg.get("batch_size"), "bptt": cfg.get("bptt"),
        "train_minutes": result["train_time_s"] / 60.0, "device": cfg.get("device"),
        "device_name": env.get("device_name"),
    }


def _first_start(log_path: Path):
    """Time (epoch seconds) of the first 'start' record of a run's log.jsonl, or None."""
    try:
        with open(log_path, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                if rec.get("event") == "start":
                    return rec.get("time")
    except (OSError, ValueError):
        return None
    return None


def lm_records(out_dir) -> list[dict]:
    """Records of every finished run under ``<out_dir>/runs`` (sorted by data, cell, layers, limit)."""
    recs = []
    for res in sorted(Path(out_dir).glob("runs/*/result.json")):
        try:
            result = json.loads(res.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rec = lm_record(result, res.parent.name)
        rec["finished_at"] = result.get("finished_at")
        rec["started_at"] = _first_start(res.parent / "log.jsonl")
        recs.append(rec)
    order = {c: i for i, c in enumerate(("gru", "revgru", "nf-revgru", "lstm", "revlstm", "nf-revlstm"))}
    lim = {2: 0, 3: 1, 5: 2, None: 9}
    recs.sort(key=lambda r: (r["data"], r["num_layers"], order.get(r["cell"], 99),
                             lim.get(r["max_forget_bits"], r["max_forget_bits"] or 0)))
    return recs


def _fmt(x, spec="{:.1f}", na="n/a"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return na
    return spec.format(x)


def _cell_text(ppl, actual, ideal) -> str:
    if ppl is None:
        return "not run"
    if actual is None and ideal is None:
        return _fmt(ppl)
    return f"{_fmt(ppl)} ({_fmt(actual, '{:.1f}')}x / {_fmt(ideal, '{:.1f}')}x)"


def table1(records: list[dict], data: str = "ptb", cells=("revgru", "revlstm"), limits=LIMITS_DEFAULT):
    """Table-1-shaped DataFrame: one row per reversible model (depth x cell), columns = limits + baseline.

    Cells: "valid ppl (actual saving x / ideal saving x)"; baseline: the ordinary cell's valid ppl."""
    import pandas as pd

    recs = [r for r in records if r["data"] == data]
    depths = sorted({r["num_layers"] for r in recs}) or [1]
    rows = []
    for L in depths:
        for c in cells:
            row = {"model": f"{L}-layer {CELL_LABEL[c]}"}
            for k in limits:
                hit = [r for r in recs if r["cell"] == c and r["num_layers"] == L and r["max_forget_bits"] == k]
                row[limit_label(k)] = (_cell_text(hit[0]["valid_ppl"], hit[0]["saving_actual"], hit[0]["saving_ideal"])
                                       if hit else "not run")
            base = [r for r in recs if r["cell"] == BASELINE_OF[c] and r["num_layers"] == L]
            row["baseline"] = (f"{CELL_LABEL[BASELINE_OF[c]]} {_fmt(base[0]['valid_ppl'])}" if base else
                               f"{CELL_LABEL[BASELINE_OF[c]]} not run")
            rows.append(row)
    return pd.DataFrame(rows)


def paper_table1():
    """The paper's Table 1 as recalled in PAPER.md (UNVERIFIED), same shape as :func:`table1`."""
    import pandas as pd

    rows = []
    for L, c, cells, base_cell, base in PAPER_TABLE1:
        row = {"model": f"{L}-layer {CELL_LABEL[c]}"}
        for k in LIMITS_DEFAULT:
            ppl, saving = cells[k]
            row[limit_label(k)] = f"{ppl:.1f} ({saving:.1f})"
        row["baseline"] = f"{CELL_LABEL[base_cell]} {base:.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def relative_table(records: list[dict]):
    """Each reversible run next to its ordinary counterpart (same data, depth): perplexity ratio and savings."""
    import pandas as pd

    rows = []
    for r in records:
        if r["cell"] not in BASELINE_OF:
            continue
        base = [b for b in records if b["cell"] == BASELINE_OF[r["cell"]] and b["data"] == r["data"]
                and b["num_layers"] == r["num_layers"]]
        b = base[0] if base else None
        rows.append({
            "data": r["data"], "model": r["model"], "limit": r["limit"], "valid_ppl": r["valid_ppl"],
            "baseline": b["model"] if b else None, "baseline_valid_ppl": b["valid_ppl"] if b else None,
            "valid_ppl_ratio": r["valid_ppl"] / b["valid_ppl"] if b else None,
            "test_ppl": r["test_ppl"], "baseline_test_ppl": b["test_ppl"] if b else None,
            "test_ppl_ratio": r["test_ppl"] / b["test_ppl"] if b else None,
            "saving_actual": r["saving_actual"], "saving_ideal": r["saving_ideal"],
            "allocator_saving": r["allocator_saving"],
        })
    return pd.DataFrame(rows)


def records_frame(records: list[dict]):
    import pandas as pd

    cols = ["data", "model", "limit", "method", "epochs", "valid_ppl", "test_ppl", "saving_actual", "saving_ideal",
            "buffer_efficiency", "allocator_saving", "bptt_peak_bytes", "method_peak_bytes", "peak_meter",
            "memory_segment", "train_ppl_last_epoch", "parameters", "layer_sizes", "batch_size", "bptt",
            "train_minutes", "run"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in records], columns=cols)


def write_records(records: list[dict], out_dir) -> tuple[Path, Path]:
    """``runs.json`` (list of records) and ``runs.csv`` in ``out_dir``."""
    from revbench.tasks.lm.training import atomic_write_json
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(records, out / "runs.json")
    df = records_frame(records)
    tmp = out / ".runs.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "runs.csv")
    return out / "runs.json", out / "runs.csv"


# ------------------------------------------------------------------------------------------ LM figures/HTML
def fig_lm(records: list[dict], data: str = "ptb"):
    """Two panels: validation perplexity against the forgetting limit (ordinary baselines dashed), and the
    paper-style savings (actual solid, ideal dotted) against the limit. None if no reversible run."""
    from matplotlib.figure import Figure

    recs = [r for r in records if r["data"] == data]
    rev = [r for r in recs if r["cell"] in FORGETTING_CELLS]
    if not rev:
        return None
    xs = {k: i for i, k in enumerate(LIMITS_DEFAULT)}
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    colours = {"revgru": "#2d5fa8", "revlstm": "#c0392b"}
    for (c, L) in sorted({(r["cell"], r["num_layers"]) for r in rev}):
        pts = sorted([r for r in rev if r["cell"] == c and r["num_layers"] == L], key=lambda r: xs[r["max_forget_bits"]])
        x = [xs[r["max_forget_bits"]] for r in pts]
        col = colours.get(c, None)
        lab = f"{L}-layer {CELL_LABEL[c]}"
        ax1.plot(x, [r["valid_ppl"] for r in pts], "o-", color=col, label=lab)
        base = [b for b in recs if b["cell"] == BASELINE_OF[c] and b["num_layers"] == L]
        if base:
            ax1.axhline(base[0]["valid_ppl"], color=col, ls="--", lw=1,
                        label=f"{L}-layer {CELL_LABEL[BASELINE_OF[c]]} (baseline)")
        ax2.plot(x, [r["saving_actual"] or float("nan") for r in pts], "o-", color=col, label=f"{lab}: actual")
        ax2.plot(x, [r["saving_ideal"] or float("nan") for r in pts], "s:", color=col, label=f"{lab}: ideal")
        alloc = [(xx, r["allocator_saving"]) for xx, r in zip(x, pts) if r["allocator_saving"]]
        if alloc:
            ax2.plot([a for a, _ in alloc], [b for _, b in alloc], "^--", color=col, alpha=0.6,
                     label=f"{lab}: allocator (whole step)")
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(LIMITS_DEFAULT)), [limit_label(k) for k in LIMITS_DEFAULT])
        ax.set_xlabel("max forgetting per unit per step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel(f"{data} validation perplexity")
    ax1.set_title("perplexity (lower is better)")
    ax2.set_ylabel("memory saving (x, higher is better)")
    ax2.set_title("hidden-state memory saving vs BPTT")
    fig.tight_layout()
    return fig


def _page(title: str, subtitle: str, sections: list[tuple[str, str]]) -> str:
    from revbench.report.page import CSS, _esc, check_self_contained

    toc = "".join(f'<li><a href="#s{i}">{_esc(t)}</a></li>' for i, (t, _) in enumerate(sections))
    body = "".join(f'<section id="s{i}"><h2>{_esc(t)}</h2>{h}</section>' for i, (t, h) in enumerate(sections))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>"
            f'<header class="top"><h1>{_esc(title)}</h1><p class="sub">{_esc(subtitle)}</p></header>'
            f'<nav class="toc"><strong>Contents</strong><ol>{toc}</ol></nav>{body}'
            "<footer>Generated by revbench reproduce. One self-contained file: figures are embedded PNG, "
            "no scripts, nothing loaded from the network.</footer></main></body></html>\n")
    check_self_contained(page, title)
    return page


def _paragraphs(texts) -> str:
    return "".join(f"<p>{html.escape(t)}</p>" for t in texts)


def _env_html(env: dict) -> str:
    import pandas as pd
    from revbench.report.page import dataframe_to_html_table

    if not env:
        return ""
    df = pd.DataFrame([{"field": k, "value": str(v)} for k, v in env.items()])
    return dataframe_to_html_table(df, css_class="data kv", mono=("value",))


def lm_sections(records: list[dict], meta: dict | None = None) -> list[tuple[str, str]]:
    """HTML fragments (title, html) of the LM reproduction, for a standalone page or
    ``revbench.report.page.render_report(..., extra_sections=...)``."""
    from revbench.report.page import dataframe_to_html_table, figure_html, note_html

    meta = meta or {}
    sections = []
    datasets = sorted({r["data"] for r in records}) or ["ptb"]
    for data in datasets:
        t = table1(records, data)
        frag = dataframe_to_html_table(
            t, caption=f"{data}: validation perplexity (paper-style memory saving: actual x / ideal x), ours")
        frag += note_html("Saving = bits of the hidden (and cell) states BPTT stores (32 bits per value per step) "
                          "divided by the bits of the information buffer: 'actual' counts the words our buffer "
                          "allocated at its peak (64-bit live part + 32-bit word chunks), 'ideal' the sum of "
                          "-log2(z) over the forget gates. Averaged over the last epoch (ratio of sums).")
        frag += dataframe_to_html_table(paper_table1(), caption="Paper, PTB (Table 1 as recalled: valid ppl "
                                                                 "(saving)) - as recalled, unverified")
        frag += note_html(PAPER_NOTE)
        sections.append((f"Table 1 shape: {data}", frag))
    rel = relative_table(records)
    if len(rel):
        frag = dataframe_to_html_table(
            rel, formats={c: "{:.2f}" for c in ("valid_ppl", "baseline_valid_ppl", "test_ppl", "baseline_test_ppl")}
            | {c: "{:.3f}" for c in ("valid_ppl_ratio", "test_ppl_ratio")}
            | {c: "{:.2f}" for c in ("saving_actual", "saving_ideal", "allocator_saving")},
            caption="Reversible models against their ordinary counterparts (ratio = reversible / ordinary "
                    "perplexity; 1.00 = equal)")
        frag += note_html("allocator_saving: one training step of the SAME trained model on the same segment with "
                          "the same dropout masks, metered with revbench.measure.memory (live-tensor meter on CPU, CUDA "
                          "allocator on a GPU): peak bytes of 'bptt' / peak bytes of 'reversible'. It includes "
                          "everything a step allocates (gates, logits of a step, the buffer), not only the "
                          "hidden states, so it is smaller than the paper-style saving.")
        sections.append(("Reversible vs ordinary", frag))
    for data in datasets:
        fig = fig_lm(records, data)
        if fig is not None:
            sections.append((f"Figure: {data}", figure_html(
                fig, f"{data}: validation perplexity and memory saving against the forgetting limit.",
                "perplexity of the best epoch on the validation split (eval mode, forward only); savings as in "
                "the table; allocator saving as in 'Reversible vs ordinary'.",
                f"{data} perplexity and saving against the forgetting limit")))
    df = records_frame(records)
    if len(df):
        sections.append(("All runs", dataframe_to_html_table(
            df, formats={"valid_ppl": "{:.2f}", "test_ppl": "{:.2f}", "saving_actual": "{:.2f}",
                         "saving_ideal": "{:.2f}", "buffer_efficiency": "{:.2f}", "allocator_saving": "{:.2f}",
                         "train_ppl_last_epoch": "{:.1f}", "train_minutes": "{:.1f}",
                         "bptt_peak_bytes": "{:,.0f}", "method_peak_bytes": "{:,.0f}", "parameters": "{:,.0f}"},
            mono=("run",), scroll=True)))
    if meta.get("differences"):
        sections.append(("Differences from the paper", _paragraphs(meta["differences"])))
    how = []
    if meta.get("command"):
        how.append(f"<p>Command: <code>{html.escape(meta['command'])}</code></p>")
    if meta.get("config"):
        how.append(f"<p>Configuration <code>{html.escape(meta['config_name'] or '')}</code>: "
                   f"<code>{html.escape(json.dumps(meta['config'], sort_keys=True))}</code></p>")
    if meta.get("statuses"):
        import pandas as pd
        how.append(dataframe_to_html_table(pd.DataFrame(meta["statuses"]), caption="grid runs"))
    how.append(_env_html(meta.get("environment") or {}))
    sections.append(("How these numbers were made", "".join(how)))
    return sections


def lm_differences(records: list[dict], cfg_dict: dict | None) -> list[str]:
    """Plain statements of where this reproduction differs from the paper and why."""
    c = cfg_dict or {}
    out = []
    if c:
        sizes = c.get("emb_size"), c.get("hidden_size"), c.get("batch_size"), c.get("bptt"), c.get("epochs")
        out.append(f"Model and schedule: embedding {sizes[0]}, hidden {sizes[1]} (tied), batch {sizes[2]}, BPTT "
                   f"{sizes[3]}, {sizes[4]} epochs on the CPU, against the paper's embedding 650, hidden 1150/650, "
                   "batch 20, BPTT 70 and training to convergence (tens of epochs) on a GPU. So our perplexities are "
                   "far higher than the paper's; only the comparison between models trained the same way means "
                   "something here.")
        drops = [c.get(k) for k in ("dropout_emb", "dropout_in", "dropout_h", "dropout_out", "weight_drop")]
        out.append(f"Regularisation: dropouts emb/in/between/out/weight-drop = {drops} (paper 0.1/0.4/0.3/0.4/0.5); "
                   "a run of a few epochs is limited by optimisation, not over-fitting, so heavy dropout would only "
                   "slow it down. AWD-LSTM's activation regularisers and averaged SGD are not used (lr / 4 on a "
                   "plateau instead, as PAPER.md describes).")
        out.append(f"Evaluation: validation and test batch {c.get('eval_batch_size')}/{c.get('test_batch_size')} "
                   f"with segments of {c.get('bptt')} steps (AWD evaluates the test set with batch 1).")
        out.append(f"Segment length {c.get('bptt')} instead of 70: the buffer's fixed part (one 64-bit live word "
                   "per unit and batch element, plus whole 32-bit word chunks) is amortised over fewer steps, so the "
                   "'actual' saving is lower than at 70 steps; the 'ideal' saving does not depend on the length.")
    out.append("Depth: one layer only (the paper also trains 2 and 3 layers).")
    out.append("Savings: the paper's buffer pushes whole [batch, units] int64 chunks and one flag per step; ours is "
               "a streaming buffer (per-unit words), so 'actual' savings are not comparable one to one. The "
               "paper-style figures count hidden/cell states only; the allocator saving counts every byte of a "
               "training step, which is why it is smaller.")
    return out


def write_lm_report(out_dir, records: list[dict], meta: dict) -> dict:
    """Write runs.json/csv, table1.html and README.md into ``out_dir``. Returns the paths."""
    from revbench.report.page import atomic_write_text

    out = Path(out_dir)
    j, c = write_records(records, out)
    sections = lm_sections(records, meta)
    title = "revbench: language modelling reproduction (MacKay et al. 2018, Table 1)"
    sub = (f"{len(records)} finished runs; config {meta.get('config_name')}; "
           f"{time.strftime('%Y-%m-%d %H:%M', time.localtime())}")
    atomic_write_text(out / "table1.html", _page(title, sub, sections))
    atomic_write_text(out / "README.md", lm_readme(records, meta))
    return {"json": j, "csv": c, "html": out / "table1.html", "readme": out / "README.md"}


def _md_table(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                cells.append("n/a" if not math.isfinite(v) else f"{v:.2f}")
            elif v is None:
                cells.append("n/a")
            else:
                cells.append(str(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lm_readme(records: list[dict], meta: dict) -> str:
    env = meta.get("environment") or {}
    parts = ["# Language modelling reproduction (Table 1 of MacKay et al. 2018)", "",
             "Generated by `revbench reproduce lm`; `table1.html` is the same content as one self-contained page, "
             "`runs.csv` / `runs.json` hold one record per finished run, `runs/<name>/` each run's log "
             "(`log.jsonl`), checkpoint and `result.json`.", ""]
    if meta.get("command"):
        parts += ["## How it was run", "", "```", meta["command"], "```", ""]
    if meta.get("duration_min") is not None:
        parts.append(f"Wall time of this invocation: {meta['duration_min']:.1f} min (finished runs are skipped, so a "
                     "rerun that only rebuilds the report takes seconds).")
    if records:
        parts.append(f"Training time summed over the {len(records)} finished runs: "
                     f"{sum(r['train_minutes'] for r in records):.1f} min.")
        starts = [r["started_at"] for r in records if r.get("started_at")]
        ends = [r["finished_at"] for r in records if r.get("finished_at")]
        if starts and ends:
            fmt = "%Y-%m-%d %H:%M UTC"
            parts.append(f"Runs trained from {time.strftime(fmt, time.gmtime(min(starts)))} to "
                         f"{time.strftime(fmt, time.gmtime(max(ends)))} "
                         f"({(max(ends) - min(starts)) / 60:.1f} min of wall time).")
    parts.append(f"Machine: {env.get('device_name')} ({env.get('cpu_count')} CPUs), {env.get('platform')}, "
                 f"torch {env.get('torch_version')}, Python {env.get('python_version')}, commit {env.get('commit')}.")
    parts.append("")
    if meta.get("statuses"):
        parts += ["Grid runs:", ""]
        parts += [f"- `{s['run']}`: {s['status']}" for s in meta["statuses"]]
        parts.append("")
    for data in sorted({r["data"] for r in records}):
        parts += [f"## {data}: ours, valid ppl (actual saving x / ideal saving x)", "", _md_table(table1(records, data)), ""]
    parts += ["## Paper (Table 1, PTB, as recalled in PAPER.md, unverified)", "", _md_table(paper_table1()), "",
              PAPER_NOTE, ""]
    rel = relative_table(records)
    if len(rel):
        parts += ["## Reversible vs ordinary", "", _md_table(rel), ""]
    if records:
        parts += ["## All finished runs", "", _md_table(records_frame(records).drop(columns=["run"])), ""]
    if meta.get("differences"):
        parts += ["## Where this differs from the paper, and why", ""] + [f"- {d}" for d in meta["differences"]] + [""]
    return "\n".join(parts)


# ========================================================================================== repeat task
@dataclass
class RepeatSettings:
    """The repeat-task experiment. Chosen so that the information of a sequence, (T-1) log2(symbols) bits,
    outgrows a small hidden state (32 units) within the lengths tried, while one symbol (3 bits) is easy."""
    symbols: int = 8
    hidden_size: int = 32
    emb_size: int = 32
    batch_size: int = 32
    steps: int = 400
    lr: float = 1e-2            # Adam
    clip: float = 1.0
    eval_sequences: int = 512
    max_forget_bits: int | None = 3
    seed: int = 0


REPEAT_MODELS = ("gru", "nf-revgru", "revgru", "lstm", "nf-revlstm", "revlstm")
REPEAT_LENGTHS = (3, 5, 10, 20, 40, 80)


def repeat_label(cell: str, k) -> str:
    if cell in FORGETTING_CELLS:
        return f"{CELL_LABEL[cell]} ({'no limit' if k is None else f'k={k}'})"
    return CELL_LABEL[cell]


def _repeat_pass(model, inputs, grad: bool):
    """Run the model over (T, B) inputs from a zero state; logits (T, B, V) of every step."""
    import torch

    from revbench.models.segment import Segment

    seg = Segment(model, inputs, inputs)        # the segment's own loss is not used (targets = any valid ids)
    carry = seg.start(model.init_state(inputs.size(1)))
    out = []
    with torch.set_grad_enabled(grad):
        for t in range(seg.T):
            carry, _ = seg.advance(t, carry, grad=grad)
            out.append(model.decoder(model.cells[-1].output(carry.layers[-1].floats)))
    return seg, torch.stack(out)


def train_repeat(cell: str, seq_len: int, s: RepeatSettings) -> dict:
    """Train one model on the repeat task at one length; accuracy on fresh sequences.

    Training: Adam, ``steps`` batches of fresh random sequences, each from a zero state, loss = mean
    cross-entropy over steps 1..T-1 (step 0 has nothing to repeat), backpropagated through the whole
    sequence by autograd (for reversible cells this gives the same gradients as reversible backprop:
    straight-through through the fixed-point updates). Evaluation: eval mode, ``eval_sequences`` fresh
    sequences, accuracy = argmax == target over steps 1..T-1 (``revbench.tasks.data.repeat_task_accuracy``).
    """
    import torch
    import torch.nn.functional as F

    from revbench.tasks.data import REPEAT_IGNORE_INDEX, repeat_task, repeat_task_accuracy
    from revbench.models.lm import RNNLM

    torch.manual_seed(s.seed)
    model = RNNLM(s.symbols, s.emb_size, s.hidden_size, 1, cell=cell,
                  max_forget_bits=s.max_forget_bits if cell in FORGETTING_CELLS else None, tie_weights=False)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    g = torch.Generator().manual_seed(s.seed + 1)
    t0 = time.perf_counter()
    losses = []
    model.train()
    for _ in range(s.steps):
        x, y = repeat_task(s.symbols, seq_len, s.batch_size, generator=g)
        opt.zero_grad()
        seg, logits = _repeat_pass(model, x, grad=True)
        loss = F.cross_entropy(logits.reshape(-1, s.symbols), y.reshape(-1), ignore_index=REPEAT_IGNORE_INDEX)
        loss.backward()
        seg.finish()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
        opt.step()
        losses.append(float(loss.detach()))
    train_s = time.perf_counter() - t0
    model.eval()
    ge = torch.Generator().manual_seed(s.seed + 7919)
    with torch.no_grad():
        x, y = repeat_task(s.symbols, seq_len, s.eval_sequences, generator=ge)
        _, logits = _repeat_pass(model, x, grad=False)
        acc = repeat_task_accuracy(logits, y)
        hits = (logits.argmax(-1) == y)[1:].float()              # (T-1, B)
        q = max(1, hits.size(0) // 4)
        acc_first, acc_last = float(hits[:q].mean()), float(hits[-q:].mean())
    tail = losses[-max(1, len(losses) // 10):]
    return {"model": repeat_label(cell, s.max_forget_bits), "cell": cell, "seq_len": seq_len, "accuracy": acc,
            "accuracy_first_quarter": acc_first, "accuracy_last_quarter": acc_last,
            "final_train_loss": sum(tail) / len(tail), "chance": 1.0 / s.symbols,
            "sequence_bits": (seq_len - 1) * math.log2(s.symbols), "state_units": s.hidden_size,
            "max_forget_bits": s.max_forget_bits if cell in FORGETTING_CELLS else None,
            "steps": s.steps, "batch_size": s.batch_size, "symbols": s.symbols, "train_s": train_s}


def run_repeat(lengths=REPEAT_LENGTHS, models=REPEAT_MODELS, settings: RepeatSettings | None = None,
               out_dir=None, say=print) -> list[dict]:
    """Train every (model, length); returns rows (and appends each to ``<out_dir>/repeat.csv.partial``)."""
    s = settings or RepeatSettings()
    for c in models:
        if c not in CELL_LABEL:
            raise ValueError(f"unknown cell {c!r}; choose from {', '.join(CELL_LABEL)}")
    for T in lengths:
        if T < 2:
            raise ValueError(f"sequence lengths must be >= 2 (step 0 has nothing to repeat), got {T}")
    rows = []
    for c in models:
        for T in lengths:
            row = train_repeat(c, T, s)
            rows.append(row)
            say(f"  {row['model']:<16} T={T:<4} accuracy {row['accuracy']:.3f}  (first/last quarter "
                f"{row['accuracy_first_quarter']:.2f}/{row['accuracy_last_quarter']:.2f})  {row['train_s']:.1f}s")
    return rows


def fig_repeat(rows: list[dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 4.6))
    ax = fig.subplots()
    from matplotlib.ticker import NullFormatter

    # (colour, marker, line style, marker size): hollow markers of different sizes keep models that overlap
    # (every model at accuracy 1.0) visible
    styles = {"gru": ("#2d5fa8", "o", "-", 11), "revgru": ("#2d5fa8", "s", "--", 7), "nf-revgru": ("#2d5fa8", "x", ":", 7),
              "lstm": ("#c0392b", "o", "-", 15), "revlstm": ("#c0392b", "s", "--", 4), "nf-revlstm": ("#c0392b", "x", ":", 7)}
    for model in dict.fromkeys(r["model"] for r in rows):
        pts = sorted([r for r in rows if r["model"] == model], key=lambda r: r["seq_len"])
        col, mk, ls, size = styles.get(pts[0]["cell"], (None, "o", "-", 7))
        ax.plot([r["seq_len"] for r in pts], [r["accuracy"] for r in pts], marker=mk, ls=ls, color=col, label=model,
                markersize=size, markerfacecolor="none", markeredgewidth=1.4)
    if rows:
        ax.axhline(rows[0]["chance"], color="grey", lw=1, ls="-.", label=f"chance (1/{rows[0]['symbols']})")
    ax.set_xscale("log")
    lengths = sorted({r["seq_len"] for r in rows})
    ax.set_xticks(lengths, [str(t) for t in lengths])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("test accuracy (steps 1..T-1)")
    ax.set_title("repeat task: output the previous input")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


REPEAT_WHY = [
    "Why no-forgetting models must fail: a model that solves the task outputs x_t at step t+1, i.e. x_t is a "
    "function of h_(t+1). Run an exactly reversible model backwards from its final state h_T and its last input "
    "x_T: the output read from h_T gives x_(T-1); reversing step T with x_T gives h_(T-1); its output gives "
    "x_(T-2); and so on down to x_0. So h_T alone (with x_T) determines the whole input sequence: (T-1) log2(V) "
    "bits must fit in a state of fixed size. The no-forgetting updates are additive (h <- h + f(x, other half)), "
    "hence volume-preserving: they cannot contract the state to drop the old symbol, so the 'current symbol' "
    "must stay readable while everything before it is still packed into the same units.",
    "How the experiment makes this visible: the state is small (32 units) relative to the sequence's information "
    "(3 bits per step with 8 symbols, so 30 bits at T=11 and 237 bits at T=80), every sequence starts from a zero "
    "state (so nothing but the inputs is in h), and the loss and accuracy count every step 1..T-1 (a model cannot "
    "pass by solving only the first few steps). Ordinary GRU/LSTM need only the last symbol (3 bits); the "
    "buffered RevGRU/RevLSTM forget into the information buffer, so their h also needs only the last symbol.",
    "Caveat: in exact arithmetic a 32-unit state with 23 fractional bits per unit could hold hundreds of bits, "
    "so the failure is of what a smooth network can learn to write and read back, not a counting bound; every "
    "model gets the same training budget (same steps, batch, optimiser). Where the curve drops depends on that "
    "budget and on the state size: more training steps or more units move the failure of the no-forgetting "
    "models to longer sequences (at moderate lengths they are partly a matter of slower learning), while the "
    "argument says that for a state of any fixed size the failure must come at some length.",
]


def repeat_sections(rows: list[dict], meta: dict | None = None) -> list[tuple[str, str]]:
    import pandas as pd

    from revbench.report.page import dataframe_to_html_table, figure_html

    meta = meta or {}
    s = meta.get("settings") or {}
    secs = [("Accuracy against sequence length", figure_html(
        fig_repeat(rows), "Repeat task: accuracy of each model against the sequence length (log axis). Models "
                          "drawn on top of each other at 1.0 are told apart by marker size.",
        f"fresh random sequences of {s.get('symbols')} symbols; each point is a separate model trained "
        f"{s.get('steps')} Adam steps (batch {s.get('batch_size')}) at that length from a zero state, then tested "
        f"on {s.get('eval_sequences')} new sequences; accuracy over steps 1..T-1.",
        "accuracy against sequence length per model"))]
    df = pd.DataFrame(rows)
    if len(df):
        wide = df.pivot_table(index="model", columns="seq_len", values="accuracy", sort=False)
        wide.columns = [f"T={c}" for c in wide.columns]
        secs.append(("Accuracy table", dataframe_to_html_table(
            wide.reset_index(), formats={c: "{:.3f}" for c in wide.columns},
            caption="test accuracy (steps 1..T-1); chance = 1/symbols")))
        secs.append(("All runs", dataframe_to_html_table(
            df, formats={"accuracy": "{:.3f}", "accuracy_first_quarter": "{:.3f}", "accuracy_last_quarter": "{:.3f}",
                         "final_train_loss": "{:.3f}", "chance": "{:.3f}", "sequence_bits": "{:.0f}",
                         "train_s": "{:.1f}"}, scroll=True)))
    secs.append(("Why", _paragraphs(REPEAT_WHY)))
    how = []
    if meta.get("command"):
        how.append(f"<p>Command: <code>{html.escape(meta['command'])}</code></p>")
    if s:
        how.append(f"<p>Settings: <code>{html.escape(json.dumps(s, sort_keys=True))}</code></p>")
    if meta.get("duration_min") is not None:
        how.append(f"<p>Wall time: {meta['duration_min']:.1f} min.</p>")
    how.append(_env_html(meta.get("environment") or {}))
    secs.append(("How these numbers were made", "".join(how)))
    return secs


def write_repeat_report(out_dir, rows: list[dict], meta: dict) -> dict:
    import pandas as pd

    from revbench.report.page import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    tmp = out / ".repeat.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "repeat.csv")
    from revbench.tasks.lm.training import atomic_write_json
    atomic_write_json({"rows": rows, "meta": meta}, out / "repeat.json")
    page = _page("revbench: the repeat task (MacKay et al. 2018, section 4)",
                 f"{len(rows)} runs; {time.strftime('%Y-%m-%d %H:%M', time.localtime())}", repeat_sections(rows, meta))
    atomic_write_text(out / "repeat.html", page)
    atomic_write_text(out / "README.md", repeat_readme(rows, meta))
    return {"csv": out / "repeat.csv", "html": out / "repeat.html", "readme": out / "README.md"}


def load_repeat(out_dir) -> tuple[list[dict], dict]:
    """Rows and meta of an earlier ``run_repeat`` (``repeat.json``), to rebuild the report without training."""
    path = Path(out_dir) / "repeat.json"
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist: run `revbench reproduce repeat` first")
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["rows"], data["meta"]


def repeat_readme(rows: list[dict], meta: dict) -> str:
    import pandas as pd

    env = meta.get("environment") or {}
    parts = ["# The repeat task (MacKay et al. 2018, section 4)", "",
             "Generated by `revbench reproduce repeat`: `repeat.csv` (one row per model and length), `repeat.html` "
             "(figure and tables, self-contained).", ""]
    if meta.get("command"):
        parts += ["```", meta["command"], "```", ""]
    if meta.get("duration_min") is not None:
        parts.append(f"Wall time: {meta['duration_min']:.1f} min.")
    parts += [f"Machine: {env.get('device_name')} ({env.get('cpu_count')} CPUs), torch {env.get('torch_version')}.",
              "", f"Settings: `{json.dumps(meta.get('settings') or {}, sort_keys=True)}`", ""]
    df = pd.DataFrame(rows)
    if len(df):
        wide = df.pivot_table(index="model", columns="seq_len", values="accuracy", sort=False)
        wide.columns = [f"T={c}" for c in wide.columns]
        parts += ["## Test accuracy against sequence length", "", _md_table(wide.reset_index()), "",
                  f"Chance: {1.0 / df['symbols'].iloc[0]:.3f}.", ""]
    parts += ["## Why", ""] + [t + "\n" for t in REPEAT_WHY]
    return "\n".join(parts)


__all__ = ["LMRun", "lm_grid", "run_lm_grid", "lm_records", "table1", "paper_table1", "relative_table",
           "write_lm_report", "lm_sections", "RepeatSettings", "train_repeat", "run_repeat", "write_repeat_report",
           "repeat_sections", "PAPER_TABLE1", "parse_limit", "limit_label"]
