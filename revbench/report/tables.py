"""The report's tables and their HTML: summary and headline (section a), memory meters (f), environment (g)."""
from __future__ import annotations

import math

from revbench.report.format import MIB, esc, fmt_int, fmt_num, fmt_ratio, isna, method_order, setting_labels
from revbench.report.frontier import headline_points
from revbench.report.how_measured import (BUFFER_BITS_HOW, METER_HOW, NOISY_LEGEND, PROFILER_CATEGORIES,
                                          PROFILER_SPLIT_HOW, cpu_text, distinct_text, noisy_title, peak_how,
                                          time_how)
from revbench.report.html import NOISY_MARK, dataframe_to_html_table, note_html
from revbench.report.results import add_relative_columns, forget_order


def _sorted(df):
    """Rows by setting, seq_len, forgetting limit (no limit last), then method order."""
    order = {label: i for i, label in enumerate(method_order(df["method_label"]))}
    flimit = {label: i for i, label in enumerate(forget_order(df["forget_label"]))}
    key = df.assign(_m=df["method_label"].map(order), _f=df["forget_label"].map(flimit), _s=setting_labels(df))
    cols = ["_s", "seq_len", "_f", "_m", "name"]
    return df.loc[key.sort_values(cols, kind="stable").index]


def summary_table(df):
    """Display table (a): one row per benchmark with peak MiB, savings and time ratio vs bptt (units in headers)."""
    import pandas as pd

    d = _sorted(add_relative_columns(df))
    out = pd.DataFrame({
        "method": d["method_label"].astype(str),
        "cell": d["cell"].astype(str),
        "seq_len": d["seq_len"],
        "forgetting limit": d["forget_label"],
        "config": d["config_id"].astype(str),
        "peak (MiB)": d["peak_bytes"].astype("float64") / MIB,
        "allocator saving vs bptt (×)": d["allocator_saving"],
        "paper saving, actual bits (×)": d["saving_actual"],
        "paper saving, ideal bits (×)": d["saving_ideal"],
        "median time (ms)": d["time_median_s"] * 1e3,
        "IQR (ms)": d["time_iqr_s"] * 1e3,
        "time vs bptt (×)": d["time_ratio_vs_bptt"],
        "peak / fused (×)": _column(d, "fused_peak_ratio"),
        "time vs fused (×)": _column(d, "fused_time_ratio"),
    })
    return out.reset_index(drop=True)


def _column(d, key):
    """A float column of ``d`` (NaN where the file predates the figure)."""
    return d[key].astype("float64") if key in d else [math.nan] * len(d)


SUMMARY_HEADER_TITLES = {
    "peak (MiB)": "peak_bytes / 2^20: activation memory of one training step",
    "allocator saving vs bptt (×)": "allocator_saving = bptt's peak_bytes on the same config / this peak_bytes",
    "paper saving, actual bits (×)": "saving_actual = state_bits_baseline / buffer_bits_actual (model level)",
    "paper saving, ideal bits (×)": "saving_ideal = state_bits_baseline / buffer_bits_ideal (model level)",
    "median time (ms)": "pytest-benchmark median of the timed rounds, milliseconds",
    "IQR (ms)": "interquartile range (q3 - q1) of the timed rounds, milliseconds: the spread of the median beside it",
    "time vs bptt (×)": "median time / bptt's median time on the same config_id, same run",
    "peak / fused (×)": "fused_peak_ratio = peak_bytes / peak_bytes of the fused nn.LSTM/nn.GRU step (bptt-fused on "
                        "the ordinary cell of the same family and sizes), same run",
    "time vs fused (×)": "fused_time_ratio = median time / the fused step's median time (time.perf_counter, same "
                         "rounds and warm-up), same run",
}


