"""The benchmark file contract and its checks: what `revbench report` and `revbench compare` accept.

A benchmark file is pytest-benchmark JSON whose every benchmark carries a revbench record
(`extra_info`, schema "revbench.record/1"). `read_document(path)` parses one; `check_document(data,
source)` checks the document and returns its benchmark entries; `check_entry(entry, source)` checks one
entry and returns its flat row. Anything that breaks the contract raises `BenchmarkFileError` naming
the file and, in one line, what is wrong. The contract:

- the document is a JSON object, UTF-8 text without unpaired surrogates, nested at most
  MAX_DEPTH levels; `machine_info` and `commit_info` are objects (or null), `datetime` and `version`
  strings (or null);
- each benchmark has a non-empty string `name`, a string `fullname` and `group` (or null), an object
  `stats` whose `median`, `mean`, `min` are times in seconds (> 0, at most MAX_SECONDS), `stddev`
  and `iqr` times >= 0, and `rounds` an integer >= 1;
- the record has the keys of REQUIRED_KEYS (and of REQUIRED_SEQ2SEQ when its `kind` is "seq2seq"),
  `kind` is absent, null, "lm" or "seq2seq"; each known key has its type (INT_KEYS integers,
  FLOAT_KEYS numbers, STR_KEYS and `*_reason` strings; null marks a figure that is unavailable);
  integers fit in 64 bits; bytes (every `*_bytes` key) are >= 0 and `peak_bytes`, `live_peak_bytes`
  > 0; sizes (layers, hidden, embedding, batch, sequence and vocabulary sizes) >= 1;
  `max_forget_bits` 1..10; work counts and bits >= 0 (`buffer_bits_reference` too); ratios > 0 (the fused
  ratios too); `fused_time_s` a time in (0, MAX_SECONDS]; `fused_rounds` >= 1; `torch_num_threads` and
  `fused_torch_num_threads` integers >= 1; `fused_reference`, `fused_timer` and `cpu_model` strings; the profiler
  and heap meters' figures (`profiler_*_bytes`, `heap_peak_bytes`) bytes >= 0; numbers are finite.
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
# cost against the fused nn.LSTM/nn.GRU step of the same sizes (revbench.measure.fused_reference)
FUSED_STR = ("fused_reference", "fused_timer")
FUSED_INT = ("fused_peak_bytes", "fused_rounds")
FUSED_RATIOS = ("fused_time_ratio", "fused_peak_ratio")
TIME_KEYS = ("fused_time_s",)                                  # seconds per step: > 0, at most MAX_SECONDS

# keys of this round: threads and CPU (revbench.measure.environment), torch's profiler meter and the heap meter
# (revbench.measure.profiler_meter, revbench.measure.heap; bytes >= 0 by their `_bytes` suffix), the reference
# buffer scheme's bits
THREAD_INT = ("torch_num_threads", "fused_torch_num_threads")          # >= 1
CPU_STR = ("cpu_model",)
METER_BYTES = ("profiler_peak_bytes", "profiler_activation_bytes", "profiler_gradient_bytes",
               "profiler_parameter_bytes", "profiler_temporary_bytes", "profiler_other_bytes", "heap_peak_bytes")
REFERENCE_BITS = ("buffer_bits_reference",)                             # >= 0, may be fractional

# encoder-decoder records (kind "seq2seq", revbench.measure.seq2seq_bench): per-side figures
SEQ2SEQ_STR = ("kind", "context")
SEQ2SEQ_INT = ("src_len", "tgt_len", "enc_held_bytes", "dec_held_bytes")
SEQ2SEQ_FLOAT = ("enc_state_bits_baseline", "enc_buffer_bits_actual", "enc_buffer_bits_ideal",
                 "enc_context_bits_actual", "enc_saving_actual", "enc_saving_ideal", "dec_state_bits_baseline",
                 "dec_buffer_bits_actual", "dec_buffer_bits_ideal", "dec_saving_actual", "dec_saving_ideal",
                 "enc_allocator_saving", "dec_allocator_saving", "enc_buffer_bits_reference", "dec_buffer_bits_reference")
KIND_LM, KIND_SEQ2SEQ = "lm", "seq2seq"
KINDS = (KIND_LM, KIND_SEQ2SEQ)

INT_KEYS = IDENTITY_INT + MEMORY_BYTES + WORK_INT + ENV_INT + ("max_forget_bits",) + SEQ2SEQ_INT + FUSED_INT \
    + THREAD_INT + METER_BYTES
FLOAT_KEYS = BITS + RATIOS + SEQ2SEQ_FLOAT + FUSED_RATIOS + TIME_KEYS + REFERENCE_BITS
STR_KEYS = IDENTITY_STR + ENV_STR + SEQ2SEQ_STR + FUSED_STR + CPU_STR
RECORD_KEYS = ("record_schema",) + IDENTITY_STR + IDENTITY_INT + ("max_forget_bits",) + MEMORY_BYTES + (
    "peak_bytes_meter",) + BITS + RATIOS + WORK_INT + ENV_STR + ENV_INT + FUSED_RATIOS + FUSED_STR + FUSED_INT \
    + TIME_KEYS
SEQ2SEQ_KEYS = SEQ2SEQ_STR + SEQ2SEQ_INT + SEQ2SEQ_FLOAT

# keys a record must carry (value may be null only where the contract allows it)
REQUIRED_KEYS = ("record_schema",) + IDENTITY_STR + ("seq_len", "max_forget_bits", "peak_bytes")
REQUIRED_NOT_NULL = IDENTITY_STR + ("seq_len",)
REQUIRED_SEQ2SEQ = ("context", "src_len", "tgt_len", "enc_held_bytes", "dec_held_bytes")
REQUIRED_SEQ2SEQ_NOT_NULL = ("context", "src_len", "tgt_len")

# --- ranges ---------------------------------------------------------------------------------------
INT64_MAX = 2 ** 63 - 1
SIZE_KEYS = IDENTITY_INT + ("src_len", "tgt_len")          # >= 1
POSITIVE_BYTES = ("peak_bytes", "live_peak_bytes")        # a training step holds something; other bytes >= 0
RATIO_KEYS = RATIOS + FUSED_RATIOS + tuple(k for k in SEQ2SEQ_FLOAT if "saving" in k)   # > 0
FORGET_BITS_RANGE = (1, 10)
MAX_DEPTH = 64          # pytest-benchmark output is about 5 levels deep
MAX_SECONDS = 1e6       # per round (11.6 days): beyond that a time is not a measurement

TIMING_COLUMNS = {  # our column -> pytest-benchmark stats key
    "time_median_s": "median",
    "time_mean_s": "mean",
    "time_min_s": "min",
    "time_stddev_s": "stddev",
    "time_iqr_s": "iqr",
    "rounds": "rounds",
}
POSITIVE_TIMES = ("median", "mean", "min")
BENCHMARK_COLUMNS = ("name", "fullname", "group")


class BenchmarkFileError(ValueError):
    """A benchmark JSON file cannot be used: unreadable, malformed, foreign or without revbench records.

    `path` is the file and `problem` says what is wrong; str() gives both, on one line (control
    characters, a newline in a file or benchmark name included, are shown escaped).
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{one_line(self.path)}: {one_line(problem)}")


