"""revbench.report.results: loading and validating benchmark JSON (pytest-benchmark output with revbench records)."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from revbench.report.results import (RECORD_SCHEMA, BenchmarkFileError, add_relative_columns, forget_label, forget_order,
                              load_benchmarks)
from tests.fixtures import benchjson


@pytest.fixture(scope="module")
def doc():
    return benchjson.build_benchmark_json()


def _write(tmp_path, data, name="bench.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_one_row_per_benchmark_with_record_and_timing(tmp_path, doc):
    df = load_benchmarks(_write(tmp_path, doc))
    assert len(df) == len(doc["benchmarks"])
    for col in ("name", "fullname", "group", "time_median_s", "time_mean_s", "time_min_s", "time_stddev_s",
                "time_iqr_s", "rounds", "method", "config_id", "peak_bytes", "buffer_bits_actual"):
        assert col in df.columns, col
    by_name = df.set_index("name")
    for entry in doc["benchmarks"][::17]:
        row = by_name.loc[entry["name"]]
        assert row["peak_bytes"] == entry["extra_info"]["peak_bytes"]
        assert row["time_median_s"] == entry["stats"]["median"]
        assert row["time_iqr_s"] == entry["stats"]["iqr"]
        assert row["rounds"] == entry["stats"]["rounds"]
        assert row["fullname"] == entry["fullname"]
        assert row["method_label"] == entry["extra_info"]["method_label"]


def test_bytes_stay_exact_integers_and_unavailable_stays_missing(tmp_path, doc):
    df = load_benchmarks(_write(tmp_path, doc))
    assert str(df["peak_bytes"].dtype) == "Int64"
    # CPU fixture: CUDA figures are unavailable -> NA (never 0), the reason is kept
    assert df["cuda_peak_allocated_bytes"].isna().all()
    assert (df["cuda_peak_allocated_bytes_reason"] == "no CUDA device (device=cpu)").all()
    assert not (df["peak_bytes"] == 0).any()


def test_file_metadata_in_attrs(tmp_path, doc):
    path = _write(tmp_path, doc)
    df = load_benchmarks(path)
    assert df.attrs["machine_info"] == doc["machine_info"]
    assert df.attrs["commit_info"] == doc["commit_info"]
    assert df.attrs["datetime"] == doc["datetime"]
    assert df.attrs["source"] == str(path)


def test_forgetting_limit_labels(tmp_path, doc):
    df = load_benchmarks(_write(tmp_path, doc))
    none_rows = df["max_forget_bits"].isna()
    assert none_rows.any()
    assert (df.loc[none_rows, "forget_label"] == "no limit").all()
    assert forget_label(3) == "3 bits" and forget_label(None, "revgru") == "no limit"
    assert forget_label(None, "lstm") == "n/a"  # an ordinary cell has no forgetting limit at all
    assert forget_order(["n/a", "no limit", "5 bits", "2 bits", "3 bits", "2 bits"]) == [
        "2 bits", "3 bits", "5 bits", "no limit", "n/a"]


def test_relative_columns_against_bptt_on_same_config(tmp_path, doc):
    df = add_relative_columns(load_benchmarks(_write(tmp_path, doc)))
    bptt = df[df["method"] == "bptt"]
    assert (bptt["time_ratio_vs_bptt"] == 1.0).all()
    assert (bptt["peak_fraction_of_bptt"] == 1.0).all()
    row = df[df["method"] == "reversible"].iloc[0]
    base = bptt[bptt["config_id"] == row["config_id"]].iloc[0]
    assert row["peak_fraction_of_bptt"] == pytest.approx(row["peak_bytes"] / base["peak_bytes"])
    assert row["time_ratio_vs_bptt"] == pytest.approx(row["time_median_s"] / base["time_median_s"])


def test_relative_columns_without_bptt_are_missing_not_zero(tmp_path):
    doc = benchjson.build_benchmark_json(methods=(("reversible", {}), ("checkpoint", {})), seq_lens=(35,))
    df = add_relative_columns(load_benchmarks(_write(tmp_path, doc)))
    assert df["time_ratio_vs_bptt"].isna().all()
    assert df["peak_fraction_of_bptt"].isna().all()


# --- errors: always BenchmarkFileError naming the file ----------------------------------------------

def _error(path) -> BenchmarkFileError:
    with pytest.raises(BenchmarkFileError) as info:
        load_benchmarks(path)
    assert str(path) in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    err = _error(tmp_path / "nope.json")
    assert isinstance(err, FileNotFoundError)
    assert "no such file" in str(err)


def test_directory(tmp_path):
    assert "directory" in str(_error(tmp_path))


def test_empty_file(tmp_path):
    assert "empty" in str(_error(_write(tmp_path, "")))


def test_malformed_json(tmp_path, doc):
    text = json.dumps(doc)[:500]
    err = _error(_write(tmp_path, text))
    assert "not valid JSON" in str(err) and "line" in str(err)


@pytest.mark.parametrize("data, words", [
    ([1, 2, 3], "not pytest-benchmark output"),
    ({"results": []}, "no 'benchmarks' list"),
    ({"benchmarks": {}}, "not a list"),
    ({"benchmarks": []}, "no benchmarks"),
    ({"benchmarks": [{"foo": 1}]}, "no 'name'/'stats'"),
])
def test_foreign_json(tmp_path, data, words):
    assert words in str(_error(_write(tmp_path, data)))


def test_pytest_benchmark_json_without_our_record(tmp_path, doc):
    data = copy.deepcopy(doc)
    for b in data["benchmarks"][:2]:
        b["extra_info"] = {}
    err = _error(_write(tmp_path, data))
    assert "record_schema" in str(err)
    assert data["benchmarks"][0]["name"] in str(err)


def test_unsupported_schema_version(tmp_path, doc):
    data = copy.deepcopy(doc)
    data["benchmarks"][3]["extra_info"]["record_schema"] = "revbench.record/2"
    err = _error(_write(tmp_path, data))
    assert "revbench.record/2" in str(err) and RECORD_SCHEMA in str(err)


@pytest.mark.parametrize("key, value, words", [
    ("peak_bytes", "12", "must be an integer"),
    ("peak_bytes", 1.5, "must be an integer"),
    ("saving_actual", float("nan"), "must be null"),
    ("method", 3, "must be a string"),
    ("config_id", None, "null config_id"),
])
def test_wrong_types_are_named(tmp_path, doc, key, value, words):
    data = copy.deepcopy(doc)
    data["benchmarks"][4]["extra_info"][key] = value
    err = _error(_write(tmp_path, data))
    assert words in str(err) and data["benchmarks"][4]["name"] in str(err)


def test_missing_required_key(tmp_path, doc):
    data = copy.deepcopy(doc)
    del data["benchmarks"][0]["extra_info"]["peak_bytes"]
    assert "lacks required key(s) peak_bytes" in str(_error(_write(tmp_path, data)))


def test_missing_stats(tmp_path, doc):
    data = copy.deepcopy(doc)
    del data["benchmarks"][0]["stats"]["median"]
    assert "stats.median" in str(_error(_write(tmp_path, data)))


def test_duplicate_benchmarks(tmp_path, doc):
    data = copy.deepcopy(doc)
    data["benchmarks"].append(copy.deepcopy(data["benchmarks"][0]))
    assert "more than once" in str(_error(_write(tmp_path, data)))


def test_optional_record_keys_may_be_absent(tmp_path, doc):
    data = copy.deepcopy(doc)
    for b in data["benchmarks"]:
        for key in ("nvml_peak_used_bytes", "saved_bytes", "buffer_efficiency"):
            b["extra_info"].pop(key, None)
    df = load_benchmarks(_write(tmp_path, data))
    assert df["saved_bytes"].isna().all()
    assert isinstance(df, pd.DataFrame) and len(df) == len(doc["benchmarks"])
    assert not math.isnan(float(df["peak_bytes"].iloc[0]))


# --- hostile input (issue 17, item 5): impossible values and shapes are bad input, named in one line ------

def _with(doc, key, value, index=4, part="extra_info"):
    """Copy of doc with benchmark `index`'s `part` (extra_info, stats, or the entry itself) given key=value."""
    data = copy.deepcopy(doc)
    entry = data["benchmarks"][index]
    (entry if part == "entry" else entry[part])[key] = value
    return data


