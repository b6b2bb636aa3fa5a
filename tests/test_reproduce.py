"""Reproduction drivers: the Table-1 grid on a tiny synthetic corpus, the repeat task, and their CLI."""
import json

import pandas as pd
import pytest

from revbench.tasks.cells import parse_limit
from revbench.tasks.lm.grid import LMRun, drop_checkpoints, lm_grid, run_lm_grid
from revbench.tasks.lm.records import lm_records
from revbench.tasks.lm.report import lm_differences, lm_sections, write_lm_report
from revbench.tasks.lm.tables import paper_table1, relative_table, table1
from revbench.tasks.repeat.experiment import RepeatSettings, train_repeat
from revbench.cli import main as cli_main
from revbench.report.html import check_self_contained

LIMIT_COLUMNS = ["2 bit", "3 bit", "5 bit", "no limit"]


def test_grid_priority_order():
    runs = lm_grid(["lstm", "revlstm", "gru", "revgru"], [3, 2, 5, None])
    names = [r.name for r in runs]
    assert names[:4] == ["ptb-lstm-L1", "ptb-revlstm-L1-k3", "ptb-gru-L1", "ptb-revgru-L1-k3"]
    assert len(names) == 10 and len(set(names)) == 10
    assert {r.method for r in runs if r.cell in ("gru", "lstm")} == {"bptt"}
    assert {r.method for r in runs if r.cell.startswith("rev")} == {"reversible"}
    with pytest.raises(ValueError, match="unknown cell"):
        lm_grid(["transformer"], [3])
    assert parse_limit("none") is None and parse_limit("5") == 5
    with pytest.raises(ValueError, match="forgetting limit"):
        parse_limit("11")


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    runs = lm_grid(["gru", "revgru"], [3, None], datasets=("synthetic",))
    over = {"synthetic_tokens": 2000, "final_memory": True, "measure_memory": False, "checkpoint_every_minutes": None}
    statuses = run_lm_grid(runs, "tiny", out, over, say=lambda *a: None)
    return out, runs, over, statuses


def test_tiny_grid_table_shape(tiny_grid):
    out, runs, _, statuses = tiny_grid
    assert [s["status"] for s in statuses] == ["done"] * 3
    recs = lm_records(out)
    assert len(recs) == 3
    t = table1(recs, "synthetic")
    assert list(t.columns) == ["model"] + LIMIT_COLUMNS + ["baseline"]
    assert list(t["model"]) == ["1-layer RevGRU", "1-layer RevLSTM"]
    gru_row = t.iloc[0]
    for col, ran in zip(LIMIT_COLUMNS, [False, True, False, True]):
        assert (gru_row[col] != "not run") == ran
    assert "x / " in gru_row["3 bit"] and gru_row["baseline"].startswith("GRU ")
    assert t.iloc[1]["3 bit"] == "not run"            # no RevLSTM in this grid
    # the paper's table has the same shape
    assert list(paper_table1().columns) == list(t.columns)
    rel = relative_table(recs)
    assert len(rel) == 2 and (rel["baseline"] == "1-layer GRU").all()
    assert (rel["valid_ppl_ratio"] == rel["valid_ppl"] / rel["baseline_valid_ppl"]).all()
    rev = [r for r in recs if r["cell"] == "revgru"]
    assert all(r["saving_actual"] > 1 and r["allocator_saving"] > 0 for r in rev)
    gru = [r for r in recs if r["cell"] == "gru"][0]
    assert gru["saving_actual"] is None and gru["allocator_saving"] is None and gru["bptt_peak_bytes"] > 0


def test_tiny_grid_report_files(tiny_grid, tmp_path):
    out, runs, _, statuses = tiny_grid
    recs = lm_records(out)
    meta = {"command": "revbench reproduce lm --config tiny", "config_name": "tiny", "config": {"epochs": 1},
            "duration_min": 0.1, "environment": {"device_name": "cpu"}, "statuses": statuses,
            "differences": lm_differences(recs, {"emb_size": 16})}
    paths = write_lm_report(tmp_path, recs, meta)
    page = paths["html"].read_text()
    check_self_contained(page)
    assert "as recalled, unverified" in page and embedded_figures(page) >= 1 and "1-layer RevGRU" in page
    readme = paths["readme"].read_text()
    assert "revbench reproduce lm --config tiny" in readme and "Paper (Table 1" in readme
    assert len(pd.read_csv(paths["csv"])) == 3
    assert len(json.loads(paths["json"].read_text())) == 3
    sections = lm_sections(recs, meta)                      # usable as render_report extra_sections
    assert all(isinstance(t, str) and isinstance(h, str) for t, h in sections)


def test_grid_is_resumable(tiny_grid):
    out, runs, over, _ = tiny_grid
    stamp = {r.name: (out / "runs" / r.name / "result.json").stat().st_mtime_ns for r in runs}
    statuses = run_lm_grid(runs, "tiny", out, over, say=lambda *a: None)
    assert [s["status"] for s in statuses] == ["done (already)"] * 3
    assert stamp == {r.name: (out / "runs" / r.name / "result.json").stat().st_mtime_ns for r in runs}


def test_drop_checkpoints_keeps_finished_runs_finished(tmp_path):
    runs = [LMRun("synthetic", "gru")]
    over = {"synthetic_tokens": 1500, "final_memory": False, "measure_memory": False}
    run_lm_grid(runs, "tiny", tmp_path, over, say=lambda *a: None)
    d = tmp_path / "runs" / "synthetic-gru-L1"
    assert (d / "checkpoint.pt").exists() and (d / "best.pt").exists()
    assert drop_checkpoints(tmp_path, ["synthetic-gru-L1", "missing-run"]) == 2
    assert not (d / "checkpoint.pt").exists() and (d / "result.json").exists()
    st = run_lm_grid(runs, "tiny", tmp_path, over, say=lambda *a: None)
    assert st[0]["status"] == "done (already)"


