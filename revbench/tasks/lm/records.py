"""One flat record per finished run of the LM grid, read from its ``result.json`` (``lm_records``), as a
DataFrame and as ``runs.json`` / ``runs.csv``."""
from __future__ import annotations

import json
import os
from pathlib import Path

from revbench.tasks.cells import CELL_LABEL, FORGETTING_CELLS, limit_label


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
        "method": result["method"], "epochs": result["epochs"], "lr": cfg.get("lr"), "valid_ppl": result["valid_ppl"],
        "test_ppl": result["test_ppl"], "saving_actual": result.get("saving_actual"),
        "saving_ideal": result.get("saving_ideal"),
        "buffer_efficiency": (result["saving_ideal"] / result["saving_actual"]
                              if result.get("saving_actual") and result.get("saving_ideal") else None),
        "allocator_saving": result.get("allocator_saving"),
        "bptt_peak_bytes": bptt_peak, "method_peak_bytes": (method_fig or {}).get("peak_bytes"),
        "peak_meter": (fm.get("bptt") or {}).get("peak_bytes_meter"),
        "memory_segment": f"T={fm['segment']['seq_len']} B={fm['segment']['batch_size']}" if fm.get("segment") else None,
        "train_ppl_last_epoch": last.get("train_ppl"), "parameters": result.get("parameters"),
        "vocab_size": result.get("vocab_size"),
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


def training_curve(log_path: Path) -> dict:
    """The savings of a run through its training, from its log.jsonl: ``paper`` = [(epochs, actual, ideal)] per
    log interval (the interval's steps, ratio of sums), ``allocator`` = [(epochs, allocator saving)] from its
    ``"memory"`` records (0 = before training, e = after epoch e). Epochs are fractional: epoch e's step s of S
    is e - 1 + s / S. Empty lists for a log that has none (ordinary cells, a run older than these records); a
    line that is not JSON is skipped. ``max_train_ppl``: the highest training perplexity of a log interval (None
    without intervals), which shows a run that diverged on the way even where it recovered."""
    paper, alloc, ppls = [], [], []
    try:
        lines = log_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if rec.get("event") == "progress" and isinstance(rec.get("ppl"), (int, float)):
            ppls.append(rec["ppl"])
        if rec.get("event") == "progress" and rec.get("saving_actual") and rec.get("steps"):
            paper.append((rec["epoch"] - 1 + rec["step"] / rec["steps"], rec["saving_actual"], rec.get("saving_ideal")))
        elif rec.get("event") == "memory" and rec.get("allocator_saving"):
            alloc.append((rec["epoch"] - 1 if rec.get("global_step") == 0 else rec["epoch"], rec["allocator_saving"]))
    return {"paper": paper, "allocator": alloc, "max_train_ppl": max(ppls) if ppls else None}


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
        rec["training_curve"] = training_curve(res.parent / "log.jsonl")
        recs.append(rec)
    order = {c: i for i, c in enumerate(("gru", "revgru", "nf-revgru", "lstm", "revlstm", "nf-revlstm"))}
    lim = {2: 0, 3: 1, 5: 2, None: 9}
    recs.sort(key=lambda r: (r["data"], r["num_layers"], order.get(r["cell"], 99),
                             lim.get(r["max_forget_bits"], r["max_forget_bits"] or 0)))
    return recs


def records_frame(records: list[dict]):
    import pandas as pd

    cols = ["data", "model", "limit", "method", "epochs", "lr", "valid_ppl", "test_ppl", "saving_actual", "saving_ideal",
            "buffer_efficiency", "allocator_saving", "bptt_peak_bytes", "method_peak_bytes", "peak_meter",
            "memory_segment", "train_ppl_last_epoch", "parameters", "layer_sizes", "batch_size", "bptt",
            "train_minutes", "run"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in records], columns=cols)


def write_records(records: list[dict], out_dir) -> tuple[Path, Path]:
    """``runs.json`` (list of records) and ``runs.csv`` in ``out_dir``."""
    from revbench.tasks.jsonio import json_default
    from revbench.util.atomic import atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(records, out / "runs.json", default=json_default)
    df = records_frame(records)
    tmp = out / ".runs.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "runs.csv")
    return out / "runs.json", out / "runs.csv"
