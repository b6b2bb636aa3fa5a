"""revbench.report.compare and `revbench compare`: memory/time regression gate between two benchmark runs."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from revbench import cli
from revbench.report.compare import (ADDED, IMPROVED, MISSING, NEW_FIGURE, REGRESSED, SKIPPED, UNCHANGED, WARN,
                                     WITHIN, compare, is_comparable_figure)
from revbench.report.compare_output import format_text
from revbench.report.compare_thresholds import ThresholdError, parse_figure_threshold, parse_threshold
from revbench.report.results import benchmarks_from_dict
from tests.fixtures import benchjson


@pytest.fixture(scope="module")
def base_doc():
    # a smaller grid keeps the CLI tests quick; every method and forgetting limit is still there
    return benchjson.build_benchmark_json(seq_lens=(35, 70))


def _df(doc):
    return benchmarks_from_dict(doc, source="<test>")


def _bump(doc, index, key, factor):
    """Copy of doc with one record's figure (or a stats field 'stats.median') scaled by factor."""
    new = copy.deepcopy(doc)
    b = new["benchmarks"][index]
    if key.startswith("stats."):
        b["stats"][key[6:]] *= factor
    else:
        old = b["extra_info"][key]
        b["extra_info"][key] = int(round(old * factor)) if isinstance(old, int) else old * factor
    return new


def _rows(result, status):
    return [r for r in result.rows if r.status == status]


def _index_of(doc, method):
    return next(i for i, b in enumerate(doc["benchmarks"]) if b["extra_info"]["method"] == method)


# --- compare() ----------------------------------------------------------------------------------

def test_identical_runs_pass(base_doc):
    result = compare(_df(base_doc), _df(base_doc))
    assert result.ok
    assert not _rows(result, REGRESSED) and not _rows(result, MISSING)
    assert _rows(result, UNCHANGED)


def test_two_percent_more_memory_fails(base_doc):
    new = _bump(base_doc, 0, "peak_bytes", 1.02)
    result = compare(_df(base_doc), _df(new))
    assert not result.ok
    [row] = result.regressions
    assert row.figure == "peak_bytes" and row.name == base_doc["benchmarks"][0]["name"]
    assert row.change_pct == pytest.approx(2.0, abs=0.01)
    assert row.base == base_doc["benchmarks"][0]["extra_info"]["peak_bytes"]


def test_half_a_percent_more_memory_passes(base_doc):
    new = _bump(base_doc, 0, "peak_bytes", 1.005)
    result = compare(_df(base_doc), _df(new))
    assert result.ok
    [row] = [r for r in result.rows if r.figure == "peak_bytes" and r.status != UNCHANGED]
    assert row.status == WITHIN


def test_growth_of_exactly_the_threshold_passes(base_doc):
    new = copy.deepcopy(base_doc)
    new["benchmarks"][0]["extra_info"]["peak_bytes"] = 1010
    old = copy.deepcopy(base_doc)
    old["benchmarks"][0]["extra_info"]["peak_bytes"] = 1000
    assert compare(_df(old), _df(new)).ok  # "more than 1%": +1% exactly is allowed, no float rounding surprise


def test_per_figure_threshold_overrides(base_doc):
    new = _bump(base_doc, 0, "peak_bytes", 1.02)
    assert compare(_df(base_doc), _df(new), per_figure={"peak_bytes": 0.05}).ok
    small = _bump(base_doc, 0, "peak_bytes", 1.005)
    assert not compare(_df(base_doc), _df(small), per_figure={"peak_bytes": 0.001}).ok
    # None = report but do not gate
    result = compare(_df(base_doc), _df(new), per_figure={"peak_bytes": None})
    assert result.ok and [r.figure for r in _rows(result, WARN)] == ["peak_bytes"]


def test_buffer_bits_are_gated(base_doc):
    i = _index_of(base_doc, "reversible")
    new = _bump(base_doc, i, "buffer_bits_actual", 1.03)
    result = compare(_df(base_doc), _df(new))
    assert [r.figure for r in result.regressions] == ["buffer_bits_actual"]


