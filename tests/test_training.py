"""Language-model training: loss decreases, exact resume, atomic checkpoints, configs, CLI errors."""
import os
import dataclasses
import json
import math

import pytest
import torch

from revbench.tasks.lm import checkpoints, training
from revbench.cli import main as cli_main
from revbench.tasks.lm.configs import CONFIGS, RUN_CONTROL_FIELDS, TrainConfig, get_config
from revbench.tasks.lm.checkpoints import load_checkpoint, read_log
from revbench.tasks.lm.evaluation import evaluate
from revbench.tasks.lm.training import Trainer, train
from revbench.util.atomic import atomic_save

CELLS = ["revgru", "revlstm", "nf-revgru", "nf-revlstm", "gru", "lstm"]


def tiny(**kw):
    base = dict(synthetic_tokens=3000, epochs=1, measure_memory=False, final_memory=False,
                checkpoint_every_minutes=None)
    base.update(kw)
    return get_config("tiny", **base)


@pytest.mark.parametrize("cell", CELLS)
def test_one_epoch_decreases_loss(cell, tmp_path):
    """One epoch on the synthetic corpus: the per-interval training loss goes down and the validation loss
    ends below the untrained model's, for every cell. No-forgetting cells start every segment from a zero
    state (carry_state=False): on a continuous stream their additive state grows without bound."""
    nf = cell.startswith("nf-")
    cfg = tiny(cell=cell, method="reversible" if cell.startswith(("rev", "nf-rev")) else "bptt", log_interval=5,
               carry_state=not nf)
    tr = Trainer(cfg, tmp_path, quiet=True)
    tr._setup()
    before = evaluate(tr.model, tr.valid_data, cfg.bptt)["loss"]
    res = train(cfg, tmp_path / "run", quiet=True)
    prog = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["event"] == "progress"]
    assert len(prog) >= 3 and prog[-1] < prog[0] - 0.1
    assert res["valid_loss"] < before - 0.1
    assert math.isfinite(res["test_ppl"]) and res["test_ppl"] < cfg.synthetic_vocab


def _params(path):
    return load_checkpoint(path)["model"]


@pytest.mark.parametrize("cell", ["revlstm", "gru"])
def test_resume_is_bitwise_identical(cell, tmp_path):
    """Stop after k steps (max_steps), resume to N steps: same parameters, bit for bit, as N steps in one go.
    N crosses an epoch boundary, so the carried state, the segment generator and the lr schedule are covered."""
    kw = dict(cell=cell, method="reversible" if cell == "revlstm" else "bptt", epochs=3, synthetic_tokens=1500)
    n_total = 40
    train(tiny(max_steps=n_total, **kw), tmp_path / "a", quiet=True)
    train(tiny(max_steps=13, **kw), tmp_path / "b", quiet=True)
    ck = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ck["global_step"] == 13
    train(tiny(max_steps=27, **kw), tmp_path / "b", resume=True, quiet=True)
    train(tiny(max_steps=n_total, **kw), tmp_path / "b", resume=True, quiet=True)
    a, b = _params(tmp_path / "a" / "checkpoint.pt"), _params(tmp_path / "b" / "checkpoint.pt")
    ca, cb = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ca["global_step"] == cb["global_step"] == n_total and ca["epoch"] >= 2
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for x, y in zip(ca["hidden"], cb["hidden"]):
        for p, q in zip(x, y):
            assert torch.equal(p, q)
    assert ca["lr"] == cb["lr"] and ca["history"] == cb["history"]
    # the log of the resumed run holds each epoch record once, as the uninterrupted one does
    ea = [r["valid_ppl"] for r in read_log(tmp_path / "a" / "log.jsonl") if r["event"] == "epoch"]
    eb = [r["valid_ppl"] for r in read_log(tmp_path / "b" / "log.jsonl") if r["event"] == "epoch"]
    assert ea == eb and len(ea) >= 1


def test_resume_finishes_with_same_result(tmp_path):
    cfg = tiny(cell="revgru", epochs=2, synthetic_tokens=1500)
    full = train(cfg, tmp_path / "a", quiet=True)
    train(cfg.replace(max_steps=7), tmp_path / "b", quiet=True)
    res = train(cfg, tmp_path / "b", resume=True, quiet=True)
    assert res["valid_ppl"] == full["valid_ppl"] and res["test_ppl"] == full["test_ppl"]
    # a finished run resumed again just returns its result
    again = train(cfg, tmp_path / "b", resume=True, quiet=True)
    assert again["test_ppl"] == full["test_ppl"]


