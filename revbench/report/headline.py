"""The report's headline: one short sentence per group of configurations, answering "how much activation memory
does each method save against bptt, and what does it cost in time?" and "how does it compare with the fused kernel?".

Groups: each paper-sized setting first (the paper's language model: emb = hidden = 650, batch 20, vocab 10000), then
one group per cell family (LSTM: lstm, revlstm, nf-revlstm; GRU: gru, revgru, nf-revgru; any other cell by itself).
The numbers are the headline table's (`revbench.report.frontier.headline_points`, each setting at its largest
seq_len, medians over pooled configurations): `peak_fraction_of_bptt` and `time_ratio_vs_bptt` (bptt measured in the
same run), and for the fused kernel the records' own `fused_peak_ratio` / `fused_time_ratio`; a group spanning
several settings (or forgetting limits) gives the range over them.
"""
from __future__ import annotations

import math

from revbench.report.format import esc, isna, method_order, short_labels
from revbench.report.frontier import headline_points

REFERENCE_METHODS = ("bptt",)
MAX_METHODS = 6   # per sentence; beyond that only the Pareto-optimal methods are named (the table has all)
PAPER_SIZES = {"hidden_size": 650, "emb_size": 650, "batch_size": 20, "vocab_size": 10000}   # MacKay et al. 2018


def _family(label) -> str:
    return str(label).split("(")[0].strip()


def fused_kernel_name(cell) -> str:
    return "nn.LSTM" if "lstm" in str(cell) else "nn.GRU"


def _ok(value) -> bool:
    return not isna(value) and math.isfinite(float(value))


def _span(values, fmt) -> str:
    """'1.23' or '1.23–1.45' (the range of the finite values)."""
    vals = [float(v) for v in values if _ok(v)]
    lo, hi = sorted((fmt(min(vals)), fmt(max(vals))), key=float)
    return lo if lo == hi else f"{lo}–{hi}"


def _pct(v) -> str:
    return f"{100 * (1 - v):.1f}"


def _x(v) -> str:
    return f"{v:.2f}"


def _memory_clause(name, peaks, times, first: bool, whom: str) -> str:
    """'reversible saves 95.2–97.6 % of bptt's activation memory at 1.69–1.83× its step time' (first method), then
    'checkpoint 89.9 % at 1.31×'; a method holding more than the reference: 'bptt-fused holds 2.85× at 0.54×'."""
    if max(float(p) for p in peaks) < 1:
        saved = f"{_span(peaks, _pct)} %"
        if first:
            return f"{name} saves {saved} of {whom} activation memory at {_span(times, _x)}× its step time"
        return f"{name} {saved} at {_span(times, _x)}×"
    if first:
        return f"{name} holds {_span(peaks, _x)}× {whom} activation memory at {_span(times, _x)}× its step time"
    return f"{name} holds {_span(peaks, _x)}× the memory at {_span(times, _x)}× the time"


def _setting_info(df):
    """setting label -> its first row (cell and sizes)."""
    from revbench.report.plotting import plot_frame

    d = plot_frame(df)
    return {s: g.iloc[0] for s, g in d.groupby("setting", sort=False)}, d


def _is_paper_sized(row) -> bool:
    return all(k in row and not isna(row[k]) and int(row[k]) == v for k, v in PAPER_SIZES.items())


def _groups(pts, info):
    """[(group title, settings)] in headline order: paper-sized settings one by one, then one per cell family."""
    paper = [s for s in sorted(pts["setting"].unique()) if _is_paper_sized(info[s])]
    fams: dict = {}
    for s in sorted(pts["setting"].unique()):
        if s in paper:
            continue
        cell = str(info[s]["cell"])
        fam = "LSTM" if "lstm" in cell else "GRU" if "gru" in cell else cell
        fams.setdefault(fam, []).append(s)
    out = [(f"Paper-sized {s}", [s]) for s in paper]
    for fam, settings in fams.items():
        cells = sorted({str(info[s]["cell"]) for s in settings})
        sizes = sorted({int(info[s]["hidden_size"]) for s in settings if not isna(info[s]["hidden_size"])})
        size = f"H{sizes[0]}" if len(sizes) == 1 else f"H{sizes[0]}–{sizes[-1]}"
        title = (f"{fam} family ({', '.join(cells)}; {size}; {len(settings)} setting{'s' if len(settings) > 1 else ''})"
                 if fam in ("LSTM", "GRU") else f"{fam} ({size})")
        out.append((title, settings))
    return out


