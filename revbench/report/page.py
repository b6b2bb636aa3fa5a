"""Benchmark records -> tables, seaborn figures and ONE self-contained HTML report.

`render_report(df_or_path, out_html)` writes a single HTML file: inline CSS, figures
embedded as base64 PNG, no <script>, nothing fetched from the network. Every figure
caption says how its numbers were measured. The same building blocks
(`summary_table`, `fig_*`, `section_html`) are used by `reports/benchmarks.ipynb`.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state) and
saved through the Agg renderer, so this works headless and in notebooks alike.
Sections whose data are absent (say, no method with an information buffer) are
replaced by a one-line note.
"""
from __future__ import annotations

import base64
import contextlib
import html
import io
import math
import re
from revbench.util.atomic import atomic_write
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from revbench.report.results import add_relative_columns, forget_order, load_benchmarks, split_kinds

MIB = float(1 << 20)
METHOD_FAMILY_ORDER = ("bptt", "checkpoint", "gruslys", "reversible")
MAX_PANELS = 6  # settings drawn per figure; the rest are listed in a note
SETTING_DIMS = ("num_layers", "hidden_size", "emb_size", "batch_size", "vocab_size", "device", "dtype")
_DIM_PREFIX = {"num_layers": "L", "hidden_size": "H", "emb_size": "E", "batch_size": "B", "vocab_size": "V"}

