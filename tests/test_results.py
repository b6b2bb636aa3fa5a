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