def test_time_regression_fails_only_when_gated(base_doc):
    new = _bump(base_doc, 1, "stats.median", 1.5)
    gated = compare(_df(base_doc), _df(new))
    assert not gated.ok and [r.figure for r in gated.regressions] == ["time_median_s"]
    ungated = compare(_df(base_doc), _df(new), gate_time=False)
    assert ungated.ok and [r.figure for r in _rows(ungated, WARN)] == ["time_median_s"]
    noise = _bump(base_doc, 1, "stats.median", 1.2)  # within the looser 25% time threshold
    assert compare(_df(base_doc), _df(noise)).ok


def test_improvements_are_listed(base_doc):
    new = _bump(base_doc, 2, "peak_bytes", 0.8)
    result = compare(_df(base_doc), _df(new))
    assert result.ok
    [row] = result.improvements
    assert row.figure == "peak_bytes" and row.change_pct == pytest.approx(-20.0, abs=0.01)
    assert "improved" in format_text(result, verbose=True)
    assert "improved" not in format_text(result).splitlines()[0].split(";")[0]   # the default: one summary line


def test_missing_benchmark_fails_and_added_is_listed(base_doc):
    new = copy.deepcopy(base_doc)
    gone = new["benchmarks"].pop(5)
    extra = copy.deepcopy(new["benchmarks"][0])
    extra["name"] = extra["fullname"] = "test_train_step[new-one]"
    new["benchmarks"].append(extra)
    result = compare(_df(base_doc), _df(new))
    assert not result.ok
    assert [r.name for r in result.missing] == [gone["name"]]
    assert [r.name for r in result.added] == ["test_train_step[new-one]"]
    only_added = copy.deepcopy(base_doc)
    only_added["benchmarks"].append(extra)
    assert compare(_df(base_doc), _df(only_added)).ok


def test_changed_method_options_count_as_missing(base_doc):
    i = _index_of(base_doc, "gruslys")
    new = copy.deepcopy(base_doc)
    new["benchmarks"][i]["extra_info"]["method_options"] = '{"budget": 0.5, "policy": "hsm"}'
    result = compare(_df(base_doc), _df(new))
    assert [r.name for r in result.missing] == [base_doc["benchmarks"][i]["name"]]


def test_unavailable_figures_are_skipped_never_compared_to_zero(base_doc):
    new = copy.deepcopy(base_doc)
    rec = new["benchmarks"][0]["extra_info"]
    rec["saved_bytes"] = None
    rec["saved_bytes_reason"] = "hook disabled"
    result = compare(_df(base_doc), _df(new))
    assert result.ok
    [row] = [r for r in result.rows if r.figure == "saved_bytes" and r.name == new["benchmarks"][0]["name"]]
    assert row.status == SKIPPED and row.change is None
    assert "unavailable in new only: hook disabled" in row.note
    # the other way round (unavailable in base) is skipped too
    assert compare(_df(new), _df(base_doc)).ok
    cpu_rows = [r for r in result.rows if r.figure == "cuda_peak_allocated_bytes"]
    assert cpu_rows and all(r.status == SKIPPED for r in cpu_rows)


def test_growth_from_zero_regresses(base_doc):
    old = copy.deepcopy(base_doc)
    old["benchmarks"][0]["extra_info"]["saved_bytes"] = 0
    new = copy.deepcopy(base_doc)
    new["benchmarks"][0]["extra_info"]["saved_bytes"] = 4096
    [row] = compare(_df(old), _df(new)).regressions
    assert row.figure == "saved_bytes" and row.note == "grew from 0"