# How each memory figure is measured (legend of the meters table; captions reuse these).
METER_HOW = {
    "peak_bytes": "The step's activation memory: peak bytes of all tensors alive during one training step above "
                  "those alive before it (parameters and gradients excluded). From the CUDA allocator on a GPU, "
                  "from the live-tensor meter on the CPU (see the meter column).",
    "live_peak_bytes": "Live-tensor meter: a TorchDispatchMode that sees every op's outputs and tracks their "
                       "storages (deduplicated by storage, released through weak references); works on any device.",
    "cuda_peak_allocated_bytes": "CUDA caching allocator, torch.cuda.max_memory_allocated() after "
                                 "reset_peak_memory_stats() and a synchronise: exact bytes of tensors.",
    "cuda_peak_reserved_bytes": "CUDA caching allocator, torch.cuda.max_memory_reserved(): what the allocator held "
                                "from the driver, including cached-but-free blocks.",
    "nvml_peak_used_bytes": "NVML device memory used (nvmlDeviceGetMemoryInfo v2), sampled by a thread: includes the "
                            "CUDA context, the allocator's cache and other processes; can miss short spikes.",
    "rss_peak_delta_bytes": "Process peak RSS (VmHWM in /proc/self/status, reset through /proc/self/clear_refs after "
                            "malloc_trim) minus RSS before the step: coarse, independent of torch.",
    "saved_bytes": "Bytes saved for backward (torch.autograd.graph.saved_tensors_hooks, deduplicated by storage, "
                   "parameters and inputs excluded): a cross-check; undercounts inside checkpointed regions.",
}
METER_COLUMNS = tuple(METER_HOW)
PEAK_METER_NAMES = {
    "live_tensors": "live-tensor meter (TorchDispatchMode tracking tensor storages)",
    "cuda_allocator": "CUDA caching allocator (torch.cuda.max_memory_allocated, exact)",
}

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee7; --accent:#2d5fa8; --bg:#ffffff; --alt:#f5f7fb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 24px 32px 64px; }
header.top { border-bottom: 3px solid var(--accent); margin-bottom: 16px; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
p.sub { color: var(--muted); margin: 0 0 12px; }
nav.toc { background: var(--alt); border: 1px solid var(--line); border-radius: 6px; padding: 8px 16px; }
nav.toc ol { margin: 4px 0; padding-left: 22px; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
p.note { color: var(--muted); font-style: italic; margin: 6px 0; }
div.tablewrap { overflow-x: auto; margin: 8px 0 4px; }
div.tablewrap.scroll { max-height: 560px; overflow-y: auto; border: 1px solid var(--line); border-radius: 4px; }
table.data tr.group-start td { border-top: 2px solid #b9c3d3; }
table.data td.yes { color: #1b7f3b; font-weight: 600; text-align: center; }
table.data { border-collapse: collapse; font-size: 13px; width: auto; min-width: 50%; }
table.data caption { caption-side: top; text-align: left; color: var(--muted); padding: 4px 0; }
table.data th { background: #e9eef6; text-align: left; font-weight: 600; padding: 6px 9px;
  border-bottom: 2px solid #b9c3d3; position: sticky; top: 0; vertical-align: bottom; }
table.data td { padding: 4px 9px; border-bottom: 1px solid var(--line); white-space: nowrap; }
table.data tbody tr:nth-child(even) td { background: var(--alt); }
table.data tbody tr:hover td { background: #fff6d6; }
table.data td.num, table.data th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data td.na { color: #9aa3b2; text-align: center; cursor: help; }
table.data td.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px;
  color: var(--muted); }
table.kv th { width: 220px; }
figure { margin: 12px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: 13.5px; color: var(--fg); margin-top: 6px; max-width: 1100px; }
figcaption .how, p.how { display: block; color: var(--muted); margin-top: 3px; }
p.how, ul.how { font-size: 13.5px; color: var(--muted); }
ul.how code { font-size: 12.5px; }
dl.legend { display: grid; grid-template-columns: 230px 1fr; gap: 4px 14px; font-size: 13.5px; }
dl.legend dt { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
dl.legend dd { margin: 0; color: var(--muted); }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
"""


# ---------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def third_party_warnings_visible():
    """Show (once) but never raise deprecation warnings coming from seaborn/matplotlib/pandas/numpy.

    seaborn 0.13 warns under pandas 3; a `-W error` run must not fail on that. Our own
    warnings keep whatever filter the caller set.
    """
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("default", category=category, module=r"(seaborn|matplotlib|pandas|numpy)(\..*)?$")
        yield


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _isna(value) -> bool:
    import pandas as pd

    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _fmt_num(value, digits: int = 2) -> str:
    v = float(value)
    if v != 0 and abs(v) < 10 ** (-digits):
        return f"{v:.{digits}g}"
    return f"{v:,.{digits}f}"


def fmt_mib(value) -> str:
    """Bytes -> 'x.xx' MiB text."""
    return _fmt_num(float(value) / MIB, 2)


def fmt_ratio(value) -> str:
    return f"{float(value):,.2f}"


def fmt_int(value) -> str:
    return f"{int(value):,}"


def _method_family(label: str) -> str:
    return str(label).split("(")[0].strip()


def method_order(labels: Iterable[str]) -> list[str]:
    """Method labels in a stable order: bptt, checkpoint, gruslys..., reversible..., then the rest."""
    def key(label):
        fam = _method_family(label)
        rank = METHOD_FAMILY_ORDER.index(fam) if fam in METHOD_FAMILY_ORDER else len(METHOD_FAMILY_ORDER)
        return (rank, _budget_key(label), str(label))
    return sorted({str(x) for x in labels}, key=key)


def _budget_key(label: str) -> float:
    m = re.search(r"budget=([0-9.eE+-]+)", str(label))
    try:
        return float(m.group(1)) if m else 0.0
    except ValueError:
        return 0.0


def method_palette(labels: Iterable[str]) -> dict:
    """method label -> colour, consistent across every figure of a report."""
    import seaborn as sns

    order = method_order(labels)
    colours = sns.color_palette("colorblind", max(len(order), 1))
    return {label: colours[i % len(colours)] for i, label in enumerate(order)}


_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">")


def method_markers(labels: Iterable[str]) -> dict:
    return {label: _MARKERS[i % len(_MARKERS)] for i, label in enumerate(method_order(labels))}


def setting_labels(df):
    """A Series naming each row's setting: the cell plus whatever of layers/sizes/batch/device/dtype varies."""
    varying = [d for d in SETTING_DIMS if d in df.columns and df[d].astype(str).nunique(dropna=False) > 1]

    def label(row):
        parts = [str(row["cell"])]
        for d in varying:
            parts.append(f"{_DIM_PREFIX[d]}{row[d]}" if d in _DIM_PREFIX else str(row[d]))
        return " ".join(parts)
    return df.apply(label, axis=1) if len(df) else df["cell"].astype(str)


def pareto_optimal(x: Sequence[float], y: Sequence[float]):
    """Boolean mask of points not dominated when both x and y are to be minimised (NaN points: False)."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    mask = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok & ((x <= x[i]) & (y <= y[i])) & ((x < x[i]) | (y < y[i]))
        mask[i] = not others.any()
    return mask


def _rounds_text(df) -> str:
    r = df["rounds"].dropna()
    if not len(r):
        return "timed rounds"
    lo, hi = int(r.min()), int(r.max())
    return f"{lo} timed rounds" if lo == hi else f"{lo}-{hi} timed rounds"


def time_how(df) -> str:
    return (f"Time: median of {_rounds_text(df)} of one training step (pytest-benchmark, wall clock), "
            "compared as ratios to bptt on the same configuration measured in the same run.")


def peak_how(df) -> str:
    meters = sorted({str(m) for m in df["peak_bytes_meter"].dropna()}) if "peak_bytes_meter" in df else []
    names = ", ".join(PEAK_METER_NAMES.get(m, m) for m in meters) or "meter not recorded"
    return ("Memory: peak_bytes, the peak bytes of tensors alive during one training step above those alive "
            f"before it; measured by the {names}.")


# ---------------------------------------------------------------------------------------------------
# HTML building blocks
# ---------------------------------------------------------------------------------------------------

def dataframe_to_html_table(df, *, formats: Mapping[str, Callable | str] | None = None, titles=None,
                            header_titles: Mapping[str, str] | None = None, caption: str | None = None,
                            na_rep: str = "n/a", index: bool = False, mono: Iterable[str] = (),
                            css_class: str = "data", group_by: str | None = None, scroll: bool = False,
                            wrap_headers: bool = False) -> str:
    """Render a DataFrame as a styled, escaped HTML table (no jinja2, no script).

    formats: column -> callable(value) -> str, or a format string such as "{:,.2f}".
    titles: a DataFrame (same index, any subset of columns) of hover texts per cell; missing
        values get `na_rep` and their title (or "not available") as a tooltip.
    header_titles: column -> hover text of the header. mono: columns shown in monospace.
    group_by: a column whose change of value starts a visually separated group of rows.
    scroll: put the table in a box of limited height that scrolls (header stays visible).
    wrap_headers: allow long snake_case headers to break after underscores.
    """
    import pandas as pd

    formats = dict(formats or {})
    header_titles = dict(header_titles or {})
    mono = set(mono)
    if index:
        df = df.reset_index()
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}
    numeric |= {c for c in formats if c in df.columns}  # formatted columns are numbers by construction
    wrap = "tablewrap scroll" if scroll else "tablewrap"
    parts = [f'<div class="{wrap}"><table class="{_esc(css_class)}">']
    if caption:
        parts.append(f"<caption>{_esc(caption)}</caption>")
    parts.append("<thead><tr>")
    for col in df.columns:
        cls = ' class="num"' if col in numeric else ""
        tip = f' title="{_esc(header_titles[col])}"' if col in header_titles else ""
        text = _esc(col).replace("_", "_<wbr>") if wrap_headers else _esc(col)
        parts.append(f"<th{cls}{tip}>{text}</th>")
    parts.append("</tr></thead><tbody>")
    previous = object()
    for pos in range(len(df)):
        if group_by is not None:
            current = df[group_by].iloc[pos]
            parts.append('<tr class="group-start">' if pos and current != previous else "<tr>")
            previous = current
        else:
            parts.append("<tr>")
        for col in df.columns:
            value = df[col].iloc[pos]
            tip = None
            if titles is not None and col in getattr(titles, "columns", ()):
                t = titles[col].iloc[pos]
                tip = None if _isna(t) else str(t)
            if _isna(value):
                tip = tip or "not available"
                parts.append(f'<td class="na" title="{_esc(tip)}">{_esc(na_rep)}</td>')
                continue
            fmt = formats.get(col)
            if callable(fmt):
                text = fmt(value)
            elif isinstance(fmt, str):
                text = fmt.format(value)
            else:
                text = str(value)
            classes = [c for c, on in (("num", col in numeric), ("mono", col in mono)) if on]
            cls = f' class="{" ".join(classes)}"' if classes else ""
            tip_attr = f' title="{_esc(tip)}"' if tip else ""
            parts.append(f"<td{cls}{tip_attr}>{_esc(text)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def figure_to_data_uri(fig, dpi: int = 100) -> str:
    """PNG of a matplotlib Figure as a data: URI (rendered by Agg, nothing written to disk)."""
    buf = io.BytesIO()
    with third_party_warnings_visible():
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_html(fig, caption: str, how: str, alt: str) -> str:
    """<figure> with the embedded PNG, a caption and a 'how measured' line."""
    return (f'<figure><img src="{figure_to_data_uri(fig)}" alt="{_esc(alt)}">'
            f"<figcaption>{_esc(caption)}<span class=\"how\">How measured: {_esc(how)}</span></figcaption></figure>")


def note_html(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


_SCRIPT = re.compile(r"<\s*script", re.I)
_EXTERNAL = re.compile(r"""(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//|"""
                       r"""url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//|@import""", re.I)


def check_self_contained(fragment: str, what: str = "HTML") -> None:
    """Raise ValueError if an HTML fragment has a <script> or refers to anything outside the file."""
    if _SCRIPT.search(fragment):
        raise ValueError(f"{what} contains a <script> element; the report must work without scripts")
    m = _EXTERNAL.search(fragment)
    if m:
        raise ValueError(f"{what} refers to an external resource ({m.group(0)!r}); embed it instead")


# ---------------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------------

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
        "time vs bptt (×)": d["time_ratio_vs_bptt"],
    })
    return out.reset_index(drop=True)


SUMMARY_HEADER_TITLES = {
    "peak (MiB)": "peak_bytes / 2^20: activation memory of one training step",
    "allocator saving vs bptt (×)": "allocator_saving = bptt's peak_bytes on the same config / this peak_bytes",
    "paper saving, actual bits (×)": "saving_actual = state_bits_baseline / buffer_bits_actual (model level)",
    "paper saving, ideal bits (×)": "saving_ideal = state_bits_baseline / buffer_bits_ideal (model level)",
    "median time (ms)": "pytest-benchmark median of the timed rounds, milliseconds",
    "time vs bptt (×)": "median time / bptt's median time on the same config_id, same run",
}


def _summary_titles(df, table):
    import pandas as pd

    d = _sorted(add_relative_columns(df)).reset_index(drop=True)
    titles = pd.DataFrame(index=table.index)

    def reason(col, fallback):
        rc = f"{col}_reason"
        if rc in d:
            return [r if not _isna(r) else fallback for r in d[rc]]
        return [fallback] * len(d)
    titles["peak (MiB)"] = reason("peak_bytes", "peak_bytes not recorded")
    titles["allocator saving vs bptt (×)"] = reason("allocator_saving", "bptt not measured on this config")
    titles["paper saving, actual bits (×)"] = reason("saving_actual", "no information buffer")
    titles["paper saving, ideal bits (×)"] = reason("saving_ideal", "no information buffer")
    titles["time vs bptt (×)"] = ["bptt not measured on this config"] * len(d)
    for col in list(titles.columns):  # a reason only where the value is missing
        titles[col] = [t if _isna(v) else None for t, v in zip(titles[col], table[col])]
    titles["config"] = list(d["name"].astype(str))  # hover over a config: the benchmark's pytest name
    return titles


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
        "time vs bptt (×)": pts["time_ratio_vs_bptt"],
        "Pareto-optimal": ["yes" if p else "" for p in pts["pareto"]],
    })


_SUMMARY_FORMATS = {"peak (MiB)": lambda v: _fmt_num(v, 2), "peak / bptt's": lambda v: _fmt_num(v, 3),
                    "allocator saving vs bptt (×)": fmt_ratio, "paper saving, actual bits (×)": fmt_ratio,
                    "paper saving, ideal bits (×)": fmt_ratio, "median time (ms)": lambda v: _fmt_num(v, 2),
                    "time vs bptt (×)": fmt_ratio, "seq_len": fmt_int}


def summary_html(df) -> str:
    """Section (a): the headline table (largest seq_len) and the full per-benchmark table."""
    how = (f"{peak_how(df)} Savings: allocator = bptt's peak_bytes on the same configuration / this peak_bytes; "
           "paper-style = state bits a standard RNN stores (32·T·B·H per layer, ×2 for LSTM) / bits the "
           f"information buffer allocates (actual) or the information forgotten, Σ −log2 z (ideal). {time_how(df)}")
    head = headline_table(df)
    head_html = ""
    if len(head):
        head_titles = {**SUMMARY_HEADER_TITLES,
                       "peak / bptt's": "peak_bytes / bptt's peak_bytes on the same configuration",
                       "Pareto-optimal": "no other method in this setting is both faster and smaller"}
        head_html = ("<h3>Headline: every method at the largest seq_len of each setting</h3>"
                     + dataframe_to_html_table(head, formats=_SUMMARY_FORMATS, header_titles=head_titles,
                                               group_by="setting")
                     + note_html("Methods without an information buffer do not depend on the forgetting limit: "
                                 "their row is the median over the forgetting-limit configurations."))
    table = summary_table(df)
    full = dataframe_to_html_table(table, formats=_SUMMARY_FORMATS, titles=_summary_titles(df, table),
                                   header_titles=SUMMARY_HEADER_TITLES, mono=("config",), group_by="config",
                                   scroll=len(table) > 20)
    return (head_html + f"<h3>All benchmarks ({len(table)})</h3>" + full
            + f'<p class="how">How measured: {_esc(how)} Hover over n/a for the reason.</p>')


def meters_table(df):
    """Table (f): every memory meter per benchmark in MiB, plus a same-shape table of hover texts for n/a cells."""
    import pandas as pd

    d = _sorted(df)
    values = pd.DataFrame({"method": d["method_label"].astype(str), "config": d["config_id"].astype(str)})
    titles = pd.DataFrame(index=values.index)
    values["peak meter"] = d["peak_bytes_meter"] if "peak_bytes_meter" in d else None
    for col in METER_COLUMNS:
        header = f"{col} (MiB)"
        values[header] = d[col].astype("float64") / MIB if col in d else math.nan
        rc = f"{col}_reason"
        reasons = d[rc] if rc in d else pd.Series([None] * len(d), index=d.index)
        titles[header] = [r if not _isna(r) else ("not recorded" if _isna(v) else None)
                          for r, v in zip(reasons, values[header])]
    return values.reset_index(drop=True), titles.reset_index(drop=True)


def meters_html(df) -> str:
    import pandas as pd

    values, titles = meters_table(df)
    fmts = {c: (lambda v: _fmt_num(v, 2)) for c in values.columns if c.endswith("(MiB)")}
    header_titles = {f"{c} (MiB)": METER_HOW[c] for c in METER_COLUMNS}
    legend = "".join(f"<dt>{_esc(c)}</dt><dd>{_esc(METER_HOW[c])}</dd>" for c in METER_COLUMNS)
    # availability notes (readable without hovering)
    notes = []
    for c in METER_COLUMNS:
        header = f"{c} (MiB)"
        missing = values[header].isna()
        if missing.any():
            reasons = pd.Series(titles.loc[missing, header]).fillna("not recorded").value_counts()
            why = "; ".join(f"{r} ({n})" if len(reasons) > 1 else str(r) for r, n in reasons.items())
            notes.append(f"<li><code>{_esc(c)}</code>: n/a in {int(missing.sum())} of {len(values)} benchmarks: "
                         f"{_esc(why)}</li>")
    note_block = f'<ul class="how">{"".join(notes)}</ul>' if notes else ""
    return (f'<dl class="legend">{legend}</dl>'
            + dataframe_to_html_table(values, formats=fmts, titles=titles, header_titles=header_titles,
                                      mono=("config",), group_by="config", scroll=len(values) > 20,
                                      wrap_headers=True)
            + note_block)


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
        ("CPU", cpu.get("brand_raw")),
        ("CPU count", cpu.get("count") or distinct("cpu_count")),
        ("pytest-benchmark version", df.attrs.get("version")),
        ("source file", df.attrs.get("source")),
        ("benchmarks", len(df)),
    ]
    return pd.DataFrame([(k, "n/a" if v in (None, "") else str(v)) for k, v in rows], columns=["item", "value"])


def environment_html(df) -> str:
    return dataframe_to_html_table(environment_table(df), css_class="data kv")


# ---------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------

def _new_figure(nrows: int, ncols: int, panel_w: float, panel_h: float, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(panel_w * ncols + 2.6, 7.0), panel_h * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _style_axes(ax):
    ax.grid(True, which="major", color="#e3e7ee", linewidth=0.8)
    ax.grid(True, which="minor", color="#f0f2f6", linewidth=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _method_legend(fig, labels, palette, markers, title="method", extra=()):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=palette[m], marker=markers[m], linestyle="-", label=m) for m in labels]
    handles += list(extra)
    fig.legend(handles=handles, loc="outside right upper", title=title, frameon=False, fontsize=9)


def _plot_frame(df):
    """Plain numpy dtypes for plotting (nullable Int64 -> float with NaN)."""
    d = df.copy()
    for col in d.columns:
        if str(d[col].dtype) in ("Int64", "Float64"):
            d[col] = d[col].astype("float64")
    d["setting"] = setting_labels(df).values if len(df) else []
    return d


def _limit_settings(settings: list[str]) -> tuple[list[str], str]:
    if len(settings) <= MAX_PANELS:
        return settings, ""
    return settings[:MAX_PANELS], (f" Only the first {MAX_PANELS} of {len(settings)} settings are drawn; "
                                   "the summary table lists all.")


def fig_memory_vs_seq_len(df):
    """(b) peak_bytes against seq_len per method (log-log); rows = setting, columns = forgetting limit.

    Returns (Figure, note) or (None, reason) when there is nothing to draw.
    """
    import seaborn as sns
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    d = _plot_frame(df[df["peak_bytes"].notna()])
    if not len(d):
        return None, "No benchmark has a peak_bytes figure."
    d["peak (MiB)"] = d["peak_bytes"] / MIB
    # one panel per (setting, forgetting limit) measured at two or more sequence lengths: a single point says
    # nothing about growth (those configurations are in the summary table)
    pairs, single = [], 0
    for s in sorted(d["setting"].unique()):
        for lim in forget_order(d.loc[d["setting"] == s, "forget_label"]):
            sub = d[(d["setting"] == s) & (d["forget_label"] == lim)]
            if sub["seq_len"].nunique() >= 2:
                pairs.append((s, lim))
            else:
                single += 1
    if not pairs:
        return None, "No configuration was measured at two or more sequence lengths."
    extra = ""
    if len(pairs) > MAX_PANELS:
        extra = f" Only the first {MAX_PANELS} of {len(pairs)} settings are drawn; the summary table lists all."
        pairs = pairs[:MAX_PANELS]
    if single:
        extra += f" {single} configuration(s) measured at a single sequence length are not drawn here."
    ncols = min(3, len(pairs))
    nrows = -(-len(pairs) // ncols)
    labels = method_order(d["method_label"])
    pal, mk = method_palette(labels), method_markers(labels)
    fig, axes = _new_figure(nrows, ncols, 3.6, 2.9, sharex=True, sharey=True)
    seq = sorted(d["seq_len"].dropna().unique())
    with third_party_warnings_visible():
        for idx in range(nrows * ncols):
            ax = axes[idx // ncols][idx % ncols]
            if idx >= len(pairs):
                ax.set_visible(False)
                continue
            s, lim = pairs[idx]
            sub = d[(d["setting"] == s) & (d["forget_label"] == lim)]
            present = [m for m in labels if m in set(sub["method_label"])]
            sns.lineplot(data=sub, x="seq_len", y="peak (MiB)", hue="method_label", style="method_label",
                         hue_order=present, style_order=present, palette=pal, markers=mk, dashes=False,
                         errorbar=None, estimator="median", legend=False, ax=ax, markersize=6)
            ax.set_xlim(min(seq) / 1.25, max(seq) * 1.25)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(FixedLocator(seq))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            _log_axis_labels(ax.yaxis)
            _style_axes(ax)
            ax.set_title(s if lim == "n/a" else f"{s}\nforgetting limit {lim}", fontsize=9)
            ax.set_xlabel("seq_len (steps)")
            ax.set_ylabel("peak activation memory (MiB)" if idx % ncols == 0 else "")
            ax.tick_params(labelbottom=True, labelleft=True)
    _method_legend(fig, labels, pal, mk)
    return fig, extra


def headline_points(df):
    """One row per method and setting at the setting's largest seq_len (the frontier's points).

    Methods with an information buffer get one row per forgetting limit (`point` = "label (3 bits)");
    the others do not depend on the forgetting limit and get the median over those configurations.
    Columns: setting, seq_len, method_label, point, n_configs, the figures (medians), `x`, `y`
    (fraction/ratio of bptt when bptt was measured on every configuration, else MiB/ms) and `pareto`.
    The returned frame's attrs["use_ratio"] says which.
    """
    import pandas as pd

    d = _plot_frame(add_relative_columns(df))
    d = d[d["peak_bytes"].notna() & d["time_median_s"].notna()]
    figures = ["peak_bytes", "peak_fraction_of_bptt", "allocator_saving", "saving_actual", "saving_ideal",
               "time_median_s", "time_ratio_vs_bptt"]
    if not len(d):
        out = pd.DataFrame(columns=["setting", "seq_len", "method_label", "point", "n_configs", *figures, "x", "y",
                                    "pareto"])
        out.attrs["use_ratio"] = False
        return out
    use_ratio = bool(d["peak_fraction_of_bptt"].notna().all() and d["time_ratio_vs_bptt"].notna().all())
    buffer_methods = set(d.loc[d["buffer_bits_actual"].notna(), "method_label"])
    pieces = []
    for setting, sub in d.groupby("setting", sort=True):
        sub = sub[sub["seq_len"] == sub["seq_len"].max()]
        for label in method_order(sub["method_label"]):
            g = sub[sub["method_label"] == label]
            if label in buffer_methods and g["forget_label"].nunique() > 1:
                groups = [(f"{label} ({lim})", g[g["forget_label"] == lim]) for lim in forget_order(g["forget_label"])]
            else:
                groups = [(label, g)]
            for point, h in groups:
                row = dict(setting=setting, seq_len=int(h["seq_len"].iloc[0]), method_label=label, point=point,
                           n_configs=len(h))
                row.update({f: h[f].median() for f in figures})
                pieces.append(row)
    pts = pd.DataFrame(pieces)
    if use_ratio:
        pts["x"], pts["y"] = pts["peak_fraction_of_bptt"], pts["time_ratio_vs_bptt"]
    else:
        pts["x"], pts["y"] = pts["peak_bytes"] / MIB, pts["time_median_s"] * 1e3
    pts["pareto"] = False
    for _, g in pts.groupby("setting"):
        pts.loc[g.index, "pareto"] = pareto_optimal(g["x"], g["y"])
    pts.attrs["use_ratio"] = use_ratio
    return pts


def _log_axis_labels(axis):
    """Plain-number tick labels (0.2, 0.5, 1, 2, 5, 10 ...) on a log axis instead of 2x10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _annotate_without_overlap(ax, xs, ys, texts, min_dy_px: float = 12.0, min_dx_px: float = 40.0):
    """Label points, nudging labels upward so that labels of nearby points do not print over each other.

    Call once the figure's layout is final (fig.draw_without_rendering()): positions are computed in pixels.
    """
    placed = []  # (x_px, y_px) of labels already placed
    disp = ax.transData.transform(list(zip(xs, ys))) if len(xs) else []
    for (px, py), x, y, text in sorted(zip(disp, xs, ys, texts), key=lambda t: (t[0][1], t[0][0])):
        ly = py + 4
        moved = True
        while moved:
            moved = False
            for qx, qy in placed:
                if abs(qx - px) < min_dx_px and abs(qy - ly) < min_dy_px:
                    ly = qy + min_dy_px
                    moved = True
        placed.append((px, ly))
        points_per_px = 72.0 / ax.figure.dpi
        ax.annotate(text, (x, y), xytext=(6, (ly - py) * points_per_px), textcoords="offset points", fontsize=7.5,
                    color="#333", annotation_clip=False)


def fig_time_memory_frontier(df):
    """(c) time against memory for every method, per setting at its largest seq_len; Pareto-optimal points ringed."""
    from matplotlib.lines import Line2D

    pts = headline_points(df)
    use_ratio = pts.attrs.get("use_ratio", False)
    if not len(pts):
        return None, "No benchmark has both peak_bytes and a median time."
    settings, extra = _limit_settings(sorted(pts["setting"].unique()))
    labels = method_order(pts["method_label"])
    pal, mk = method_palette(labels), method_markers(labels)
    ncols = min(len(settings), 3)
    nrows = math.ceil(len(settings) / ncols)
    fig, axes = _new_figure(nrows, ncols, 4.4, 3.7)
    to_label = []  # labels go on last, once the legend has taken its room and the layout is settled
    for idx, s in enumerate(settings):
        ax = axes[idx // ncols][idx % ncols]
        g = pts[pts["setting"] == s]
        front = g[g["pareto"]].sort_values("x")
        ax.step(front["x"], front["y"], where="post", color="#333", linewidth=1, linestyle="--", zorder=1)
        for _, p in g.iterrows():
            ax.scatter(p["x"], p["y"], s=90 if p["pareto"] else 45, marker=mk[p["method_label"]],
                       color=pal[p["method_label"]], edgecolor="black" if p["pareto"] else "none",
                       linewidth=1.4, alpha=1.0 if p["pareto"] else 0.75, zorder=3)
        ax.set_xscale("log")
        _log_axis_labels(ax.xaxis)
        _style_axes(ax)
        ax.margins(x=0.12, y=0.08)
        texts = [_limit_tag(p, m) if p != m else _short_label(p) for p, m in zip(g["point"], g["method_label"])]
        to_label.append((ax, list(g["x"]), list(g["y"]), texts))
        ax.set_title(f"{s}, seq_len {int(g['seq_len'].iloc[0])}", fontsize=10)
        if use_ratio:
            ax.set_xlabel("peak activation memory / bptt's (log scale)")
            ax.set_ylabel("median step time / bptt's")
            ax.axhline(1.0, color="#bbb", linewidth=0.8, zorder=0)
        else:
            ax.set_xlabel("peak activation memory (MiB, log scale)")
            ax.set_ylabel("median step time (ms)")
    for idx in range(len(settings), nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    ring = Line2D([], [], marker="o", linestyle="--", color="#333", markerfacecolor="white", markeredgecolor="black",
                  markeredgewidth=1.4, label="Pareto-optimal\n(frontier)")
    _method_legend(fig, labels, pal, mk, extra=[ring])
    fig.draw_without_rendering()
    for ax, xs, ys, texts in to_label:
        _annotate_without_overlap(ax, xs, ys, texts)
    note = extra
    if not use_ratio:
        note += " Absolute values are shown because bptt was not measured on every configuration."
    return fig, note


def _limit_tag(point: str, method: str) -> str:
    """'reversible (3 bits)' -> '3', 'reversible (no limit)' -> '∞' (labels next to buffered methods' points)."""
    tag = point.replace(method, "").strip(" ()")
    return "∞" if tag == "no limit" else tag.replace(" bits", "")


def _short_label(label: str) -> str:
    return re.sub(r",?\s*policy=\w+", "", str(label)).replace("budget=", "b=")


def _buffer_rows(df):
    return df[df["saving_actual"].notna() | df["saving_ideal"].notna() | df["buffer_bits_actual"].notna()]


def fig_saving_ratios(df):
    """(d) memory-saving ratios per forgetting limit: allocator vs paper-style (actual, ideal), side by side."""
    import seaborn as sns

    b = _buffer_rows(df)
    if not len(b):
        return None, ("No method with an information buffer in this file (no paper-style savings); "
                      "section omitted.")
    d = _plot_frame(b)
    measures = {"allocator_saving": "allocator: bptt peak / peak",
                "saving_actual": "paper-style, actual buffer bits",
                "saving_ideal": "paper-style, ideal bits (Σ −log2 z)"}
    long = d.melt(id_vars=["setting", "method_label", "forget_label", "seq_len"], value_vars=list(measures),
                  var_name="measure", value_name="saving").dropna(subset=["saving"])
    long["measure"] = long["measure"].map(measures)
    settings, extra = _limit_settings(sorted(long["setting"].unique()))
    methods = method_order(long["method_label"])
    limits = forget_order(long["forget_label"])
    hue_order = [m for m in measures.values() if m in set(long["measure"])]
    pal = dict(zip(measures.values(), ("#3b6ea8", "#c8651b", "#7e5aa6")))
    fig, axes = _new_figure(len(methods), len(settings), 4.2, 3.0, sharey=True)
    with third_party_warnings_visible():
        for i, m in enumerate(methods):
            for j, s in enumerate(settings):
                ax = axes[i][j]
                sub = long[(long["method_label"] == m) & (long["setting"] == s)]
                if not len(sub):
                    ax.set_visible(False)
                    continue
                sns.barplot(data=sub, x="forget_label", y="saving", hue="measure", order=limits, hue_order=hue_order,
                            palette=pal, estimator="median", errorbar=("pi", 100), err_kws={"linewidth": 1},
                            capsize=0.15, legend=False, ax=ax)
                for container in ax.containers:
                    if hasattr(container, "patches"):
                        ax.bar_label(container, fmt="%.1f", fontsize=7.5, label_type="center", color="white",
                                     fontweight="bold")
                _style_axes(ax)
                ax.set_title(f"{m} · {s}", fontsize=10)
                ax.set_xlabel("forgetting limit (max_forget_bits)")
                ax.set_ylabel("memory saving (×, higher is better)" if j == 0 else "")
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=pal[h], label=h) for h in hue_order], loc="outside right upper",
               title="saving ratio", frameon=False, fontsize=9)
    seqs = sorted(int(x) for x in long["seq_len"].dropna().unique())
    note = extra + (f" Bars: median over seq_len {', '.join(map(str, seqs))}; whiskers: min-max." if len(seqs) > 1
                    else "")
    return fig, note


def fig_buffer_efficiency(df):
    """(e) buffer efficiency = buffer_bits_actual / buffer_bits_ideal per forgetting limit and setting (1 = ideal)."""
    import seaborn as sns

    b = _buffer_rows(df)
    b = b[b["buffer_bits_actual"].notna() & b["buffer_bits_ideal"].notna() & (b["buffer_bits_ideal"] > 0)]
    if not len(b):
        return None, "No benchmark reports both buffer_bits_actual and buffer_bits_ideal; section omitted."
    d = _plot_frame(b)
    d["efficiency"] = d["buffer_bits_actual"] / d["buffer_bits_ideal"]
    methods = method_order(d["method_label"])
    limits = forget_order(d["forget_label"])
    settings, extra = _limit_settings(sorted(d["setting"].unique()))
    d = d[d["setting"].isin(settings)]
    pal = dict(zip(settings, sns.color_palette("deep", len(settings))))
    fig, axes = _new_figure(1, len(methods), 5.2, 3.2, sharey=True)
    with third_party_warnings_visible():
        for j, m in enumerate(methods):
            ax = axes[0][j]
            sub = d[d["method_label"] == m]
            sns.barplot(data=sub, x="forget_label", y="efficiency", hue="setting", order=limits,
                        hue_order=[s for s in settings if s in set(sub["setting"])], palette=pal, estimator="median",
                        errorbar=("pi", 100), err_kws={"linewidth": 1}, capsize=0.15, legend=False, ax=ax)
            for container in ax.containers:
                if hasattr(container, "patches"):
                    ax.bar_label(container, fmt="%.2f", fontsize=7.5, label_type="center", color="white",
                                 fontweight="bold")
            ax.axhline(1.0, color="#333", linestyle="--", linewidth=1)
            _style_axes(ax)
            ax.set_title(m, fontsize=10)
            ax.set_xlabel("forgetting limit (max_forget_bits)")
            ax.set_ylabel("allocated bits / ideal bits (1 = ideal, lower is better)" if j == 0 else "")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=pal[s], label=s) for s in settings]
    handles.append(Line2D([], [], color="#333", linestyle="--", label="ideal (1.0)"))
    fig.legend(handles=handles, loc="outside right upper", title="setting", frameon=False, fontsize=9)
    seqs = sorted(int(x) for x in d["seq_len"].dropna().unique())
    note = extra + (f" Bars: median over seq_len {', '.join(map(str, seqs))}; whiskers: min-max." if len(seqs) > 1
                    else "")
    return fig, note


