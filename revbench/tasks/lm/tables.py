"""The Table-1-shaped tables of the LM grid: ours (``table1``), the paper's as recalled (``paper_table1``),
and each reversible run against its ordinary counterpart (``relative_table``)."""
from __future__ import annotations

import math

from revbench.tasks.cells import BASELINE_OF, CELL_LABEL, LIMITS_DEFAULT, limit_label

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
