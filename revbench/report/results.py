"""Read benchmark JSON (pytest-benchmark output carrying revbench records) into a pandas DataFrame.

`load_benchmarks(path)` returns one row per benchmark: the flat revbench record
(`extra_info`, schema "revbench.record/1", see the record contract) plus
pytest-benchmark's `name`, `fullname`, `group` and the timing columns
`time_median_s`, `time_mean_s`, `time_min_s`, `time_stddev_s`, `time_iqr_s`
(seconds, from pytest-benchmark's `stats`) and `rounds`. File-level metadata
(`machine_info`, `commit_info`, `datetime`, `version`, `source`) is in `df.attrs`.

Unavailable figures stay missing (pandas NA / NaN), never 0; the reason, when
the harness gave one, is in the `<figure>_reason` column. Anything that is not
a readable revbench benchmark file raises `BenchmarkFileError` naming the file
and the problem.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

RECORD_SCHEMA = "revbench.record/1"
RECORD_SCHEMA_PREFIX = "revbench.record/"

# --- the record's keys, by kind (see the record contract) ---------------------------------------------
IDENTITY_STR = ("method", "method_options", "method_label", "cell", "device", "dtype", "config_id")
IDENTITY_INT = ("num_layers", "hidden_size", "emb_size", "batch_size", "seq_len", "vocab_size")
MEMORY_BYTES = (
    "peak_bytes", "live_peak_bytes", "live_peak_param_bytes", "live_peak_grad_bytes", "live_peak_other_bytes",
    "cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes", "nvml_peak_used_bytes",
    "nvml_process_peak_used_bytes", "rss_peak_delta_bytes", "saved_bytes",
)
BITS = ("state_bits_baseline", "buffer_bits_actual", "buffer_bits_ideal")  # ideal bits may be fractional
RATIOS = ("saving_actual", "saving_ideal", "buffer_efficiency", "allocator_saving")
WORK_INT = ("forward_steps", "reverse_steps", "stored_states_peak")
ENV_STR = ("torch_version", "python_version", "platform", "device_name", "commit", "hostname", "peak_bytes_meter")
ENV_INT = ("cpu_count",)

# encoder-decoder records (kind "seq2seq", revbench.measure.seq2seq_bench): per-side figures
SEQ2SEQ_STR = ("kind", "context")
SEQ2SEQ_INT = ("src_len", "tgt_len", "enc_held_bytes", "dec_held_bytes")
SEQ2SEQ_FLOAT = ("enc_state_bits_baseline", "enc_buffer_bits_actual", "enc_buffer_bits_ideal", "enc_context_bits_actual",
                 "enc_saving_actual", "enc_saving_ideal", "dec_state_bits_baseline", "dec_buffer_bits_actual",
                 "dec_buffer_bits_ideal", "dec_saving_actual", "dec_saving_ideal", "enc_allocator_saving",
                 "dec_allocator_saving")
KIND_LM, KIND_SEQ2SEQ = "lm", "seq2seq"

INT_KEYS = IDENTITY_INT + MEMORY_BYTES + WORK_INT + ENV_INT + ("max_forget_bits",) + SEQ2SEQ_INT
FLOAT_KEYS = BITS + RATIOS + SEQ2SEQ_FLOAT
STR_KEYS = IDENTITY_STR + ENV_STR + SEQ2SEQ_STR
RECORD_KEYS = ("record_schema",) + IDENTITY_STR + IDENTITY_INT + ("max_forget_bits",) + MEMORY_BYTES + (
    "peak_bytes_meter",) + BITS + RATIOS + WORK_INT + ENV_STR + ENV_INT

# keys a record must carry (value may be null only where the contract allows it)
REQUIRED_KEYS = ("record_schema",) + IDENTITY_STR + ("seq_len", "max_forget_bits", "peak_bytes")
REQUIRED_NOT_NULL = IDENTITY_STR + ("seq_len",)

TIMING_COLUMNS = {  # our column -> pytest-benchmark stats key
    "time_median_s": "median",
    "time_mean_s": "mean",
    "time_min_s": "min",
    "time_stddev_s": "stddev",
    "time_iqr_s": "iqr",
    "rounds": "rounds",
}
BENCHMARK_COLUMNS = ("name", "fullname", "group")


class BenchmarkFileError(ValueError):
    """A benchmark JSON file cannot be used: unreadable, malformed, foreign or without revbench records.

    `path` is the file and `problem` says what is wrong; str() gives both.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BenchmarkFileNotFoundError(BenchmarkFileError, FileNotFoundError):
    """The benchmark JSON file does not exist (also a FileNotFoundError)."""