@pytest.mark.parametrize("key, value, words", [
    ("peak_bytes", 10 ** 30, "peak_bytes must be an integer from 1 to 2**63-1 (bytes) or null, got int 1000"),
    ("peak_bytes", 2 ** 63, "from 1 to 2**63-1"),
    ("peak_bytes", 0, "peak_bytes must be an integer from 1"),
    ("peak_bytes", -4096, "peak_bytes must be an integer from 1"),
    ("live_peak_bytes", 0, "live_peak_bytes must be an integer from 1"),
    ("saved_bytes", -1, "saved_bytes must be an integer from 0"),
    ("rss_peak_delta_bytes", -(10 ** 30), "rss_peak_delta_bytes must be an integer from 0"),
    ("cuda_peak_allocated_bytes", -512, "must be an integer from 0"),
    ("hidden_size", -3, "hidden_size must be an integer from 1 to 2**63-1 (a size)"),
    ("seq_len", 0, "seq_len must be an integer from 1"),
    ("batch_size", -1, "batch_size must be an integer from 1"),
    ("num_layers", 0, "num_layers must be an integer from 1"),
    ("vocab_size", 10 ** 30, "vocab_size must be an integer from 1 to 2**63-1"),
    ("max_forget_bits", 0, "max_forget_bits must be an integer from 1 to 10"),
    ("max_forget_bits", 11, "max_forget_bits must be an integer from 1 to 10"),
    ("forward_steps", -1, "forward_steps must be an integer from 0"),
    ("cpu_count", 0, "cpu_count must be an integer from 1"),
    ("buffer_bits_actual", -8, "buffer_bits_actual counts bits, so it must be >= 0"),
    ("buffer_bits_ideal", 1e300, "beyond any measurement"),
    ("saving_actual", -2.0, "saving_actual is a ratio of two positive figures, so it must be > 0"),
    ("allocator_saving", 0.0, "must be > 0"),
    ("allocator_saving", float("inf"), "must be null"),
    ("kind", "encdec", "kind str 'encdec' is not a known record kind (expected 'lm' or 'seq2seq'"),
    ("kind", 1, "is not a known record kind"),
    ("hidden_size", "256", "hidden_size must be an integer or null, got str '256'"),
    ("peak_bytes", [1], "peak_bytes must be an integer or null, got list [1]"),
    ("method_options", {}, "method_options must be a string"),
    ("foo_bytes", "many", "foo_bytes must be an integer"),   # compare gates every *_bytes figure: checked too
    ("foo_bytes", -1, "foo_bytes must be an integer from 0"),
    ("method_label", "bptt\ud800", "unpaired surrogate"),
])
def test_impossible_record_values_are_bad_input(tmp_path, doc, key, value, words):
    data = _with(doc, key, value)
    err = _error(_write(tmp_path, data))
    assert words in str(err)
    assert "\n" not in str(err)
    if "surrogate" not in words:
        assert f"benchmark {data['benchmarks'][4]['name']!r}: {key} " in str(err)


