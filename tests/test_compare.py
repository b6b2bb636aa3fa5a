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
from revbench.report.compare import (MISSING, REGRESSED, SKIPPED, UNCHANGED, WARN, WITHIN, compare,
                              is_comparable_figure)
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
    assert "improved" in result.format_table()


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
    with pytest.raises(ValueError, match="method_label"):
        compare(df, df, per_figure={"method_label": 0.1})
    with pytest.raises(ValueError, match="memory_threshold"):
        compare(df, df, memory_threshold=-0.1)
    assert is_comparable_figure("peak_bytes") and is_comparable_figure("buffer_bits_ideal")
    assert not is_comparable_figure("seq_len")


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
    assert "OK: no regression." in capsys.readouterr().out


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
    for argv in (["compare", str(base)],
                 ["compare", str(base), str(base), "--threshold", "peak_bytes"],
                 ["compare", str(base), str(base), "--threshold", "seq_len=0.1"],
                 ["compare", str(base), str(base), "--memory-threshold", "-1"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2, argv
    capsys.readouterr()


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