# ---------------------------------------------------------------------------------------------------
# sections and the page
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    """One part of the report: `build(df)` returns an HTML fragment. `kind`: which records it is built from
    ("lm": language-model steps, "seq2seq": encoder-decoder steps, "all")."""
    key: str
    title: str
    build: Callable
    kind: str = "lm"


def _figure_section(fn, caption: str, how: Callable, alt: str):
    def build(df):
        fig, note = fn(df)
        if fig is None:
            return note_html(note)
        return figure_html(fig, caption + (" " + note.strip() if note else ""), how(df), alt)
    return build


SECTIONS: tuple[Section, ...] = (
    Section("summary", "Summary", summary_html),
    Section("memory", "Activation memory against sequence length", _figure_section(
        fig_memory_vs_seq_len,
        "Peak activation memory of one training step against the segment length, per method; one panel per "
        "setting and forgetting limit; both axes logarithmic (a slope of 1 means memory grows linearly with T).",
        peak_how, "peak memory against seq_len")),
    Section("frontier", "Time-memory frontier", _figure_section(
        fig_time_memory_frontier,
        "Every method at the largest seq_len of each setting: median step time against peak activation memory. "
        "Points ringed in black and joined by the dashed line are Pareto-optimal (no other method is both faster "
        "and smaller). Methods without an information buffer do not depend on the forgetting limit and are shown "
        "as the median over the forgetting-limit configurations; buffered methods get one point per limit, "
        "labelled with the limit in bits (∞ = no limit).",
        lambda df: f"{peak_how(df)} {time_how(df)}", "time against memory, Pareto frontier")),
    Section("savings", "Memory-saving ratios per forgetting limit", _figure_section(
        fig_saving_ratios,
        "Memory saving of methods with an information buffer, per forgetting limit (\"no limit\" = max_forget_bits "
        "None): the allocator's view (bptt's peak_bytes / this peak_bytes) next to the paper-style, model-level "
        "ratios (baseline state bits / buffer bits, actual and ideal).",
        lambda df: (f"allocator ratio from peak_bytes of both methods in the same run ({peak_how(df)}); "
                    "paper-style ratios from the method's own bit accounting: baseline = 32·T·B·H per layer (×2 for "
                    "LSTM), actual = bits allocated for buffer chunks, ideal = Σ −log2 z of the forget gates."),
        "memory-saving ratios per forgetting limit")),
    Section("efficiency", "Buffer efficiency", _figure_section(
        fig_buffer_efficiency,
        "How much more the information buffer allocates than the information it must keep: "
        "buffer_bits_actual / buffer_bits_ideal, per forgetting limit and setting. 1.0 is a perfect buffer.",
        lambda df: ("bit accounting of the method itself: actual = 64 bits per int64 entry of every buffer chunk "
                    "(plus overflow flags), ideal = Σ −log2 z over time steps, batch and units."),
        "buffer efficiency per forgetting limit")),
    Section("seq2seq", "Encoder-decoder (attention NMT step)", lambda df: _seq2seq_html(df), kind="seq2seq"),
    Section("meters", "Independent memory meters", meters_html, kind="all"),
    Section("environment", "Environment", environment_html, kind="all"),
)


