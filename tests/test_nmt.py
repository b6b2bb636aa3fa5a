"""NMT training, resume, decoding with replace_unk, BLEU, the reproduction grid and the CLI (synthetic corpus)."""
import argparse
import json
import math

import pytest
import torch

from revbench.tasks.nmt.bleu import bleu
from revbench.tasks.nmt.build import build_model, load_corpus
from revbench.tasks.nmt.config import make_config
from revbench.tasks.nmt.decode import translate
from revbench.tasks.nmt.evaluate import evaluate_loss
from revbench.tasks.nmt.grid import GridPoint, point_status, reproduce
from revbench.tasks.nmt.train import CheckpointError, train
from revbench.models.seq2seq.inputs import UNK_INDEX


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw):
    return make_config("tiny", **{"synthetic_train": 96, **kw})


def test_bleu_on_a_hand_computed_fixture():
    # precisions 4/4, 3/3, 2/2, 1/1; brevity penalty exp(1 - 5/4)
    r = bleu([["a", "b", "c", "d"]], [["a", "b", "c", "d", "e"]])
    assert r.score == pytest.approx(100 * math.exp(1 - 5 / 4), abs=1e-6)
    assert bleu(["x y z w v"], ["x y z w v"]).score == pytest.approx(100.0)
    assert bleu([["q"] * 5], [["a", "b", "c", "d", "e"]]).score == 0.0


def test_one_epoch_on_the_synthetic_corpus_decreases_the_loss(tmp_path):
    cfg = tiny(epochs=1, synthetic_train=240)
    corpus = load_corpus(cfg)
    torch.manual_seed(cfg.seed)
    before = evaluate_loss(build_model(cfg, corpus), corpus.valid.pairs())["loss"]
    res = train(cfg, tmp_path / "run", corpus=corpus, evaluate=False, log=lambda s: None)
    after = res["history"][0]["val_loss"]
    assert after < before - 0.05
    assert res["history"][0]["enc_saving_actual"] > 1 and res["history"][0]["dec_saving_actual"] > 1
    assert (tmp_path / "run" / "results.json").exists() and (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize("method,cell", [("reversible", "revgru"), ("bptt", "gru")])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, method, cell):
    cfg = tiny(epochs=2, save_every=4, method=method, cell=cell, context="emb+h:4" if cell == "revgru" else "all")
    corpus = load_corpus(cfg)
    full = train(cfg, tmp_path / "a", corpus=corpus, evaluate=False, log=lambda s: None)
    part = train(cfg, tmp_path / "b", corpus=corpus, stop_after_steps=9, evaluate=False, log=lambda s: None)
    assert part is None                                  # interrupted mid-epoch 2 (6 steps per epoch)
    resumed = train(cfg, tmp_path / "b", resume=True, corpus=corpus, evaluate=False, log=lambda s: None)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in e.items() if k != "epoch_time_s"} for e in h]  # noqa: E731
    assert strip(full["history"]) == strip(resumed["history"])


def test_existing_checkpoint_needs_resume_and_the_same_config(tmp_path):
    cfg = tiny(epochs=1)
    corpus = load_corpus(cfg)
    train(cfg, tmp_path, corpus=corpus, stop_after_steps=2, evaluate=False, log=lambda s: None)
    with pytest.raises(CheckpointError, match="--resume"):
        train(cfg, tmp_path, corpus=corpus, log=lambda s: None)
    with pytest.raises(CheckpointError, match="hidden_size"):
        train(tiny(epochs=1, hidden_size=16), tmp_path, resume=True, corpus=corpus, log=lambda s: None)


def test_translate_replaces_unknown_words_by_the_attended_source_word():
    cfg = tiny()
    corpus = load_corpus(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, corpus)
    with torch.no_grad():
        model.generator.bias[UNK_INDEX] = 100.0          # every output word is <unk>
    split = corpus.test
    for beam in (1, 3):
        hyps = translate(model, split, corpus.tgt_vocab, beam_size=beam, replace_unk=True)
        assert len(hyps) == len(split)
        for h, src in zip(hyps, split.src_tokens):
            assert h and all(w in src for w in h)
    raw = translate(model, split, corpus.tgt_vocab, beam_size=1, replace_unk=False)
    assert all(set(h) == {"<unk>"} for h in raw)


def test_config_and_grid_point_errors():
    with pytest.raises(ValueError, match="unknown NMT configuration"):
        make_config("huge")
    with pytest.raises(ValueError, match="field"):
        make_config("tiny", hiden_size=3)
    with pytest.raises(ValueError, match="reversible cell"):
        make_config("tiny", cell="gru", method="reversible")
    with pytest.raises(ValueError, match="context"):
        make_config("tiny", context="h:-1")
    with pytest.raises(ValueError, match="max_forget_bits"):
        make_config("tiny", max_forget_bits=0)
    assert GridPoint.parse("revgru/emb+h:20/none") == GridPoint("revgru", "emb+h:20", None)
    assert GridPoint.parse("revgru/h:20/3").id == "revgru-h20-k3"
    for bad in ("revgru", "revgru/emb/x", "a/b/c/d"):
        with pytest.raises(ValueError, match="grid point|forgetting limit"):
            GridPoint.parse(bad)
    assert make_config("paper").resolved_lr() == 0.2
    assert make_config("paper", cell="revlstm").resolved_lr() == 0.5


