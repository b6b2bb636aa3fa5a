"""`revbench run` end to end on one cheap case: the JSON, the report, the summary, and a failed run that keeps
the earlier results."""
from pathlib import Path

from revbench import cli
from revbench.cli.run import suites_dir
from revbench.report.results import load_benchmarks

NO_CASE = "bptt-gru-L1-H64"           # matches no case: the failing run
CHEAP = "checkpoint-s2s-gru-all"      # one encoder-decoder case (and its bptt reference, measured in-process)


def test_run_writes_json_and_report_and_a_failed_run_keeps_them(tmp_path, capsys):
    out = tmp_path / "out"
    # --out-dir: the old spelling of --out, still accepted
    assert cli.main(["run", "--filter", CHEAP, "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    df = load_benchmarks(out / "benchmarks.json")
    assert list(df["method"]) == ["checkpoint"] and list(df["kind"]) == ["seq2seq"]
    first = printed.splitlines()[0]
    assert f"suites {Path(__file__).resolve().parents[1] / 'suites'}" in first and "1 thread " in first, first
    assert list(df["torch_num_threads"]) == [1] and list(df["engine"]) == ["local"]
    assert df["worker"][0].startswith(df["hostname"][0] + ":") and list(df["device"]) == ["cpu"]
    assert "ETA" in printed and not (out / "benchmarks.partial.json").exists()   # committed: nothing to resume
    page = (out / "report.html").read_text()
    assert f"source: {out / 'benchmarks.json'}" in page            # the final file, not the temporary one
    assert ">Encoder-decoder (attention NMT step)</h2>" in page
    assert "checkpoint" in printed and str(out / "report.html") in printed
    before = (out / "benchmarks.json").read_bytes(), (out / "report.html").read_bytes()

    assert cli.main(["run", "--filter", NO_CASE, "--out", str(out)]) == 1          # no case matches
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


def test_the_suites_of_the_checkout_the_run_starts_in(tmp_path, monkeypatch):
    """From inside a checkout (or any folder below it) its own suites/ run, not the installed copy's."""
    other = tmp_path / "checkout"
    for rel in ("suites/conftest.py", "suites/test_steps.py", "revbench/__init__.py"):
        (other / rel).parent.mkdir(parents=True, exist_ok=True)
        (other / rel).write_text("")
    (other / "docs" / "deep").mkdir(parents=True)
    assert suites_dir(other / "docs" / "deep") == other / "suites"
    assert suites_dir(other) == other / "suites"
    installed = Path(cli.__file__).resolve().parents[2] / "suites"
    (tmp_path / "elsewhere").mkdir()
    assert suites_dir(tmp_path / "elsewhere") == installed                # no checkout: the installed copy's
    (other / "revbench" / "__init__.py").unlink()                         # a suites/ folder alone is not a checkout
    assert suites_dir(other) == installed


def test_threads_reach_every_worker(tmp_path):
    """--threads N: the suites' --revbench-threads N (when they declare it), the plugin's torch.set_num_threads and
    OMP/MKL_NUM_THREADS of the worker's environment."""
    from revbench.tasks.engine.cases import Settings, suite_declares, worker_args, worker_env

    suites = Path(__file__).resolve().parents[1] / "suites"
    s = Settings(suites=str(suites), threads=3, suite_threads_option=suite_declares(suites, "--revbench-threads"))
    args = worker_args(s, tmp_path / "cases.json", tmp_path / "events.jsonl")
    assert "--revbench-worker-threads=3" in args and ("--revbench-threads=3" in args) == s.suite_threads_option
    assert s.suite_threads_option                                    # the suites declare it (suites/conftest.py)
    env = worker_env(s)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