def test_grid_retrains_stale_run(tmp_path):
    runs = [LMRun("synthetic", "gru")]
    over = {"synthetic_tokens": 1500, "final_memory": False, "measure_memory": False}
    run_lm_grid(runs, "tiny", tmp_path, over, say=lambda *a: None)
    msgs = []
    st = run_lm_grid(runs, "tiny", tmp_path, {**over, "lr": 1.0}, say=msgs.append)
    assert st[0]["status"] == "done" and any("another configuration" in m for m in msgs)
    assert json.loads((tmp_path / "runs" / "synthetic-gru-L1" / "result.json").read_text())["config"]["lr"] == 1.0


def test_cli_reproduce_lm_lr(tmp_path, capsys):
    """--lr sets the rate of the invocation's runs; runs.csv shows it and the report says which runs differ."""
    rc = cli_main(["reproduce", "lm", "--config", "tiny", "--data", "synthetic", "--cells", "gru", "--lr", "2.5",
                   "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    run = tmp_path / "runs" / "synthetic-gru-L1"
    assert json.loads((run / "result.json").read_text())["config"]["lr"] == 2.5
    assert list(pd.read_csv(tmp_path / "runs.csv")["lr"]) == [2.5]
    recs = lm_records(tmp_path)
    assert not any(d.startswith("Learning rate") for d in lm_differences(recs, {"lr": 2.5}))
    said = [d for d in lm_differences(recs, {"lr": 5.0}) if d.startswith("Learning rate")]
    assert said == ["Learning rate: synthetic-gru-L1 at 2.5; every other run at 5, the config's "
                    "(`revbench reproduce lm --lr`). Each run's value is the `lr` column of runs.csv."]
    said = [d for d in lm_differences(recs, {"lr": 2.5, "epochs": 2}) if d.startswith(("Learning rate", "Epochs"))]
    assert said == ["Epochs: synthetic-gru-L1 1 epoch(s); every other run 2 epoch(s), the config's "
                    "(`revbench reproduce lm --epochs`). Each run's value is the `epochs` column of runs.csv."]
    capsys.readouterr()
    assert cli_main(["reproduce", "lm", "--config", "tiny", "--data", "synthetic", "--lr", "-1",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lr must be > 0" in err and "Traceback" not in err


def test_cli_reproduce_lm_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("REVBENCH_DATA", raising=False)
    rc = cli_main(["reproduce", "lm", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and "REVBENCH_DATA" in err and "--data-dir" in err and "Traceback" not in err
    rc = cli_main(["reproduce", "lm", "--data", "synthetic", "--limits", "3,x", "--out", str(tmp_path)])
    assert rc != 0 and "forgetting limit" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- repeat
def embedded_figures(page: str) -> int:
    """Figures embedded in a self-contained page: inline SVG, or PNG as data URIs."""
    return page.count("<svg") + page.count("data:image/png;base64,")


def test_repeat_command_tiny(tmp_path, capsys):
    out = tmp_path / "rep"
    rc = cli_main(["reproduce", "repeat", "--lengths", "3,6", "--models", "gru,nf-revgru,revgru", "--steps", "3",
                   "--eval-sequences", "16", "--hidden-size", "8", "--emb-size", "8", "--out", str(out), "--quiet"])
    assert rc == 0
    df = pd.read_csv(out / "repeat.csv")
    assert len(df) == 6 and set(df["seq_len"]) == {3, 6}
    assert set(df["model"]) == {"GRU", "NF-RevGRU", "RevGRU (k=3)"}
    assert df["accuracy"].between(0, 1).all() and (df["chance"] == 1 / 8).all()
    page = (out / "repeat.html").read_text()
    check_self_contained(page)
    assert embedded_figures(page) == 1
    assert "T=6" in (out / "README.md").read_text()


def test_repeat_gru_learns():
    """An ordinary GRU learns to repeat the previous symbol (a check that the setup is learnable at all)."""
    s = RepeatSettings(symbols=4, hidden_size=16, emb_size=16, steps=150, eval_sequences=64)
    row = train_repeat("gru", 4, s)
    assert row["accuracy"] > 0.9 > row["chance"]


@pytest.mark.slow
def test_repeat_no_forgetting_fails_on_long_sequences():
    """The paper's section-4 claim, on a small state: NF-RevGRU fails at length 40, buffered RevGRU does not."""
    s = RepeatSettings()
    nf, buffered = train_repeat("nf-revgru", 40, s), train_repeat("revgru", 40, s)
    assert buffered["accuracy"] > 0.95
    assert nf["accuracy"] < 0.7


def test_repeat_bad_input(tmp_path, capsys):
    rc = cli_main(["reproduce", "repeat", "--lengths", "1", "--out", str(tmp_path)])
    assert rc != 0 and "lengths must be >= 2" in capsys.readouterr().err
    rc = cli_main(["reproduce", "repeat", "--models", "revgru", "--hidden-size", "7", "--out", str(tmp_path)])
    assert rc != 0 and "even" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- dispatch
def test_missing_subcommand_module_is_reported(monkeypatch, capsys):
    from revbench import cli

    monkeypatch.setitem(cli.COMMANDS, "nosuch", ("revbench.cli.nosuch", "a subcommand not in this checkout"))
    assert cli_main(["nosuch"]) != 0
    assert "not available" in capsys.readouterr().err