def test_reproduce_writes_tables_and_reuses_completed_points(tmp_path):
    from revbench.report.html import check_self_contained

    pts = [GridPoint("revgru", "emb+h:4", 3), GridPoint("gru", "all")]
    over = {"epochs": 1, "synthetic_train": 64}
    s = reproduce("tiny", tmp_path, points=pts, overrides=over, command="test", log=lambda m: None)
    assert [e["status"] for e in s["points"]] == ["completed", "completed"]
    rev = s["points"][0]
    assert rev["enc_saving_actual"] > 1 and rev["dec_saving_actual"] > 1
    assert 0 < rev["reversible_live_peak_bytes"] < rev["bptt_live_peak_bytes"]
    assert s["points"][1]["enc_saving_actual"] is None
    readme = (tmp_path / "README.md").read_text()
    assert "| RevGRU · emb+h:4 |" in readme and "GRU · all (baseline)" in readme
    page = (tmp_path / "index.html").read_text()
    check_self_contained(page)
    assert json.loads((tmp_path / "grid.json").read_text())["points"][0]["id"] == "revgru-emb_h4-k3"
    assert not (tmp_path / "runs" / rev["id"] / "checkpoint.pt").exists()      # weights not kept by default
    again = reproduce("tiny", tmp_path, points=pts, overrides=over, budget_minutes=0, log=lambda m: None)
    assert all(e["status"].startswith("completed (earlier") for e in again["points"])
    later = reproduce("tiny", tmp_path, points=[GridPoint("revgru", "emb", 2)], overrides=over,
                      budget_minutes=-1, log=lambda m: None)
    assert later["points"][0]["status"].startswith("not started")
    # a point made with another configuration is retrained, not reported as if it had been made with this one
    said = []
    stale = reproduce("tiny", tmp_path, points=pts[1:], overrides={**over, "epochs": 2}, log=said.append)
    assert stale["points"][0]["status"] == "completed" and stale["points"][0]["epochs"] == 2
    assert any("gru-all: results were made with another configuration" in m for m in said)
    assert point_status(tmp_path / "runs" / "gru-all", _cfg_of(pts[1], {**over, "epochs": 2})) == "done"
    assert point_status(tmp_path / "runs" / "gru-all", _cfg_of(pts[1], {**over, "save_every": 7, "epochs": 2})) == "done"
    (tmp_path / "runs" / "gru-all" / "results.json").write_text("{damaged")
    assert point_status(tmp_path / "runs" / "gru-all", _cfg_of(pts[1], over)) == "stale"
    assert point_status(tmp_path / "runs" / "nothing-here", _cfg_of(pts[1], over)) == "new"


def _cfg_of(p, over):
    return make_config("tiny", **{**over, "cell": p.cell, "context": p.context,
                                  "max_forget_bits": p.max_forget_bits if p.reversible else None, "method": p.method})


def _parse(configure, argv):
    p = argparse.ArgumentParser()
    configure(p)
    return p.parse_args(argv)


def test_cli_train_and_bad_input(tmp_path, capsys):
    from revbench.cli import nmt as nmt_cli

    args = _parse(nmt_cli.configure_train, ["--config", "tiny", "--epochs", "1", "--out", str(tmp_path / "r"),
                                            "--max-forget-bits", "none", "--no-progress", "--max-train", "48"])
    assert nmt_cli.main_train(args) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["config"]["max_forget_bits"] is None and "test_bleu_beam" in res
    hyps = (tmp_path / "r" / "test.hyp.txt").read_text().splitlines()   # the beam's outputs, one per sentence
    ratio = res["test_length_ratio_beam"]            # hypothesis tokens / reference tokens of the beam's outputs
    assert isinstance(ratio, float) and ratio >= 0 and (ratio > 0) == any(h.split() for h in hyps)
    assert isinstance(res["test_length_ratio_greedy"], float) and res["test_length_ratio_greedy"] >= 0
    assert nmt_cli.main_train(args) == 2                 # the folder has a checkpoint: --resume needed
    assert "--resume" in capsys.readouterr().err
    bad = _parse(nmt_cli.configure_train, ["--config", "tiny", "--context", "bogus", "--out", str(tmp_path / "x")])
    assert nmt_cli.main_train(bad) == 2
    assert "context" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(nmt_cli.configure_train, ["--out", "x", "--max-forget-bits", "12"])
    gru = _parse(nmt_cli.configure_train, ["--config", "tiny", "--cell", "gru", "--epochs", "1", "--max-train", "48",
                                           "--out", str(tmp_path / "g")])
    assert nmt_cli.main_train(gru) == 0
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    assert cfg["method"] == "bptt" and cfg["context"] == "all"