def _reason(rows, key: str, fallback: str) -> str:
    col = f"{key}_reason"
    if col in rows:
        found = [r for r in rows[col] if not isna(r)]
        if found:
            return str(found[0])
    return fallback


def headline_sentences(df) -> list[str]:
    """The headline as plain-text sentences, one per group (an empty list when nothing can be said)."""
    pts = headline_points(df)
    if not len(pts):
        return []
    info, rows_all = _setting_info(df)
    short = short_labels(method_order(pts["method_label"]))
    out = []
    for title, settings in _groups(pts, info):
        g = pts[pts["setting"].isin(settings)]
        seqs = sorted({int(t) for t in g["seq_len"]})
        when = f"T = {seqs[0]}" if len(seqs) == 1 else f"T = {seqs[0]}–{seqs[-1]}"
        cand = g[~g["method_label"].isin(REFERENCE_METHODS)]
        per_method = []
        for label in method_order(cand["method_label"]):
            h = cand[(cand["method_label"] == label) & cand["peak_fraction_of_bptt"].map(_ok)
                     & cand["time_ratio_vs_bptt"].map(_ok)]
            if len(h):
                per_method.append((float(h["peak_fraction_of_bptt"].median()), short[label], h))
        per_method.sort(key=lambda t: t[0])
        left_out = 0
        if len(per_method) > MAX_METHODS:   # name Pareto-optimal ones (most memory saved first), up to the cap
            keep = [t for t in per_method if t[2]["pareto"].any()][:MAX_METHODS]
            left_out = len(per_method) - len(keep)
            per_method = keep
        if per_method:
            clauses = [_memory_clause(name, h["peak_fraction_of_bptt"], h["time_ratio_vs_bptt"], i == 0, "bptt’s")
                       for i, (_, name, h) in enumerate(per_method)]
            vs_bptt = "; ".join(clauses)
            if left_out:
                vs_bptt += f" ({left_out} more in the headline table)"
        else:
            vs_bptt = "no method was measured against bptt on these configurations"
        kernels = sorted({fused_kernel_name(info[s]["cell"]) for s in settings})
        kernel = " / ".join(kernels)
        fused = cand[cand["fused_peak_ratio"].map(_ok) & cand["fused_time_ratio"].map(_ok)]
        fused = fused[fused["method_label"] != "bptt-fused"]
        if len(fused):
            best = fused.groupby("method_label")["fused_peak_ratio"].median().idxmin()
            h = fused[fused["method_label"] == best]
            clause = _memory_clause(short[best], h["fused_peak_ratio"], h["fused_time_ratio"], True,
                                    f"the fused {kernel} step’s")
            vs_fused = f"Against the fused {kernel} step (smallest peak): {clause}."
        else:
            rows = rows_all[rows_all["setting"].isin(settings)]
            why = _reason(rows, "fused_peak_ratio", _reason(rows, "fused_time_ratio",
                                                            "the fused reference was not measured"))
            vs_fused = f"The methods cannot be set against the fused {kernel} step ({why})."
        out.append(f"{title}, {when}: {vs_bptt}. {vs_fused}")
    return out


def headline_sentences_html(df) -> str:
    """The sentences as a block for the top of the report ('' when there are none)."""
    sentences = headline_sentences(df)
    if not sentences:
        return ""
    items = "".join("<li><strong>{}</strong>:{}</li>".format(*map(esc, s.split(":", 1))) if ":" in s
                    else f"<li>{esc(s)}</li>" for s in sentences)
    return ('<div class="headline"><p><strong>Headline</strong>: activation memory each method saves against '
            "bptt and the step time it costs (each setting at its largest seq_len, measured in the same run; "
            f"ranges over the settings and forgetting limits of a group), most memory saved first:</p><ul>{items}"
            "</ul></div>")