def test_bad_thresholds_are_rejected(base_doc):
    df = _df(base_doc)
    with pytest.raises(ThresholdError, match="method_label"):
        compare(df, df, per_figure={"method_label": 0.1})
    with pytest.raises(ThresholdError, match="memory_threshold"):
        compare(df, df, memory_threshold=-0.1)
    assert is_comparable_figure("peak_bytes") and is_comparable_figure("buffer_bits_ideal")
    assert is_comparable_figure("buffer_bits_reference") and is_comparable_figure("dec_buffer_bits_reference")
    assert not is_comparable_figure("seq_len") and not is_comparable_figure("torch_num_threads")


def test_result_frame(base_doc):
    new = _bump(base_doc, 0, "peak_bytes", 1.02)
    frame = compare(_df(base_doc), _df(new)).to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert {"name", "figure", "base", "new", "change_pct", "status"} <= set(frame.columns)
    assert (frame["status"] == REGRESSED).sum() == 1


# --- the command ---------------------------------------------------------------------------------

def _write(tmp_path, doc, name) -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _run(tmp_path, base_doc, new_doc, *extra):
    base = _write(tmp_path, base_doc, "base.json")
    new = _write(tmp_path, new_doc, "new.json")
    return cli.main(["compare", str(base), str(new), *extra])


def test_cli_identical_files_exit_0(tmp_path, base_doc, capsys):
    assert _run(tmp_path, base_doc, base_doc) == 0
    assert capsys.readouterr().out.startswith("OK: no regression;")


def test_cli_memory_regression_exit_1(tmp_path, base_doc, capsys):
    assert _run(tmp_path, base_doc, _bump(base_doc, 0, "peak_bytes", 1.02)) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "peak_bytes" in out and "+2.00%" in out and "FAIL" in out


def test_cli_small_growth_passes_and_threshold_option(tmp_path, base_doc):
    assert _run(tmp_path, base_doc, _bump(base_doc, 0, "peak_bytes", 1.005)) == 0
    grown = _bump(base_doc, 0, "peak_bytes", 1.02)
    assert _run(tmp_path, base_doc, grown, "--threshold", "peak_bytes=0.05") == 0
    assert _run(tmp_path, base_doc, grown, "--memory-threshold", "0.03") == 0
    assert _run(tmp_path, base_doc, grown, "--threshold", "peak_bytes=off") == 0


def test_cli_time_gate(tmp_path, base_doc):
    slow = _bump(base_doc, 1, "stats.median", 1.5)
    assert _run(tmp_path, base_doc, slow) == 1
    assert _run(tmp_path, base_doc, slow, "--no-time") == 0
    assert _run(tmp_path, base_doc, slow, "--time-threshold", "0.6") == 0


def test_cli_missing_benchmark_exit_1(tmp_path, base_doc, capsys):
    new = copy.deepcopy(base_doc)
    gone = new["benchmarks"].pop(0)
    assert _run(tmp_path, base_doc, new) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and gone["name"] in out