def _summary_titles(df, table):
    import pandas as pd

    d = _sorted(add_relative_columns(df)).reset_index(drop=True)
    titles = pd.DataFrame(index=table.index)

    def reason(col, fallback):
        rc = f"{col}_reason"
        if rc in d:
            return [r if not isna(r) else fallback for r in d[rc]]
        return [fallback] * len(d)
    titles["peak (MiB)"] = reason("peak_bytes", "peak_bytes not recorded")
    titles["allocator saving vs bptt (×)"] = reason("allocator_saving", "bptt not measured on this config")
    titles["paper saving, actual bits (×)"] = reason("saving_actual", "no information buffer")
    titles["paper saving, ideal bits (×)"] = reason("saving_ideal", "no information buffer")
    titles["time vs bptt (×)"] = ["bptt not measured on this config"] * len(d)
    titles["peak / fused (×)"] = reason("fused_peak_ratio", "fused reference not measured")
    titles["time vs fused (×)"] = reason("fused_time_ratio", "fused reference not measured")
    for col in list(titles.columns):  # a reason only where the value is missing
        titles[col] = [t if isna(v) else None for t, v in zip(titles[col], table[col])]
    titles["config"] = list(d["name"].astype(str))  # hover over a config: the benchmark's pytest name
    return titles


def time_flags(d, column: str = "median time (ms)"):
    """Hover texts marking the noisy median times of rows ``d`` (IQR above 20 % of the median), for the table's
    `flags`; None where a time is steady or its IQR is missing."""
    import pandas as pd

    iqr = d["time_iqr_s"] if "time_iqr_s" in d else [math.nan] * len(d)
    return pd.DataFrame({column: [noisy_title(q, m) for q, m in zip(iqr, d["time_median_s"])]})


def _head_flags(df, head):
    import pandas as pd

    pts = headline_points(df)
    frac = pts["iqr_fraction"] if "iqr_fraction" in pts else [math.nan] * len(pts)
    return pd.DataFrame({"median time (ms)": [noisy_title(f, 1.0) for f in frac]}, index=head.index)


def noisy_legend_html() -> str:
    return f'<p class="legendline"><span class="flag">{NOISY_MARK}</span> {esc(NOISY_LEGEND)}</p>'


def headline_table(df):
    """Display table: per setting at its largest seq_len, one row per method (and forgetting limit for buffered
    methods), medians over the configurations pooled; with the Pareto flag of the frontier figure."""
    import pandas as pd

    pts = headline_points(df)
    return pd.DataFrame({
        "setting": pts["setting"].astype(str),
        "seq_len": pts["seq_len"],
        "method": pts["point"].astype(str),
        "peak (MiB)": pts["peak_bytes"] / MIB,
        "peak / bptt's": pts["peak_fraction_of_bptt"],
        "allocator saving vs bptt (×)": pts["allocator_saving"],
        "paper saving, actual bits (×)": pts["saving_actual"],
        "median time (ms)": pts["time_median_s"] * 1e3,
        "IQR (ms)": pts["time_iqr_s"] * 1e3,
        "time vs bptt (×)": pts["time_ratio_vs_bptt"],
        "peak / fused (×)": pts["fused_peak_ratio"],
        "time vs fused (×)": pts["fused_time_ratio"],
        "Pareto-optimal": ["yes" if p else "" for p in pts["pareto"]],
    })


_SUMMARY_FORMATS = {"peak (MiB)": lambda v: fmt_num(v, 2), "peak / bptt's": lambda v: fmt_num(v, 3),
                    "allocator saving vs bptt (×)": fmt_ratio, "paper saving, actual bits (×)": fmt_ratio,
                    "paper saving, ideal bits (×)": fmt_ratio, "median time (ms)": lambda v: fmt_num(v, 2),
                    "IQR (ms)": lambda v: fmt_num(v, 2), "time vs bptt (×)": fmt_ratio,
                    "peak / fused (×)": lambda v: fmt_num(v, 3), "time vs fused (×)": fmt_ratio,
                    "seq_len": fmt_int}