def test_checkpoint_atomic_under_crash(tmp_path, monkeypatch):
    """A crash while writing the checkpoint leaves the previous one loadable and no temporary file behind."""
    cfg = tiny(cell="revgru", max_steps=5)
    train(cfg, tmp_path, quiet=True)
    good = load_checkpoint(tmp_path / "checkpoint.pt")
    assert good["global_step"] == 5

    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        real_save({"partial": True}, f)          # some bytes reach the temporary file ...
        raise OSError("disk full (simulated crash)")   # ... then the write dies

    monkeypatch.setattr(training.torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated"):
        train(cfg.replace(max_steps=9), tmp_path, resume=True, quiet=True)
    monkeypatch.setattr(training.torch, "save", real_save)
    after = load_checkpoint(tmp_path / "checkpoint.pt")
    assert after["global_step"] == 5
    for k, v in good["model"].items():
        assert torch.equal(v, after["model"][k])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # and training resumes from it
    assert train(cfg.replace(max_steps=9), tmp_path, resume=True, quiet=True)["global_step"] == 9


def test_atomic_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    atomic_save({"v": 1}, path)

    def boom(*a, **k):
        raise RuntimeError("crash")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RuntimeError):
        atomic_save({"v": 2}, path)
    assert torch.load(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_resume_refuses_other_config_and_fresh_run_refuses_existing(tmp_path):
    train(tiny(cell="revgru", max_steps=3), tmp_path, quiet=True)
    with pytest.raises(checkpoints.CheckpointMismatchError, match="hidden_size"):
        train(tiny(cell="revgru", hidden_size=20, emb_size=20, max_steps=5), tmp_path, resume=True, quiet=True)
    with pytest.raises(checkpoints.OutputExistsError, match="--resume"):
        train(tiny(cell="revgru", max_steps=5), tmp_path, quiet=True)


def test_configs_share_code_path(tmp_path):
    """paper and small are TrainConfig values of the same dataclass, differing in numbers only; the paper's
    numbers are PAPER.md's; one step of the paper config runs through the same Trainer."""
    assert {"paper", "small"} <= set(CONFIGS)
    paper, small = get_config("paper"), get_config("small")
    assert type(paper) is type(small) is TrainConfig
    assert (paper.emb_size, paper.hidden_size, paper.batch_size, paper.bptt, paper.lr) == (650, 1150, 20, 70, 20.0)
    assert (paper.dropout_out, paper.dropout_h, paper.dropout_in, paper.dropout_emb, paper.weight_drop) == \
        (0.4, 0.3, 0.4, 0.1, 0.5)
    assert paper.weight_decay == 1.2e-6 and paper.clip == 0.25 and paper.lr_decay == 4.0
    assert get_config("paper", num_layers=3).layer_sizes() == [1150, 1150, 650]
    differing = {f.name for f in dataclasses.fields(TrainConfig) if getattr(paper, f.name) != getattr(small, f.name)}
    for name in differing:      # only numbers (and run control) differ
        assert isinstance(getattr(paper, name), (int, float)) or name in RUN_CONTROL_FIELDS, name
    # the paper config itself (1 layer, emb 650) runs one reversible step on the synthetic corpus
    cfg = get_config("paper", data="synthetic", synthetic_vocab=30, synthetic_tokens=3000, max_steps=1,
                     measure_memory=False, final_memory=False)
    res = train(cfg, tmp_path, quiet=True)
    assert res["stopped"] == "max_steps" and res["global_step"] == 1
    assert load_checkpoint(tmp_path / "checkpoint.pt")["model"]["encoder.weight"].shape == (30, 650)


def test_config_validation_errors():
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")
    with pytest.raises(ValueError, match="needs a reversible cell"):
        get_config("tiny", cell="lstm", method="reversible")
    with pytest.raises(ValueError, match="batch_size"):
        get_config("tiny", batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        get_config("tiny", colour="red")


def test_memory_figures_in_log_and_result(tmp_path):
    cfg = tiny(cell="revlstm", measure_memory=True, final_memory=True)
    res = train(cfg, tmp_path, quiet=True)
    ep = [r for r in read_log(tmp_path / "log.jsonl") if r["event"] == "epoch"][0]
    assert ep["saving_actual"] > 1 and ep["saving_ideal"] > 0 and ep["buffer_efficiency"] > 0
    assert ep["step_peak_bytes"] > 0 and ep["step_peak_bytes_meter"] == "live_tensors"
    fm = res["final_memory"]
    assert fm["bptt"]["peak_bytes"] > 0 and fm["reversible"]["peak_bytes"] > 0
    assert res["allocator_saving"] == pytest.approx(fm["bptt"]["peak_bytes"] / fm["reversible"]["peak_bytes"])
    json.dumps(res)      # plain JSON


def test_result_names_the_code_the_run_started_with(tmp_path, monkeypatch):
    """A commit made while a run trains is not the code it ran: result.json keeps the environment of the start."""
    calls = iter([{"commit": "at-start"}, {"commit": "later"}])
    monkeypatch.setattr(training, "environment_info", lambda device: next(calls))
    res = train(tiny(cell="gru", method="bptt"), tmp_path, quiet=True)
    start = [r for r in read_log(tmp_path / "log.jsonl") if r["event"] == "start"][0]
    assert res["environment"] == start["environment"] == {"commit": "at-start"}


def test_saving_through_training_is_logged(tmp_path):
    """Each log interval records its steps' savings; a "memory" record before training and after each epoch holds
    the allocator saving on the same segment, whose last one is the result's (same model, segment and masks)."""
    cfg = tiny(cell="revgru", epochs=2, measure_memory=True, final_memory=True, log_interval=5)
    res = train(cfg, tmp_path, quiet=True)
    log = read_log(tmp_path / "log.jsonl")
    progress = [r for r in log if r["event"] == "progress"]
    assert progress and all(r["saving_actual"] > 1 and r["saving_ideal"] > 0 for r in progress)
    mem = [r for r in log if r["event"] == "memory"]
    assert [(r["epoch"], r["global_step"] == 0) for r in mem] == [(1, True), (1, False), (2, False)]
    assert all(r["allocator_saving"] == r["bptt_peak_bytes"] / r["method_peak_bytes"] for r in mem)
    assert mem[-1]["allocator_saving"] == res["allocator_saving"]
    assert mem[0]["segment"] == res["final_memory"]["segment"]


def test_memory_records_do_not_change_training(tmp_path):
    """The probes step a copy of the model with the RNG restored: parameters end bitwise as without them."""
    kw = dict(cell="revlstm", epochs=2, log_interval=5)
    train(tiny(measure_memory=True, **kw), tmp_path / "a", quiet=True)
    train(tiny(measure_memory=False, **kw), tmp_path / "b", quiet=True)
    a, b = _params(tmp_path / "a" / "checkpoint.pt"), _params(tmp_path / "b" / "checkpoint.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(r["event"] == "memory" for r in read_log(tmp_path / "a" / "log.jsonl"))
    assert not any(r["event"] == "memory" for r in read_log(tmp_path / "b" / "log.jsonl"))


def test_training_curve_and_its_figure(tmp_path):
    from revbench.tasks.lm.records import lm_records, training_curve
    from revbench.tasks.lm.report import fig_saving_through_training, lm_sections

    run = tmp_path / "runs" / "r"
    train(tiny(cell="revgru", epochs=2, measure_memory=True, final_memory=True, log_interval=5), run, quiet=True)
    worst = max(r["ppl"] for r in read_log(run / "log.jsonl") if r["event"] == "progress")
    with open(run / "log.jsonl", "a", encoding="utf-8") as fh:
        fh.write("{not json\n")                                   # a damaged line is skipped
    curve = training_curve(run / "log.jsonl")
    xs = [p[0] for p in curve["paper"]]
    assert xs == sorted(xs) and 0 < xs[0] < 1 < xs[-1] <= 2
    assert [a[0] for a in curve["allocator"]] == [0, 1, 2]
    assert training_curve(tmp_path / "missing.jsonl") == {"paper": [], "allocator": [], "max_train_ppl": None}
    assert curve["max_train_ppl"] == worst
    recs = lm_records(tmp_path)
    assert recs[0]["training_curve"] == curve
    assert fig_saving_through_training(recs, recs[0]["data"]) is not None
    assert fig_saving_through_training(recs, "wikitext2") is None
    from revbench.tasks.lm.report import lm_differences
    assert not any("diverged" in d for d in lm_differences(recs, None))
    recs[0]["training_curve"]["max_train_ppl"] = 11 * recs[0]["vocab_size"]     # as a run that blew up on the way
    assert any(d.startswith(f"{recs[0]['run']} diverged while training") for d in lm_differences(recs, None))
    titles = [t for t, _ in lm_sections(recs)]
    assert f"Figure: {recs[0]['data']}, the saving through training" in titles


# --------------------------------------------------------------------------------------------- CLI
def test_cli_missing_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("REVBENCH_DATA", raising=False)
    rc = cli_main(["train", "lm", "--data", "ptb", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0
    assert "REVBENCH_DATA" in err and "--data-dir" in err and "Traceback" not in err


def test_cli_bad_data_dir_and_method(tmp_path, capsys):
    rc = cli_main(["train", "lm", "--data", "ptb", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert rc != 0 and "does not exist" in capsys.readouterr().err
    rc = cli_main(["train", "lm", "--config", "tiny", "--method", "magic", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc != 0 and "unknown method 'magic'" in err and "Traceback" not in err
    rc = cli_main(["train", "lm", "--config", "tiny", "--cell", "gru", "--method", "reversible",
                   "--out", str(tmp_path / "g")])
    assert rc != 0 and "needs a reversible cell" in capsys.readouterr().err


def test_cli_train_tiny_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "lm", "--config", "tiny", "--cell", "revgru", "--max-forget-bits", "none",
                     "--max-steps", "4", "--no-memory", "--out", str(out), "--quiet"]) == 0
    assert "stopped at step 4" in capsys.readouterr().out
    assert cli_main(["train", "lm", "--config", "tiny", "--cell", "revgru", "--out", str(out), "--quiet"]) != 0
    assert "--resume" in capsys.readouterr().err
    assert cli_main(["train", "lm", "--config", "tiny", "--cell", "revgru", "--max-forget-bits", "none",
                     "--no-memory", "--out", str(out), "--quiet", "--resume"]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["max_forget_bits"] is None and res["cell"] == "revgru" and res["method"] == "reversible"


def test_cli_task_missing_prints_help(capsys):
    assert cli_main(["train"]) != 0
    assert "lm" in capsys.readouterr().out