@pytest.mark.parametrize("bad", ["{broken", "[]", None])
def test_cli_bad_input_exit_3(tmp_path, base_doc, capsys, bad):
    base = _write(tmp_path, base_doc, "base.json")
    new = tmp_path / "new.json"
    if bad is not None:
        new.write_text(bad)
    assert cli.main(["compare", str(base), str(new)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("revbench compare: error: ") and str(new) in err


def test_cli_malformed_json_prints_no_traceback(tmp_path, base_doc):
    base = _write(tmp_path, base_doc, "base.json")
    bad = _write(tmp_path, '{"benchmarks": [', "bad.json")
    proc = subprocess.run([sys.executable, "-m", "revbench.cli", "compare", str(base), str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "not valid JSON" in proc.stderr and str(bad) in proc.stderr


def test_cli_usage_errors_keep_argparse_exit_2(tmp_path, base_doc, capsys):
    base = _write(tmp_path, base_doc, "base.json")
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", str(base)])
    assert info.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize("argv, says", [
    (["--threshold", "peak_bytes"], "expected FIGURE=THRESHOLD"),
    (["--threshold", "seq_len=0.1"], "'seq_len' is not a compared figure"),
    (["--threshold", "peak_bytes=5x"], "'5x' is not a threshold"),
    (["--threshold", "peak_bytes=5"], "'5' is ambiguous"),
    (["--memory-threshold", "-1"], "--memory-threshold: '-1' is not a threshold"),
    (["--memory-threshold", "1%%"], "--memory-threshold: '1%%' is not a threshold"),
    (["--time-threshold", "nan%"], "--time-threshold: 'nan%' is not a threshold"),
    (["--filter", "no-such-benchmark"], "--filter 'no-such-benchmark' matches no benchmark"),
])
def test_cli_bad_threshold_or_filter_is_one_exit_2_line(tmp_path, base_doc, capsys, argv, says):
    base = _write(tmp_path, base_doc, "base.json")
    assert cli.main(["compare", str(base), str(base), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("revbench compare: error: ") and captured.err.count("\n") == 1
    assert says in captured.err and captured.out == ""


def test_cli_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out
    for code in ("0  no regression", "1  a figure regressed", "2  usage error", "3  an input file"):
        assert code in out


def test_cli_output_written_on_regression_but_never_on_bad_input(tmp_path, base_doc):
    out = tmp_path / "cmp.csv"
    assert _run(tmp_path, base_doc, _bump(base_doc, 0, "peak_bytes", 1.02), "-o", str(out)) == 1
    table = pd.read_csv(out)
    assert (table["status"] == REGRESSED).sum() == 1
    out.write_text("EARLIER")
    base = _write(tmp_path, base_doc, "base.json")
    bad = _write(tmp_path, "{oops", "bad.json")
    assert cli.main(["compare", str(base), str(bad), "-o", str(out)]) == 3
    assert out.read_text() == "EARLIER"
    js = tmp_path / "cmp.json"
    assert _run(tmp_path, base_doc, base_doc, "-o", str(js)) == 0
    assert json.loads(js.read_text())["ok"] is True


def test_cli_environment_mismatch_is_noted(tmp_path, base_doc, capsys):
    new = copy.deepcopy(base_doc)
    for b in new["benchmarks"]:
        b["extra_info"]["torch_version"] = "2.14.0+cpu"
    assert _run(tmp_path, base_doc, new) == 0
    assert "torch_version differs" in capsys.readouterr().out



# --- hostile input (issue 17, item 5): a file that cannot be compared is exit 3, never 1 ("regression") ---

def _hostile(base_doc, how):
    """base_doc broken in one of the ways a crash used to read as a regression."""
    doc = copy.deepcopy(base_doc)
    if how == "peak_bytes=10**30":
        doc["benchmarks"][0]["extra_info"]["peak_bytes"] = 10 ** 30
    elif how == "machine_info string":
        doc["machine_info"] = "x86_64"
    elif how == "negative peak_bytes":
        doc["benchmarks"][0]["extra_info"]["peak_bytes"] = -1
    elif how == "zero median":
        doc["benchmarks"][0]["stats"]["median"] = 0.0
    elif how == "unknown kind":
        doc["benchmarks"][0]["extra_info"]["kind"] = "encdec"
    return json.dumps(doc)


@pytest.mark.parametrize("how", ["peak_bytes=10**30", "machine_info string", "negative peak_bytes", "zero median",
                                 "unknown kind"])
@pytest.mark.parametrize("side", ["base", "new"])
def test_cli_impossible_values_exit_3_with_one_line(tmp_path, base_doc, capsys, how, side):
    good, bad = _write(tmp_path, base_doc, "good.json"), _write(tmp_path, _hostile(base_doc, how), "bad.json")
    argv = ["compare", str(bad), str(good)] if side == "base" else ["compare", str(good), str(bad)]
    assert cli.main(argv) == 3
    captured = capsys.readouterr()
    assert captured.err.startswith(f"revbench compare: error: {bad}: ") and captured.err.count("\n") == 1
    assert captured.out == ""


def test_cli_json_nested_100000_deep_exits_3_without_a_traceback(tmp_path, base_doc):
    base = _write(tmp_path, base_doc, "base.json")
    deep = _write(tmp_path, "[" * 100_000 + "]" * 100_000, "deep.json")
    proc = subprocess.run([sys.executable, "-m", "revbench.cli", "compare", str(base), str(deep)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert f"{deep}: is nested too deeply to parse" in proc.stderr


def test_cli_ambiguous_benchmarks_name_the_file(tmp_path, base_doc, capsys):
    new = copy.deepcopy(base_doc)
    twin = copy.deepcopy(new["benchmarks"][0])
    twin["fullname"] = "suites/other_file.py::" + twin["name"]   # another test with the same name and record
    new["benchmarks"].append(twin)
    bad = _write(tmp_path, new, "twins.json")
    assert cli.main(["compare", str(_write(tmp_path, base_doc, "base.json")), str(bad)]) == 3
    err = capsys.readouterr().err
    assert f"new ({bad}): two benchmarks share the key" in err and err.count("\n") == 1


# --- issue 14: concise output, percentages, sampled meters, filters, new figures -------------------------------

def _set(doc, key, factor=None, value=None, where=lambda b: True):
    """Copy of doc with `key` of every record matching `where` scaled by factor or set to value."""
    new = copy.deepcopy(doc)
    for b in new["benchmarks"]:
        if where(b):
            e = b["extra_info"]
            e[key] = value if factor is None else (int(round(e[key] * factor)) if isinstance(e[key], int)
                                                  else e[key] * factor)
    return new


def test_cli_clean_pass_is_one_summary_line(tmp_path, base_doc, capsys):
    # every sampled figure moves (as RSS does between two runs), every exact figure is identical
    noisy = _set(base_doc, "rss_peak_delta_bytes", factor=1.36)
    noisy = _bump(noisy, 3, "stats.median", 1.1)
    assert _run(tmp_path, base_doc, noisy) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("OK: no regression; 80 benchmarks compared")
    # -v shows the rest: the RSS moves as warnings (once each, no repeated note), the thresholds, the files
    assert _run(tmp_path, base_doc, noisy, "-v") == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("    rss_peak_delta_bytes ") for line in out.splitlines()) == 80 and "+36.00%" in out and "not gated (+25%)" in out
    assert "note:" not in out.lower().replace("note: torch", "") and "base: " in out
    assert "reported, not gated: " in out and "rss_peak_delta_bytes +25%" in out


def test_sampled_meters_are_reported_not_gated_unless_asked(base_doc):
    noisy = _set(base_doc, "rss_peak_delta_bytes", factor=1.36)
    result = compare(_df(base_doc), _df(noisy))
    assert result.ok and len(_rows(result, WARN)) == 80 and not result.regressions
    small = _set(base_doc, "rss_peak_delta_bytes", factor=1.0002)   # +0.02 %: within, not a warning
    assert not _rows(compare(_df(base_doc), _df(small)), WARN)
    asked = compare(_df(base_doc), _df(noisy), per_figure={"rss_peak_delta_bytes": 0.25})
    assert not asked.ok and {r.figure for r in asked.regressions} == {"rss_peak_delta_bytes"}
    # heap_peak_bytes is treated as sampled too (malloc-level: allocator state, thread caches)
    heap = _set(base_doc, "heap_peak_bytes", value=10 << 20)
    heap_new = _set(heap, "heap_peak_bytes", factor=1.5)
    assert compare(_df(heap), _df(heap_new)).ok
    assert not compare(_df(heap), _df(heap_new), per_figure={"heap_peak_bytes": 0.1}).ok
    # the exact meters stay gated at 1 %
    assert not compare(_df(base_doc), _df(_set(base_doc, "saved_bytes", factor=1.02))).ok


def test_cli_regressions_name_every_benchmark_in_full(tmp_path, base_doc, capsys):
    doc = copy.deepcopy(base_doc)
    long_tail = "-s2s-revgru-emb_h20-L1-H128-E128-B16-S20-T20-k3-V2000-cpu-float32-" + "x" * 60
    for b in doc["benchmarks"][:2]:
        b["name"] = b["fullname"] = f"test_seq2seq_step[{b['extra_info']['method']}{long_tail}]"
    grown = _set(doc, "peak_bytes", factor=1.02, where=lambda b: b["name"].startswith("test_seq2seq_step"))
    assert _run(tmp_path, doc, grown) == 1
    out = capsys.readouterr().out
    assert f"REGRESSED test_seq2seq_step[bptt{long_tail}]" in out
    assert f"REGRESSED test_seq2seq_step[checkpoint{long_tail}]" in out
    assert "..." not in out


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("0.05", 0.05), (" 2.5 % ", 0.025), ("0", 0.0),
                                         ("150%", 1.5), ("1", 1.0), ("off", None), ("OFF", None), ("none", None)])
def test_thresholds_accept_percentages_fractions_and_off(text, value):
    assert parse_threshold(text) == (pytest.approx(value) if value is not None else None)
    fig, parsed = parse_figure_threshold(f"peak_bytes={text}")
    assert fig == "peak_bytes" and parsed == (pytest.approx(value) if value is not None else None)


@pytest.mark.parametrize("text", ["5", "-1%", "inf", "nan", "five", "", "%", "1e400%"])
def test_bad_thresholds_raise_one_line(text):
    with pytest.raises(ThresholdError) as info:
        parse_threshold(text)
    assert "\n" not in str(info.value)


def test_cli_percent_thresholds(tmp_path, base_doc):
    grown = _bump(base_doc, 0, "peak_bytes", 1.02)
    assert _run(tmp_path, base_doc, grown, "--threshold", "peak_bytes=5%") == 0
    assert _run(tmp_path, base_doc, grown, "--threshold", "peak_bytes=1.5%") == 1
    assert _run(tmp_path, base_doc, grown, "--memory-threshold", "3%") == 0
    assert _run(tmp_path, base_doc, grown, "--memory-threshold", "off") == 0
    slow = _bump(base_doc, 1, "stats.median", 1.5)
    assert _run(tmp_path, base_doc, slow, "--time-threshold", "60%") == 0
    assert _run(tmp_path, base_doc, slow, "--time-threshold", "off") == 0
    assert _run(tmp_path, base_doc, slow, "--threshold", "time_median_s=off") == 0


def test_ci_gate_command_stays_valid(tmp_path, base_doc, capsys):
    """.ci/gate: revbench compare reports/baseline.json "$out/benchmarks.json" --no-time
    --threshold rss_peak_delta_bytes=off"""
    new = _set(_bump(base_doc, 1, "stats.median", 3.0), "rss_peak_delta_bytes", factor=2.0)
    assert _run(tmp_path, base_doc, new, "--no-time", "--threshold", "rss_peak_delta_bytes=off") == 0
    assert capsys.readouterr().out.startswith("OK: ")
    grown = _bump(base_doc, 0, "peak_bytes", 1.02)
    assert _run(tmp_path, base_doc, grown, "--no-time", "--threshold", "rss_peak_delta_bytes=off") == 1


def test_filter_and_allow_missing(tmp_path, base_doc, capsys):
    subset = copy.deepcopy(base_doc)
    subset["benchmarks"] = [b for b in subset["benchmarks"] if "revlstm" in b["extra_info"]["config_id"]]
    assert 0 < len(subset["benchmarks"]) < len(base_doc["benchmarks"])
    # a filtered run against the whole baseline: every other benchmark is missing
    assert _run(tmp_path, base_doc, subset) == 1
    assert f"{len(base_doc['benchmarks']) - len(subset['benchmarks'])} benchmarks missing" in capsys.readouterr().out
    # --filter compares the same subset on both sides
    assert _run(tmp_path, base_doc, subset, "--filter", "revlstm") == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"{len(subset['benchmarks'])} benchmarks compared" in out
    # --allow-missing reports them and passes
    assert _run(tmp_path, base_doc, subset, "--allow-missing") == 0
    assert "missing (allowed)" in capsys.readouterr().out
    # the filter still gates what it keeps
    grown = _set(subset, "peak_bytes", factor=1.02, where=lambda b: b["extra_info"]["method"] == "bptt")
    assert _run(tmp_path, base_doc, grown, "--filter", "revlstm") == 1
    # a filter on the name (pytest id) works as well as one on the config id
    name = base_doc["benchmarks"][0]["name"]
    result = compare(_df(base_doc), _df(base_doc), only=[name])
    assert result.ok and result.matched == 1
    capsys.readouterr()


def test_nothing_compared_is_not_a_pass(base_doc):
    other = copy.deepcopy(base_doc)
    for b in other["benchmarks"]:
        b["name"] = b["fullname"] = b["name"] + "-renamed"
    result = compare(_df(base_doc), _df(other), allow_missing=True)
    assert not result.ok and result.matched == 0
    assert format_text(result).startswith("FAIL: no benchmark found in both runs")


def test_figures_new_in_the_new_run_do_not_fail_against_an_old_baseline(tmp_path, base_doc, capsys):
    new = copy.deepcopy(base_doc)
    for b in new["benchmarks"]:
        e = b["extra_info"]
        e.update(torch_num_threads=1, heap_peak_bytes=5 << 20, profiler_peak_bytes=e["peak_bytes"],
                 profiler_activation_bytes=e["peak_bytes"] // 2, buffer_bits_reference=None,
                 buffer_bits_reference_reason="no buffer")
    result = compare(_df(base_doc), _df(new))
    assert result.ok
    assert {r.figure for r in _rows(result, NEW_FIGURE)} == {"heap_peak_bytes", "profiler_peak_bytes",
                                                             "profiler_activation_bytes", "buffer_bits_reference"}
    assert not any(r.figure == "torch_num_threads" for r in result.rows)   # not a compared figure
    assert _run(tmp_path, base_doc, new) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "4 new figures" in out
    assert _run(tmp_path, base_doc, new, "-v") == 0
    out = capsys.readouterr().out
    assert "New figures (recorded in new only" in out and "profiler_peak_bytes: 80 benchmark(s)" in out
    # the reverse (a figure the new run stopped recording) is reported, not compared to 0
    back = compare(_df(new), _df(base_doc))
    assert back.ok and {r.status for r in back.rows if r.figure == "heap_peak_bytes"} == {"dropped figure"}


def test_thread_count_difference_is_noted_only_when_both_record_it(base_doc):
    one = _set(base_doc, "torch_num_threads", value=1)
    four = _set(base_doc, "torch_num_threads", value=4)
    assert not compare(_df(base_doc), _df(one)).notes       # an older baseline does not record it
    [note] = compare(_df(one), _df(four)).notes
    assert note.startswith("torch_num_threads differs: base 1 vs new 4")


def test_verbose_lists_warnings_improvements_and_added(tmp_path, base_doc, capsys):
    new = _bump(_bump(base_doc, 2, "peak_bytes", 0.8), 1, "stats.median", 1.5)
    extra = copy.deepcopy(new["benchmarks"][0])
    extra["name"] = extra["fullname"] = "test_train_step[new-one]"
    new["benchmarks"].append(extra)
    assert _run(tmp_path, base_doc, new, "--no-time") == 0
    quiet = capsys.readouterr().out
    assert quiet.count("\n") == 1 and "1 added" in quiet and "1 improved" in quiet
    assert _run(tmp_path, base_doc, new, "--no-time", "-v") == 0
    out = capsys.readouterr().out
    assert "Improved:" in out and "Added (in new, not in base):" in out and "test_train_step[new-one]" in out
    assert "Beyond the tolerance but not gated" in out and "time_median_s" in out
    result = compare(_df(base_doc), _df(new), gate_time=False)
    assert len(result.with_status(ADDED)) == 1 and len(result.with_status(IMPROVED)) == 1