def load_benchmarks(path) -> "pandas.DataFrame":  # noqa: F821
    """Load one `pytest --benchmark-json` file holding revbench records; one row per benchmark."""
    path = Path(path)
    if not path.exists():
        raise BenchmarkFileNotFoundError(path, "no such file")
    if path.is_dir():
        raise BenchmarkFileError(path, "is a directory, not a benchmark JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchmarkFileError(path, f"cannot be read ({exc})") from None
    if not text.strip():
        raise BenchmarkFileError(
            path, "is empty (pytest-benchmark writes no JSON when benchmarks are disabled or none ran)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkFileError(path, f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") \
            from None
    return benchmarks_from_dict(data, source=path)


def benchmarks_from_dict(data: Any, source="<data>") -> "pandas.DataFrame":  # noqa: F821
    """Validate a parsed pytest-benchmark document and turn it into the DataFrame `load_benchmarks` returns."""
    import pandas as pd

    entries = _check_document(data, source)
    rows = [_row(entry, i, source) for i, entry in enumerate(entries)]

    fullnames = [r["fullname"] for r in rows]
    dupes = sorted({n for n in fullnames if fullnames.count(n) > 1})
    if dupes:
        raise BenchmarkFileError(source, f"benchmark listed more than once: {', '.join(dupes[:3])}")

    columns = list(BENCHMARK_COLUMNS) + [k for k in RECORD_KEYS if k != "record_schema"] + list(TIMING_COLUMNS)
    extra = sorted({k for r in rows for k in r} - set(columns) - {"record_schema"})
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


# --- validation -------------------------------------------------------------------------------------

def _check_document(data, source) -> list:
    if not isinstance(data, dict):
        raise BenchmarkFileError(
            source, f"is not pytest-benchmark output (top level is a JSON {type(data).__name__}, expected an object "
                    "with a 'benchmarks' list)")
    if "benchmarks" not in data:
        keys = ", ".join(sorted(map(str, data))[:6]) or "none"
        raise BenchmarkFileError(
            source, f"is not pytest-benchmark output (no 'benchmarks' list; top-level keys: {keys})")
    entries = data["benchmarks"]
    if not isinstance(entries, list):
        raise BenchmarkFileError(source, "is not pytest-benchmark output ('benchmarks' is not a list)")
    if not entries:
        raise BenchmarkFileError(source, "holds no benchmarks (did the suite run, or was it deselected?)")
    bad = [i for i, e in enumerate(entries) if not isinstance(e, dict) or "name" not in e or "stats" not in e]
    if bad:
        raise BenchmarkFileError(
            source, f"is not pytest-benchmark output (benchmark entry #{bad[0]} has no 'name'/'stats')")
    without = [e["name"] for e in entries
               if not isinstance(e.get("extra_info"), dict) or "record_schema" not in e["extra_info"]]
    if without:
        more = f" and {len(without) - 3} more" if len(without) > 3 else ""
        raise BenchmarkFileError(
            source, f"{len(without)} of {len(entries)} benchmarks carry no revbench record (extra_info has no "
                    f"'record_schema'): {', '.join(without[:3])}{more}. Was this file written by the revbench "
                    "suites?")
    return entries


def _row(entry: Mapping, index: int, source) -> dict:
    name = entry["name"]
    rec = entry["extra_info"]
    where = f"benchmark {name!r}"
    schema = rec["record_schema"]
    if not isinstance(schema, str) or not schema.startswith(RECORD_SCHEMA_PREFIX):
        raise BenchmarkFileError(source, f"{where}: unknown record_schema {schema!r} (expected {RECORD_SCHEMA!r})")
    if schema != RECORD_SCHEMA:
        raise BenchmarkFileError(
            source, f"{where}: record schema {schema!r} is not supported (this revbench reads {RECORD_SCHEMA!r})")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise BenchmarkFileError(source, f"{where}: record lacks required key(s) {', '.join(missing)}")
    nulls = [k for k in REQUIRED_NOT_NULL if rec[k] is None]
    if nulls:
        raise BenchmarkFileError(source, f"{where}: record has null {', '.join(nulls)}")
    for key, value in rec.items():
        problem = _type_problem(key, value)
        if problem:
            raise BenchmarkFileError(source, f"{where}: {key} {problem}")

    stats = entry["stats"]
    if not isinstance(stats, dict):
        raise BenchmarkFileError(source, f"{where}: has no timing stats (stats is {stats!r})")
    row = dict(rec)
    row["name"] = name
    row["fullname"] = entry.get("fullname", name)
    row["group"] = entry.get("group")
    for col, key in TIMING_COLUMNS.items():
        value = stats.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and math.isnan(value)):
            raise BenchmarkFileError(source, f"{where}: stats.{key} is missing or not a number ({value!r})")
        row[col] = value
    return row


def _type_problem(key: str, value) -> str | None:
    if value is None:
        return None
    if key in INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer or null, got {type(value).__name__} {value!r}"
    elif key in FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number or null, got {type(value).__name__} {value!r}"
        if math.isnan(value) or math.isinf(value):
            return f"is {value!r}; an unavailable figure must be null with a '{key}_reason'"
    elif key in STR_KEYS or key.endswith("_reason"):
        if not isinstance(value, str):
            return f"must be a string or null, got {type(value).__name__} {value!r}"
    return None