def summary_html(df) -> str:
    """Section (a): the headline table (largest seq_len) and the full per-benchmark table."""
    how = (f"{peak_how(df)} Savings: allocator = bptt's peak_bytes on the same configuration / this peak_bytes; "
           "paper-style = state bits a standard RNN stores (32·T·B·H per layer, ×2 for LSTM) / bits the "
           f"information buffer allocates (actual) or the information forgotten, Σ −log2 z_q of the applied gates (ideal). {time_how(df)}")
    head = headline_table(df)
    head_html = ""
    if len(head):
        head_titles = {**SUMMARY_HEADER_TITLES,
                       "peak / bptt's": "peak_bytes / bptt's peak_bytes on the same configuration",
                       "Pareto-optimal": "no other method in this setting is both faster and smaller"}
        head_html = ("<h3>Headline: every method at the largest seq_len of each setting</h3>"
                     + dataframe_to_html_table(head, formats=_SUMMARY_FORMATS, header_titles=head_titles,
                                               group_by="setting", flags=_head_flags(df, head))
                     + note_html("Methods without an information buffer do not depend on the forgetting limit: "
                                 "their row is the median over the forgetting-limit configurations; a pooled time is "
                                 "marked noisy when one of its configurations is."))
    table = summary_table(df)
    full = dataframe_to_html_table(table, formats=_SUMMARY_FORMATS, titles=_summary_titles(df, table),
                                   header_titles=SUMMARY_HEADER_TITLES, mono=("config",), group_by="config",
                                   scroll=len(table) > 20, flags=time_flags(_sorted(df)))
    return (head_html + f"<h3>All benchmarks ({len(table)})</h3>" + full + noisy_legend_html()
            + f'<p class="how">How measured: {esc(how)} Hover over n/a for the reason.</p>')


BASE_METERS = ("peak_bytes", "live_peak_bytes", "cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes",
               "nvml_peak_used_bytes", "rss_peak_delta_bytes")
NEW_METERS = ("profiler_peak_bytes", *(f"profiler_{c}_bytes" for c in PROFILER_CATEGORIES), "heap_peak_bytes")
BUFFER_BITS = ("buffer_bits_actual", "buffer_bits_reference", "buffer_bits_ideal")


def meter_columns(df) -> list[tuple[str, str, float, str]]:
    """(record key, header, divisor, how) of every meter column of the table: the long-standing meters always,
    the profiler's (with its category split), the heap meter and the buffer's bit counts when the file has them."""
    cols = [(c, f"{c} (MiB)", MIB, METER_HOW[c]) for c in BASE_METERS]
    for c in NEW_METERS:
        if _present(df, c):
            cat = c[len("profiler_"):-len("_bytes")]
            how = METER_HOW.get(c) or PROFILER_SPLIT_HOW.format(cat=cat)
            cols.append((c, f"{c} (MiB)", MIB, how))
    cols.append(("saved_bytes", "saved_bytes (MiB)", MIB, METER_HOW["saved_bytes"]))
    if "buffer_bits_actual" in df and df["buffer_bits_actual"].notna().any():
        cols += [(c, f"{c} (KiB)", 8 * 1024.0, BUFFER_BITS_HOW[c]) for c in BUFFER_BITS if _present(df, c)]
    return cols


def _present(df, key: str) -> bool:
    """Whether the records carry ``key``: a value or a reason in some row (a loader may add empty columns)."""
    reason = f"{key}_reason"
    return key in df and bool(df[key].notna().any() or (reason in df and df[reason].notna().any()))


def meters_table(df):
    """Table (f): every memory meter per benchmark (MiB; buffer bits in KiB), plus a same-shape table of hover
    texts: the record's `<key>_reason` for an n/a cell, "not recorded" where the file has no such key."""
    import pandas as pd

    d = _sorted(df)
    values = pd.DataFrame({"method": d["method_label"].astype(str), "config": d["config_id"].astype(str)})
    titles = pd.DataFrame(index=values.index)
    values["peak meter"] = d["peak_bytes_meter"] if "peak_bytes_meter" in d else None
    for col, header, div, _ in meter_columns(d):
        values[header] = d[col].astype("float64") / div if col in d else math.nan
        rc = f"{col}_reason"
        reasons = d[rc] if rc in d else pd.Series([None] * len(d), index=d.index)
        titles[header] = [r if not isna(r) else ("not recorded" if isna(v) else None)
                          for r, v in zip(reasons, values[header])]
    return values.reset_index(drop=True), titles.reset_index(drop=True)