def one_line(text: str) -> str:
    """text with every unprintable character (newline, tab, escape, a lone surrogate) written as its escape."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class BenchmarkFileNotFoundError(BenchmarkFileError, FileNotFoundError):
    """The benchmark JSON file does not exist (also a FileNotFoundError)."""


# --- parsing ----------------------------------------------------------------------------------------

def read_document(path: Path) -> Any:
    """The parsed JSON of a benchmark file; BenchmarkFileError when it cannot be read or parsed."""
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
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkFileError(path, f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") \
            from None
    except RecursionError:
        raise BenchmarkFileError(
            path, f"is nested too deeply to parse (a benchmark file is at most {MAX_DEPTH} levels deep)") from None
    except ValueError as exc:  # an integer beyond Python's digit limit for int(str)
        raise BenchmarkFileError(path, f"is not usable JSON: {str(exc).split(':')[0]}") from None


# --- the document -----------------------------------------------------------------------------------

def check_document(data: Any, source) -> list:
    """Check the document level (shape, nesting, text, file metadata); return its benchmark entries."""
    if not isinstance(data, dict):
        raise BenchmarkFileError(
            source, f"is not pytest-benchmark output (top level is a JSON {type(data).__name__}, expected an object "
                    "with a 'benchmarks' list)")
    _check_tree(data, source)
    if "benchmarks" not in data:
        keys = ", ".join(sorted(map(str, data))[:6]) or "none"
        raise BenchmarkFileError(
            source, f"is not pytest-benchmark output (no 'benchmarks' list; top-level keys: {keys})")
    entries = data["benchmarks"]
    if not isinstance(entries, list):
        raise BenchmarkFileError(source, "is not pytest-benchmark output ('benchmarks' is not a list)")
    if not entries:
        raise BenchmarkFileError(source, "holds no benchmarks (did the suite run, or was it deselected?)")
    for key, kinds, wanted in (("machine_info", dict, "an object"), ("commit_info", dict, "an object"),
                               ("datetime", str, "a string"), ("version", str, "a string")):
        if data.get(key) is not None and not isinstance(data[key], kinds):
            raise BenchmarkFileError(source, f"{key} must be {wanted} or null, got {_show(data[key])}")
    for key, sub, kinds, wanted in (("machine_info", "cpu", dict, "an object"), ("commit_info", "id", str, "a string")):
        value = (data.get(key) or {}).get(sub)
        if value is not None and not isinstance(value, kinds):
            raise BenchmarkFileError(source, f"{key}.{sub} must be {wanted} or null, got {_show(value)}")
    bad = [i for i, e in enumerate(entries) if not isinstance(e, dict) or "name" not in e or "stats" not in e]
    if bad:
        raise BenchmarkFileError(
            source, f"is not pytest-benchmark output (benchmark entry #{bad[0]} has no 'name'/'stats')")
    for i, e in enumerate(entries):
        if not isinstance(e["name"], str) or not e["name"]:
            raise BenchmarkFileError(source, f"benchmark entry #{i}: name must be a non-empty string, "
                                             f"got {_show(e['name'])}")
    without = [e["name"] for e in entries
               if not isinstance(e.get("extra_info"), dict) or "record_schema" not in e["extra_info"]]
    if without:
        more = f" and {len(without) - 3} more" if len(without) > 3 else ""
        raise BenchmarkFileError(
            source, f"{len(without)} of {len(entries)} benchmarks carry no revbench record (extra_info has no "
                    f"'record_schema'): {', '.join(without[:3])}{more}. Was this file written by the revbench "
                    "suites?")
    return entries


def _check_tree(data, source) -> None:
    """Nesting depth and text everywhere (keys included), without recursion."""
    stack = [(data, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise BenchmarkFileError(source, f"is nested more than {MAX_DEPTH} levels deep (at {_where(path)}); "
                                             "a benchmark file is about 5")
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            for text in (key, value):
                if isinstance(text, str) and not _is_text(text):
                    raise BenchmarkFileError(source, f"{_where(path + (key,))} holds {_show(text)}, which has an "
                                                     "unpaired surrogate (not text)")
            if isinstance(value, (dict, list)):
                stack.append((value, path + (key,)))


def _is_text(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _where(path) -> str:
    shown = path if len(path) <= 8 else path[:8]
    out = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in shown).lstrip(".")
    return (out or "the top level") + ("..." if len(path) > 8 else "")


def _show(value) -> str:
    """A value for an error message: its type and a short repr (never thousands of characters)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"int with about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# --- one benchmark ----------------------------------------------------------------------------------

