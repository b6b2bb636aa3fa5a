"""`revbench run` end to end on one cheap case: the JSON, the report, the summary, and a failed run that keeps
the earlier results."""
from revbench import cli
from revbench.report.results import load_benchmarks

NO_CASE = "bptt-gru-L1-H64"           # matches no case: the failing run
CHEAP = "checkpoint-s2s-gru-all"      # one encoder-decoder case (and its bptt reference, measured in-process)


def test_run_writes_json_and_report_and_a_failed_run_keeps_them(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", "--filter", CHEAP, "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    df = load_benchmarks(out / "benchmarks.json")
    assert list(df["method"]) == ["checkpoint"] and list(df["kind"]) == ["seq2seq"]
    page = (out / "report.html").read_text()
    assert f"source: {out / 'benchmarks.json'}" in page            # the final file, not the temporary one
    assert ">Encoder-decoder (attention NMT step)</h2>" in page
    assert "checkpoint" in printed and str(out / "report.html") in printed
    before = (out / "benchmarks.json").read_bytes(), (out / "report.html").read_bytes()

    assert cli.main(["run", "--filter", NO_CASE, "--out-dir", str(out)]) == 1          # no case matches
    err = capsys.readouterr().err
    assert "left untouched" in err and "--filter" in err
    assert ((out / "benchmarks.json").read_bytes(), (out / "report.html").read_bytes()) == before
    assert not list(out.glob(".benchmarks.*.tmp"))


def test_ctrl_c_in_any_subcommand_is_a_message_and_exit_130(monkeypatch, capsys):
    """A KeyboardInterrupt that reaches the dispatcher (e.g. in compare or report) is not a traceback."""
    from revbench.cli import compare as compare_cmd

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_cmd, "main", interrupted)
    assert cli.main(["compare", "a.json", "b.json"]) == 130
    assert "revbench compare: interrupted" in capsys.readouterr().err