def meters_html(df) -> str:
    import pandas as pd

    values, titles = meters_table(df)
    cols = meter_columns(_sorted(df))
    fmts = {c: (lambda v: fmt_num(v, 2)) for c in values.columns if c.endswith("(MiB)") or c.endswith("(KiB)")}
    header_titles = {header: how for _, header, _, how in cols}
    legend = "".join(f"<dt>{esc(c)}</dt><dd>{esc(how)}</dd>" for c, _, _, how in cols
                     if not (c.startswith("profiler_") and c != "profiler_peak_bytes"))
    if any(c == "profiler_activation_bytes" for c, *_ in cols):
        legend += ("<dt>profiler_&lt;category&gt;_bytes</dt><dd>The profiler's split of the bytes alive at its peak "
                   f"into {esc(', '.join(PROFILER_CATEGORIES))}.</dd>")
    notes = []  # availability, readable without hovering
    for c, header, _, _ in cols:
        missing = values[header].isna()
        if missing.any():
            reasons = pd.Series(titles.loc[missing, header]).fillna("not recorded").value_counts()
            why = "; ".join(f"{r} ({n})" if len(reasons) > 1 else str(r) for r, n in reasons.items())
            notes.append(f"<li><code>{esc(c)}</code>: n/a in {int(missing.sum())} of {len(values)} benchmarks: "
                         f"{esc(why)}</li>")
    note_block = f'<ul class="how">{"".join(notes)}</ul>' if notes else ""
    return (f'<dl class="legend">{legend}</dl>'
            + dataframe_to_html_table(values, formats=fmts, titles=titles, header_titles=header_titles,
                                      mono=("config",), group_by="config", scroll=len(values) > 20,
                                      wrap_headers=True)
            + note_block + '<p class="how">Hover over n/a for the reason.</p>')


def environment_table(df):
    """Table (g): environment of the run, from pytest-benchmark's machine/commit info and the records."""
    import pandas as pd

    mi = df.attrs.get("machine_info") or {}
    ci = df.attrs.get("commit_info") or {}
    cpu = mi.get("cpu") or {}

    def distinct(col):
        if col not in df:
            return None
        vals = sorted({str(v) for v in df[col].dropna()})
        return ", ".join(vals) if vals else None

    commit = ci.get("id") or distinct("commit")
    if commit and ci.get("dirty"):
        commit += " (dirty working tree)"
    rows = [
        ("date of run", df.attrs.get("datetime")),
        ("commit", commit),
        ("branch", ci.get("branch")),
        ("torch version", distinct("torch_version")),
        ("device", distinct("device")),
        ("device name", distinct("device_name")),
        ("dtype", distinct("dtype")),
        ("peak_bytes meter", distinct("peak_bytes_meter")),
        ("python", mi.get("python_version") or distinct("python_version")),
        ("platform", distinct("platform") or " ".join(str(mi.get(k, "")) for k in ("system", "release"))),
        ("host", mi.get("node") or distinct("hostname")),
        ("CPU model", cpu_text(df)),
        ("CPU count", cpu.get("count") or distinct("cpu_count")),
        ("torch threads", distinct_text(df, "torch_num_threads")
         or "not recorded (file written before torch_num_threads existed)"),
        ("pytest-benchmark version", df.attrs.get("version")),
        ("source file", df.attrs.get("source")),
        ("benchmarks", len(df)),
    ]
    return pd.DataFrame([(k, "n/a" if v in (None, "") else str(v)) for k, v in rows], columns=["item", "value"])


def environment_html(df) -> str:
    return dataframe_to_html_table(environment_table(df), css_class="data kv", sortable=False)