@pytest.mark.parametrize("key, value, words", [
    ("median", -0.1, "stats.median must be a time in seconds > 0 and at most 1e+06, got float -0.1"),
    ("median", 0, "stats.median must be a time in seconds > 0"),
    ("median", float("inf"), "stats.median must be a time in seconds > 0"),
    ("median", 1e7, "stats.median must be a time in seconds > 0 and at most 1e+06"),
    ("median", float("nan"), "stats.median"),
    pytest.param("median", 10 ** 400, "stats.median must be a time", id="median-10**400"),
    ("mean", 0.0, "stats.mean must be a time in seconds > 0"),
    ("min", -1e-9, "stats.min must be a time in seconds > 0"),
    ("stddev", -1.0, "stats.stddev must be a time in seconds >= 0"),
    ("iqr", float("-inf"), "stats.iqr must be a time in seconds >= 0"),
    ("rounds", 0, "stats.rounds must be a whole number of rounds >= 1"),
    ("rounds", 2.5, "stats.rounds must be a whole number of rounds >= 1"),
    ("rounds", 10 ** 30, "stats.rounds must be a whole number of rounds >= 1"),
    ("rounds", True, "stats.rounds is missing or not a number"),
    ("median", "0.01", "stats.median is missing or not a number"),
])
def test_impossible_times_are_bad_input(tmp_path, doc, key, value, words):
    data = _with(doc, key, value, part="stats")
    err = _error(_write(tmp_path, data))
    assert words in str(err) and data["benchmarks"][4]["name"] in str(err)


@pytest.mark.parametrize("key, value, words", [
    ("machine_info", "x86_64 build box", "machine_info must be an object or null, got str 'x86_64 build box'"),
    ("machine_info", ["node"], "machine_info must be an object or null, got list"),
    ("machine_info", {"cpu": "Xeon"}, "machine_info.cpu must be an object or null, got str 'Xeon'"),
    ("commit_info", ["abc"], "commit_info must be an object or null"),
    ("commit_info", {"id": 5, "dirty": True}, "commit_info.id must be a string or null, got int 5"),
    ("datetime", 20250101, "datetime must be a string or null"),
    ("version", [5, 2], "version must be a string or null"),
])
def test_file_metadata_of_the_wrong_type_is_bad_input(tmp_path, doc, key, value, words):
    data = copy.deepcopy(doc)
    data[key] = value
    assert words in str(_error(_write(tmp_path, data)))


@pytest.mark.parametrize("key, value, words", [
    ("name", {"a": 1}, "benchmark entry #4: name must be a non-empty string, got dict {'a': 1}"),
    ("name", "", "benchmark entry #4: name must be a non-empty string"),
    ("fullname", 3, "fullname must be a string, got int 3"),
    ("group", [], "group must be a string, got list []"),
])
def test_benchmark_entry_fields_of_the_wrong_type_are_bad_input(tmp_path, doc, key, value, words):
    assert words in str(_error(_write(tmp_path, _with(doc, key, value, part="entry"))))