def check_entry(entry: Mapping, source) -> dict:
    """Check one benchmark entry (record and stats); return its flat row (record + name columns + timings)."""
    name = entry["name"]
    rec = entry["extra_info"]
    where = f"benchmark {name!r}"
    schema = rec["record_schema"]
    if not isinstance(schema, str) or not schema.startswith(RECORD_SCHEMA_PREFIX):
        raise BenchmarkFileError(source, f"{where}: unknown record_schema {schema!r} (expected {RECORD_SCHEMA!r})")
    if schema != RECORD_SCHEMA:
        raise BenchmarkFileError(
            source, f"{where}: record schema {schema!r} is not supported (this revbench reads {RECORD_SCHEMA!r})")
    kind = rec.get("kind")
    if kind is not None and kind not in KINDS:
        raise BenchmarkFileError(source, f"{where}: kind {_show(kind)} is not a known record kind (expected "
                                         f"{' or '.join(map(repr, KINDS))}, or no kind for a language-model step)")
    required, not_null = REQUIRED_KEYS, REQUIRED_NOT_NULL
    if kind == KIND_SEQ2SEQ:
        required, not_null = required + REQUIRED_SEQ2SEQ, not_null + REQUIRED_SEQ2SEQ_NOT_NULL
    missing = [k for k in required if k not in rec]
    if missing:
        raise BenchmarkFileError(source, f"{where}: record lacks required key(s) {', '.join(missing)}")
    nulls = [k for k in not_null if rec[k] is None]
    if nulls:
        raise BenchmarkFileError(source, f"{where}: record has null {', '.join(nulls)}")
    for key, value in rec.items():
        problem = value_problem(key, value)
        if problem:
            raise BenchmarkFileError(source, f"{where}: {key} {problem}")

    for key in ("fullname", "group"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise BenchmarkFileError(source, f"{where}: {key} must be a string, got {_show(entry[key])}")
    stats = entry["stats"]
    if not isinstance(stats, dict):
        raise BenchmarkFileError(source, f"{where}: has no timing stats (stats is {_show(stats)})")
    row = dict(rec)
    row["name"] = name
    row["fullname"] = name if entry.get("fullname") is None else entry["fullname"]
    row["group"] = entry.get("group")
    for col, key in TIMING_COLUMNS.items():
        value = stats.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BenchmarkFileError(source, f"{where}: stats.{key} is missing or not a number ({_show(value)})")
        problem = _stats_problem(key, value)
        if problem:
            raise BenchmarkFileError(source, f"{where}: stats.{key} {problem}")
        row[col] = int(value) if key == "rounds" else value
    return row


def _stats_problem(key: str, value) -> str | None:
    if key == "rounds":
        if not 1 <= value <= INT64_MAX or (isinstance(value, float) and not value.is_integer()):
            return f"must be a whole number of rounds >= 1, got {_show(value)}"
        return None
    if not 0 <= value <= MAX_SECONDS or (key in POSITIVE_TIMES and value == 0):  # NaN fails both comparisons
        bound = "> 0" if key in POSITIVE_TIMES else ">= 0"
        return f"must be a time in seconds {bound} and at most {MAX_SECONDS:g}, got {_show(value)}"
    return None


def value_problem(key: str, value) -> str | None:
    """What is wrong with one record value under the contract (None when it is fine, null included)."""
    if value is None:
        return None
    if key in INT_KEYS or key.endswith("_bytes"):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer or null, got {_show(value)}"
        lo = _int_floor(key)
        hi = FORGET_BITS_RANGE[1] if key == "max_forget_bits" else INT64_MAX
        if not lo <= value <= hi:
            what = ("bytes" if key.endswith("_bytes") else "a size" if key in SIZE_KEYS else
                    "bits" if key == "max_forget_bits" else "threads" if key in THREAD_INT else "a count")
            return f"must be an integer from {lo} to {'2**63-1' if hi == INT64_MAX else hi} ({what}) or null, " \
                   f"got {_show(value)}"
    elif key in FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number or null, got {_show(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"is {value!r}; an unavailable figure must be null with a '{key}_reason'"
        if value > INT64_MAX:
            return f"is {_show(value)}, beyond any measurement (at most 2**63)"
        if key in TIME_KEYS and not 0 < value <= MAX_SECONDS:
            return f"is a time per step in seconds, so it must be in (0, {MAX_SECONDS:g}], got {_show(value)}"
        if key in RATIO_KEYS and value <= 0:
            return f"is a ratio of two positive figures, so it must be > 0, got {_show(value)}"
        if value < 0:
            return f"counts bits, so it must be >= 0, got {_show(value)}"
    elif key in STR_KEYS or key.endswith("_reason"):
        if not isinstance(value, str):
            return f"must be a string or null, got {_show(value)}"
    return None


def _int_floor(key: str) -> int:
    if key in POSITIVE_BYTES or key in SIZE_KEYS or key in ("cpu_count", "fused_rounds") + THREAD_INT:
        return 1
    if key == "max_forget_bits":
        return FORGET_BITS_RANGE[0]
    return 0
