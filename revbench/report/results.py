"""Read benchmark JSON (pytest-benchmark output carrying revbench records) into a pandas DataFrame.

`load_benchmarks(path)` returns one row per benchmark: the flat revbench record
(`extra_info`, schema "revbench.record/1"; the contract is in revbench.report.validate) plus
pytest-benchmark's `name`, `fullname`, `group` and the timing columns
`time_median_s`, `time_mean_s`, `time_min_s`, `time_stddev_s`, `time_iqr_s`
(seconds, from pytest-benchmark's `stats`) and `rounds`. File-level metadata
(`machine_info`, `commit_info`, `datetime`, `version`, `source`) is in `df.attrs`.

Unavailable figures stay missing (pandas NA / NaN), never 0; the reason, when
the harness gave one, is in the `<figure>_reason` column. Anything that is not
a readable revbench benchmark file, or holds a value the contract rules out (a
wrong type, a negative or zero size, byte count or time, an unknown kind, nesting
no pytest-benchmark file has), raises `BenchmarkFileError` naming the file and the
problem in one line; nothing else escapes (no RecursionError, OverflowError, ...).
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from revbench.report.validate import (BENCHMARK_COLUMNS, FLOAT_KEYS, INT_KEYS, KIND_LM, KIND_SEQ2SEQ, RECORD_KEYS,
                                      SEQ2SEQ_KEYS, TIMING_COLUMNS, BenchmarkFileError, check_document, check_entry,
                                      read_document)
from revbench.report.validate import BenchmarkFileNotFoundError, RECORD_SCHEMA  # noqa: F401  (re-exported)


def load_benchmarks(path) -> "pandas.DataFrame":  # noqa: F821
    """Load one `pytest --benchmark-json` file holding revbench records; one row per benchmark."""
    path = Path(path)
    return benchmarks_from_dict(read_document(path), source=path)


def benchmarks_from_dict(data: Any, source="<data>") -> "pandas.DataFrame":  # noqa: F821
    """Validate a parsed pytest-benchmark document and turn it into the DataFrame `load_benchmarks` returns."""
    entries = check_document(data, source)
    rows = [check_entry(entry, source) for entry in entries]

    counts = Counter(r["fullname"] for r in rows)
    dupes = sorted(n for n, c in counts.items() if c > 1)
    if dupes:
        raise BenchmarkFileError(source, f"benchmark listed more than once: {', '.join(dupes[:3])}")

    import pandas as pd

    columns = list(BENCHMARK_COLUMNS) + [k for k in RECORD_KEYS if k != "record_schema"] + list(TIMING_COLUMNS)
    # an encoder-decoder record lacking an optional per-side figure still gets its (missing) column
    s2s = set(SEQ2SEQ_KEYS) if any(r.get("kind") == KIND_SEQ2SEQ for r in rows) else set()
    extra = sorted(({k for r in rows for k in r} | s2s) - set(columns) - {"record_schema"})
    columns = columns + extra + ["record_schema"]
    frame = {}
    for col in columns:
        values = [r.get(col) for r in rows]
        if col in INT_KEYS or col == "rounds":
            frame[col] = pd.array(values, dtype="Int64")
        elif col in FLOAT_KEYS or col in TIMING_COLUMNS:
            frame[col] = pd.array([math.nan if v is None else float(v) for v in values], dtype="float64")
        else:
            frame[col] = pd.Series(values, dtype=object)
    df = pd.DataFrame(frame)
    # records without a kind (written before encoder-decoder benchmarks existed) are language-model steps
    df["kind"] = [KIND_LM if k is None else k for k in (df["kind"] if "kind" in df else [None] * len(df))]
    df["forget_label"] = [forget_label(v, c) for v, c in zip(df["max_forget_bits"], df["cell"])]
    df.attrs.update({
        "source": str(source),
        "machine_info": data.get("machine_info") or {},
        "commit_info": data.get("commit_info") or {},
        "datetime": data.get("datetime"),
        "version": data.get("version"),
    })
    return df


def split_kinds(df):
    """(language-model rows, encoder-decoder rows) of a benchmark DataFrame, each keeping ``df.attrs``."""
    s2s = df["kind"] == KIND_SEQ2SEQ
    lm, enc_dec = df[~s2s].copy(), df[s2s].copy()
    lm.attrs, enc_dec.attrs = dict(df.attrs), dict(df.attrs)
    return lm, enc_dec


REVERSIBLE_CELL_PREFIXES = ("rev", "nf-rev")


def forget_label(max_forget_bits, cell: str | None = None) -> str:
    """Human label of a forgetting limit: '3 bits', 'no limit' (None on a reversible cell), or 'n/a'
    (None on an ordinary cell such as 'gru'/'lstm' or a no-forgetting 'nf-' cell: no forgetting limit applies)."""
    import pandas as pd

    if max_forget_bits is None or pd.isna(max_forget_bits):
        if cell is not None and (str(cell).startswith("nf-") or not str(cell).startswith(REVERSIBLE_CELL_PREFIXES)):
            return "n/a"
        return "no limit"
    return f"{int(max_forget_bits)} bits"


def forget_order(labels) -> list[str]:
    """Forgetting-limit labels sorted by limit, then 'no limit', then 'n/a'."""
    def key(label):
        if label == "no limit":
            return (1, 0)
        if label == "n/a":
            return (2, 0)
        return (0, int(str(label).split()[0]))
    return sorted(set(labels), key=key)


def add_relative_columns(df, baseline_method: str = "bptt"):
    """Return a copy with `peak_fraction_of_<b>` and `time_ratio_vs_<b>` against method `b` on the same config_id.

    The baseline row is the one with method == baseline_method on the same config_id (the one
    with method_options "{}" when there are several). Missing baseline -> NaN (not 0, not 1).
    """
    import numpy as np

    out = df.copy()
    base = df[df["method"] == baseline_method]
    if len(base):
        base = base.assign(_default=(base["method_options"] != "{}")).sort_values(["config_id", "_default"])
        base = base.drop_duplicates("config_id").set_index("config_id")
    peak = base["peak_bytes"].astype("float64") if len(base) else None
    time = base["time_median_s"].astype("float64") if len(base) else None
    bpk = out["config_id"].map(peak) if peak is not None else np.nan
    btm = out["config_id"].map(time) if time is not None else np.nan
    out[f"peak_fraction_of_{baseline_method}"] = out["peak_bytes"].astype("float64") / bpk
    out[f"time_ratio_vs_{baseline_method}"] = out["time_median_s"].astype("float64") / btm
    return out