def test_json_nested_100000_deep_is_bad_input_not_a_recursion_error(tmp_path, doc):
    text = json.dumps(doc).replace('"version": "5.2.0"', '"version": ' + "[" * 100_000 + "]" * 100_000)
    assert "is nested too deeply to parse" in str(_error(_write(tmp_path, text)))


def test_json_nested_deeper_than_any_benchmark_file_is_bad_input(tmp_path, doc):
    data = copy.deepcopy(doc)
    node = data["machine_info"]
    for _ in range(200):                  # parses (under the parser's limit), but no benchmark file looks like it
        node["cpu"] = {}
        node = node["cpu"]
    err = _error(_write(tmp_path, data))
    assert "is nested more than 64 levels deep (at machine_info.cpu.cpu" in str(err)


def test_an_integer_too_long_to_parse_is_bad_input(tmp_path, doc):
    text = json.dumps(doc).replace('"peak_bytes": ', '"peak_bytes": 1' + "0" * 5000 + ", \"x\": ", 1)
    assert "is not usable JSON: Exceeds the limit (4300 digits)" in str(_error(_write(tmp_path, text)))


def test_unpaired_surrogate_in_a_key_is_bad_input(tmp_path, doc):
    data = _with(doc, "note\udc80", "x")
    err = _error(_write(tmp_path, data))
    assert "benchmarks[4].extra_info.note\\udc80 holds str 'note\\udc80', which has an unpaired surrogate" in str(err)


def test_the_error_stays_on_one_line_whatever_the_names_hold(tmp_path, doc):
    data = _with(doc, "peak_bytes", -1)
    data["benchmarks"][4]["name"] = "evil\nTraceback (most recent call last):\x1b[2J"
    with pytest.raises(BenchmarkFileError) as info:
        load_benchmarks(_write(tmp_path, data, name="two\nlines.json"))
    err = info.value
    assert "\n" not in str(err) and "\x1b" not in str(err)
    assert "evil\\nTraceback" in str(err) and "two\\nlines.json" in str(err)


def _seq2seq_doc():
    return json.loads((Path(__file__).resolve().parents[1] / "reports" / "nmt-step" / "benchmarks.json").read_text())


@pytest.mark.parametrize("key", ["context", "src_len", "tgt_len", "enc_held_bytes", "dec_held_bytes"])
def test_encoder_decoder_record_lacking_its_identity_is_bad_input(tmp_path, key):
    data = _seq2seq_doc()
    del data["benchmarks"][0]["extra_info"][key]
    assert f"record lacks required key(s) {key}" in str(_error(_write(tmp_path, data)))


def test_encoder_decoder_optional_figures_get_a_missing_column(tmp_path):
    data = _seq2seq_doc()
    for b in data["benchmarks"]:
        for key in ("enc_allocator_saving", "dec_allocator_saving", "enc_saving_actual", "dec_context_bits_actual"):
            b["extra_info"].pop(key, None)
    df = load_benchmarks(_write(tmp_path, data))
    assert df["enc_allocator_saving"].isna().all() and df["dec_saving_ideal"].notna().any()


@pytest.mark.parametrize("part, key, value", [
    ("extra_info", "live_peak_param_bytes", 0), ("extra_info", "saved_bytes", 0),
    ("extra_info", "rss_peak_delta_bytes", 0), ("extra_info", "nvml_peak_used_bytes", 0),
    ("extra_info", "reverse_steps", 0), ("extra_info", "peak_bytes", 2 ** 63 - 1),
    ("extra_info", "peak_bytes", None), ("extra_info", "buffer_bits_ideal", 0.0),
    ("extra_info", "max_forget_bits", 10), ("extra_info", "kind", "lm"), ("extra_info", "nvml_samples", 12),
    ("stats", "stddev", 0.0), ("stats", "iqr", 0), ("stats", "rounds", 3.0), ("stats", "median", 5e-324),
    ("entry", "group", None),
])
def test_possible_edge_values_stay_accepted(tmp_path, doc, part, key, value):
    df = load_benchmarks(_write(tmp_path, _with(doc, key, value, part=part)))
    assert len(df) == len(doc["benchmarks"])
    assert str(df["peak_bytes"].dtype) == "Int64" and str(df["rounds"].dtype) == "Int64"


@pytest.mark.parametrize("name", ["sample-benchmarks.json", "baseline.json", "frontier/benchmarks.json",
                                  "nmt-step/benchmarks.json"])
def test_every_committed_benchmark_file_meets_the_contract(name):
    path = Path(__file__).resolve().parents[1] / "reports" / name
    df = load_benchmarks(path)
    assert len(df) == len(json.loads(path.read_text())["benchmarks"])