def _seq2seq_html(df) -> str:
    from revbench.report.seq2seq import seq2seq_html

    return seq2seq_html(df)


def _section_body(section: Section, df) -> str:
    """Build ``section`` from the rows of its kind; a note where the file has none."""
    if section.kind == "all":
        return section.build(df)
    lm, s2s = split_kinds(df)
    rows = lm if section.kind == "lm" else s2s
    if section.kind == "lm" and not len(rows):
        return note_html("no language-model benchmarks in this file")
    return section.build(rows)


def section_html(df, key: str) -> str:
    """The HTML fragment of one report section (also used by the notebook)."""
    for s in SECTIONS:
        if s.key == key:
            return _section_body(s, df)
    raise KeyError(f"no report section {key!r}; known: {', '.join(s.key for s in SECTIONS)}")


def _slug(text: str, used: set) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


def build_report_html(df, title: str = "revbench benchmark report",
                      extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """The whole report as one HTML string."""
    for t, frag in extra_sections:
        check_self_contained(frag, f"extra section {t!r}")
    used: set = set()
    body, toc = [], []
    for s in SECTIONS:
        slug = _slug(s.key, used)
        toc.append((slug, s.title))
        body.append(f'<section id="{slug}"><h2>{_esc(s.title)}</h2>{_section_body(s, df)}</section>')
    for t, frag in extra_sections:
        slug = _slug(t, used)
        toc.append((slug, t))
        body.append(f'<section id="{slug}" class="extra"><h2>{_esc(t)}</h2>{frag}</section>')
    methods = ", ".join(method_order(df["method_label"]))
    cells = ", ".join(sorted({str(c) for c in df["cell"]}))
    sub = (f"{len(df)} benchmarks · methods: {methods} · cells: {cells} · run {df.attrs.get('datetime') or 'n/a'} · "
           f"source: {df.attrs.get('source', 'n/a')}")
    toc_html = "".join(f'<li><a href="#{slug}">{_esc(t)}</a></li>' for slug, t in toc)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header class="top"><h1>{_esc(title)}</h1><p class="sub">{_esc(sub)}</p></header>'
        f'<nav class="toc"><strong>Contents</strong><ol>{toc_html}</ol></nav>'
        + "".join(body)
        + "<footer>Generated by revbench report. One self-contained file: figures are embedded PNG, "
          "no scripts, nothing loaded from the network.</footer></main></body></html>\n")
    check_self_contained(page, "report")
    return page


def render_report(df_or_path, out_html, title: str = "revbench benchmark report",
                  extra_sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write the self-contained HTML report of a benchmark DataFrame or JSON path; returns the path written.

    The file is written to a temporary file beside `out_html` and renamed into place, so a
    failure never leaves a half-written report or replaces an earlier one.
    """
    df = df_or_path if hasattr(df_or_path, "columns") else load_benchmarks(df_or_path)
    page = build_report_html(df, title=title, extra_sections=extra_sections)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    atomic_write(path, lambda fh: fh.write(text))
