"""revbench.report.export and `revbench export`: github-action-benchmark's customSmallerIsBetter list and Bencher's
BMF JSON, validated against the shapes the two projects document."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import pytest

from revbench import cli
from revbench.report.compare_thresholds import TIME_FIGURE
from revbench.report.export import bencher, bencher_slug, github_action_benchmark, memory_figures
from revbench.report.results import benchmarks_from_dict
from tests.fixtures import benchjson

# benchmark-action/github-action-benchmark, src/extract.ts: interface BenchmarkResult
# { name: string; value: number; range?: string; unit: string; extra?: string }; the custom tools read a JSON
# array of them (README, "Examples" for customSmallerIsBetter).
GAB_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1}, "unit": {"type": "string"},
                       "value": {"type": "number"}, "range": {"type": "string"}, "extra": {"type": "string"}},
        "required": ["name", "unit", "value"],
        "additionalProperties": False,
    },
}
# https://bencher.dev/docs/reference/bencher-metric-format (the BMF JSON Schema, draft-07), with the documented
# length limits (benchmark name 1024, measure slug 64) and no keys but the three.
BMF_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "patternProperties": {".+": {
        "type": "object",
        "patternProperties": {".+": {
            "type": "object",
            "properties": {"value": {"type": "number"}, "lower_value": {"type": "number"},
                           "upper_value": {"type": "number"}},
            "required": ["value"],
            "additionalProperties": False,
        }},
        "propertyNames": {"maxLength": 64, "pattern": "^[a-z0-9-]+$"},
    }},
    "propertyNames": {"maxLength": 1024},
}


@pytest.fixture(scope="module")
def doc():
    d = benchjson.build_benchmark_json(seq_lens=(35, 70))
    for b in d["benchmarks"]:   # figures added this round: exported like the others
        b["extra_info"]["torch_num_threads"] = 1
        b["extra_info"]["profiler_peak_bytes"] = b["extra_info"]["peak_bytes"]
    return d


@pytest.fixture(scope="module")
def df(doc):
    return benchmarks_from_dict(doc, source="<test>")


def _record_value(doc, name, figure):
    b = next(b for b in doc["benchmarks"] if b["name"] == name)
    return b["stats"]["median"] if figure == TIME_FIGURE else b["extra_info"].get(figure)


def test_github_action_benchmark_matches_the_documented_shape(doc, df):
    entries = github_action_benchmark(df)
    jsonschema.validate(entries, GAB_SCHEMA)
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names))
    for e in entries:
        bench, _, figure = e["name"].rpartition(" / ")
        assert e["value"] == _record_value(doc, bench, figure)
        assert e["unit"] == ("bytes" if figure.endswith("_bytes") else "s" if figure == TIME_FIGURE else "bits")
        assert isinstance(e["value"], int) == figure.endswith("_bytes")
    # one entry per benchmark and available memory figure, plus its time; nothing unavailable written as 0
    figures = memory_figures(df)
    assert "profiler_peak_bytes" in figures and "rss_peak_delta_bytes" in figures
    expected = sum(1 for b in doc["benchmarks"] for f in figures if b["extra_info"].get(f) is not None)
    assert len(entries) == expected + len(doc["benchmarks"])
    assert not any(e["name"].endswith("/ cuda_peak_allocated_bytes") for e in entries)   # null on CPU
    time = next(e for e in entries if e["name"].endswith(" / time_median_s"))
    assert time["range"].startswith("IQR ") and "median of" in time["extra"]
    assert "1 thread" in time["extra"] and "config: " in time["extra"]


def test_names_are_stable_across_runs(doc, df):
    other = copy.deepcopy(doc)
    for b in other["benchmarks"]:
        b["extra_info"]["peak_bytes"] += 512
        b["stats"]["median"] *= 1.3
    again = github_action_benchmark(benchmarks_from_dict(other, source="<other>"))
    assert [e["name"] for e in again] == [e["name"] for e in github_action_benchmark(df)]
    assert list(bencher(benchmarks_from_dict(other, source="<other>"))) == list(bencher(df))


def test_bencher_matches_the_bencher_metric_format(doc, df):
    bmf = bencher(df)
    jsonschema.validate(bmf, BMF_SCHEMA)
    assert list(bmf) == [b["name"] for b in doc["benchmarks"]]
    for b in doc["benchmarks"]:
        measures = bmf[b["name"]]
        rec = b["extra_info"]
        for key, value in rec.items():   # every available figure is a measure, with its value
            if key.endswith("_bytes") or key in ("saving_actual", "buffer_bits_actual", "forward_steps"):
                if value is None:
                    assert bencher_slug(key) not in measures
                else:
                    assert measures[bencher_slug(key)]["value"] == value
        t = measures["time-median-s"]
        assert t["value"] == b["stats"]["median"] and t["lower_value"] == b["stats"]["min"] <= t["value"]
        assert "seq-len" not in measures and "torch-num-threads" not in measures   # settings, not figures
    assert bencher_slug("nvml_process_peak_used_bytes") == "nvml-process-peak-used-bytes"


def test_twin_names_fall_back_to_fullname(doc):
    d = copy.deepcopy(doc)
    twin = copy.deepcopy(d["benchmarks"][0])
    twin["fullname"] = "suites/other.py::" + twin["name"]
    d["benchmarks"].append(twin)
    frame = benchmarks_from_dict(d, source="<twins>")
    bmf = bencher(frame)
    assert twin["fullname"] in bmf and d["benchmarks"][0]["fullname"] in bmf
    names = [e["name"] for e in github_action_benchmark(frame)]
    assert len(names) == len(set(names))


# --- the command ---------------------------------------------------------------------------------------

def _write(tmp_path, doc, name="out.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.mark.parametrize("fmt, schema", [("github-action-benchmark", GAB_SCHEMA), ("bencher", BMF_SCHEMA)])
def test_cli_writes_the_file(tmp_path, doc, capsys, fmt, schema):
    src = _write(tmp_path, doc)
    out = tmp_path / "sub" / f"{fmt}.json"
    assert cli.main(["export", str(src), "--format", fmt, "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    jsonschema.validate(json.loads(out.read_text()), schema)
    assert not list(out.parent.glob(".*.tmp"))          # written through a temporary file, renamed
    # no -o: the same JSON on standard output
    assert cli.main(["export", str(src), "--format", fmt]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text())


@pytest.mark.parametrize("bad", ["{broken", "[]", '{"benchmarks": []}', None, "peak_bytes=-1"])
def test_cli_bad_input_exits_3_with_one_line_and_keeps_the_old_output(tmp_path, doc, capsys, bad):
    if bad == "peak_bytes=-1":
        d = copy.deepcopy(doc)
        d["benchmarks"][0]["extra_info"]["peak_bytes"] = -1
        bad = json.dumps(d)
    src = tmp_path / "bad.json"
    if bad is not None:
        src.write_text(bad)
    out = _write(tmp_path, "EARLIER", "dash.json")
    assert cli.main(["export", str(src), "--format", "bencher", "-o", str(out)]) == 3
    captured = capsys.readouterr()
    assert captured.err.startswith(f"revbench export: error: {src}") and captured.err.count("\n") == 1
    assert captured.out == "" and out.read_text() == "EARLIER"


def test_cli_usage_errors_exit_2(tmp_path, doc, capsys):
    src = _write(tmp_path, doc)
    for argv in (["export", str(src)], ["export", str(src), "--format", "csv"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    capsys.readouterr()


def test_cli_output_that_is_a_directory_exits_3(tmp_path, doc, capsys):
    src = _write(tmp_path, doc)
    assert cli.main(["export", str(src), "--format", "bencher", "-o", str(tmp_path)]) == 3
    assert "is a directory" in capsys.readouterr().err


def test_no_value_is_nan_or_infinite(df):
    for e in github_action_benchmark(df):
        assert math.isfinite(e["value"])
    for measures in bencher(df).values():
        assert all(math.isfinite(m["value"]) for m in measures.values())


@pytest.mark.parametrize("which", ["memory", "exact", "time"])
def test_figure_selection(df, which):
    entries = github_action_benchmark(df, which)
    jsonschema.validate(entries, GAB_SCHEMA)
    figures = {e["name"].rpartition(" / ")[2] for e in entries}
    if which == "time":
        assert figures == {TIME_FIGURE}
    else:
        assert TIME_FIGURE not in figures and "peak_bytes" in figures
        assert ("rss_peak_delta_bytes" in figures) == (which == "memory")
    measures = {slug for m in bencher(df, which).values() for slug in m}
    assert ("time-median-s" in measures) == (which == "time")
    assert "saving-actual" not in measures      # ratios only with "all"
    with pytest.raises(ValueError, match="unknown figure selection"):
        github_action_benchmark(df, "bytes")


def test_cli_figures_option(tmp_path, doc, capsys):
    src = _write(tmp_path, doc)
    assert cli.main(["export", str(src), "--format", "github-action-benchmark", "--figures", "exact"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert entries and all(not e["name"].endswith(("time_median_s", "rss_peak_delta_bytes")) for e in entries)
