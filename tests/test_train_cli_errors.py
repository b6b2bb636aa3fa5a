"""`revbench train lm|nmt` refuses hostile command lines with one line naming the option or file (exit 2), stops a
diverging run with "training diverged" (exit 1) and an interrupted one with a message (exit 130); `train nmt`
takes `--no-verify`; a data file that is not text is named."""
import json
import os

import pytest

from revbench.tasks.lm.configs import get_config
from revbench.tasks.lm.training import train as train_lm
from revbench.tasks.nmt.config import make_config
from revbench.tasks.nmt.train import train as train_nmt
from tests.helpers import run_cli as cli

pytestmark = pytest.mark.usefixtures("one_thread")

NMT = ["train", "nmt", "--config", "tiny", "--max-train", "48", "--quiet", "--no-progress"]
LM = ["train", "lm", "--config", "tiny", "--quiet", "--max-steps", "2"]




def last_line(err: str) -> str:
    """The error line (argparse prints its usage above it); never a traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, err
    return lines[-1]


# ------------------------------------------------------------------------------------------- exit 2
BAD = [
    # (command line after the base, words the error line must hold)
    ("lm", ["--method", "checkpoint", "--method-options", '{"nosuch": 1}'], ["--method-options", "nosuch"]),
    ("lm", ["--method-options", '{"nosuch": 1}'], ["--method-options", "nosuch", "reversible"]),
    ("nmt", ["--method-options", '{"nosuch": 1}'], ["--method-options", "nosuch"]),
    ("nmt", ["--method", "gruslys", "--method-options", '{"slots": 2, "bogus": true}'], ["--method-options", "bogus"]),
    ("lm", ["--device", "foo"], ["--device", "foo"]),
    ("lm", ["--device", "cuda:x"], ["--device", "cuda:x"]),
    ("lm", ["--seed", str(10**23)], ["--seed", str(10**23)]),
    ("lm", ["--seed", "-1"], ["--seed"]),
    ("nmt", ["--seed", str(10**23)], ["--seed", str(10**23)]),
    ("lm", ["--checkpoint-every-steps", "-1"], ["--checkpoint-every-steps", "-1"]),
    ("lm", ["--checkpoint-every-minutes", "-1"], ["--checkpoint-every-minutes", "-1"]),
    ("lm", ["--checkpoint-every-minutes", "nan"], ["--checkpoint-every-minutes", "nan"]),
    ("nmt", ["--length-penalty", "nan"], ["--length-penalty", "nan"]),
    ("nmt", ["--length-penalty", "inf"], ["--length-penalty", "inf"]),
    ("nmt", ["--save-every", "-1"], ["--save-every", "-1"]),
    ("nmt", ["--threads", "-1"], ["--threads", "-1"]),
    ("lm", ["--threads", "0"], ["--threads", "0"]),
]


@pytest.mark.parametrize("kind,extra,words", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_bad_option_is_one_line_naming_it_and_exit_2(kind, extra, words, tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, out, err = cli((LM if kind == "lm" else NMT) + ["--out", out_dir] + extra, capsys)
    line = last_line(err)
    assert rc == 2 and all(w in line for w in words), err
    assert not (out_dir / "checkpoint.pt").exists()                  # nothing was trained


@pytest.mark.parametrize("content,words", [
    ("[1, 2, 3]", ["holds a JSON list", "not an object"]),
    ('"tiny"', ["holds a JSON str"]),
    (None, ["cannot be read"]),                                     # a folder
    ('{"data": "synthetic", "lr": "fast"}', ["lr"]),
    ('{"data": "synthetic", "seed": 100000000000000000000000}', ["seed", "100000000000000000000000"]),
    ('{"data": "synthetic", "device": "foo"}', ["device", "foo"]),
    ('{"data": "synthetic", "checkpoint_every_steps": -1}', ["checkpoint_every_steps", "-1"]),
    (b"\xff\xfe\x00garbage", ["not valid JSON"]),
])
def test_bad_config_file_is_one_line_and_exit_2(content, words, tmp_path, capsys):
    path = tmp_path / "cfg.json"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    rc, out, err = cli(["train", "lm", "--config-file", path, "--out", tmp_path / "o", "--quiet"], capsys)
    line = last_line(err)
    assert rc == 2 and all(w in line for w in words), err
    assert line.startswith("revbench train lm: error:") and len(err.strip().splitlines()) == 1, err


def test_library_refuses_the_same_values(tmp_path):
    """The checks the command line applies are the library's too (no silent acceptance through Python)."""
    for bad, word in ((dict(seed=10**23), "seed"), (dict(device="foo"), "device"),
                      (dict(checkpoint_every_steps=-1), "checkpoint_every_steps"),
                      (dict(checkpoint_every_minutes=-1.0), "checkpoint_every_minutes"),
                      (dict(checkpoint_every_minutes=float("nan")), "checkpoint_every_minutes"),
                      (dict(method="checkpoint", method_options={"nosuch": 1}), "--method-options")):
        with pytest.raises(ValueError, match=word):
            train_lm(get_config("tiny", **bad), tmp_path / "never-written", quiet=True)
    for bad, word in ((dict(seed=10**23), "seed"), (dict(length_penalty=float("nan")), "length_penalty"),
                      (dict(save_every=-1), "save_every"), (dict(method_options={"nosuch": 1}), "--method-options"),
                      (dict(lr=float("inf")), "lr"), (dict(dropout=1.5), "dropout")):
        with pytest.raises(ValueError, match=word):
            make_config("tiny", **bad)


# ------------------------------------------------------------------------------------------- divergence, Ctrl-C
def test_nmt_divergence_stops_with_training_diverged_exit_1(tmp_path, capsys):
    rc, out, err = cli(NMT + ["--lr", "1e30", "--out", tmp_path / "d"], capsys)
    line = last_line(err)
    assert rc == 1 and line.startswith("revbench train nmt: training diverged:"), err
    assert len(err.strip().splitlines()) == 1


def test_nmt_ctrl_c_prints_a_message_and_exits_130(tmp_path, capsys, monkeypatch):
    import revbench.tasks.nmt.train as nmt_train

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(nmt_train, "train", interrupted)
    rc, out, err = cli(NMT + ["--out", tmp_path / "c"], capsys)
    assert rc == 130 and "interrupted" in err and "--resume" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------- data files
def _multi30k(folder, lines=8):
    folder.mkdir(parents=True)
    for stem in ("train", "val", "test2016"):
        (folder / f"{stem}.en").write_text("".join(f"a small dog runs {i} .\n" for i in range(lines)))
        (folder / f"{stem}.de").write_text("".join(f"ein kleiner hund rennt {i} .\n" for i in range(lines)))
    return folder


def test_nmt_no_verify_trains_on_a_copy_without_checksums(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REVBENCH_CACHE", str(tmp_path / "cache"))
    data = _multi30k(tmp_path / "data" / "multi30k")
    base = NMT + ["--data", "multi30k", "--data-dir", data.parent, "--epochs", "1", "--beam-size", "1"]
    rc, out, err = cli(base + ["--out", tmp_path / "v"], capsys)
    assert rc == 2 and "SHA256SUMS" in last_line(err) and "--no-verify" in last_line(err)
    rc, out, err = cli(base + ["--no-verify", "--out", tmp_path / "n"], capsys)
    assert rc == 0 and "test BLEU" in out, err
    res = train_nmt(make_config("tiny", data="multi30k", epochs=1, beam_size=1), tmp_path / "lib",
                    data_dir=data.parent, verify=False, log=lambda s: None)
    assert res["steps"] >= 1


@pytest.mark.parametrize("kind", ["lm", "nmt"])
def test_random_bytes_in_a_data_file_name_the_file(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REVBENCH_CACHE", str(tmp_path / "cache"))
    if kind == "lm":
        data = tmp_path / "data" / "ptb"
        data.mkdir(parents=True)
        for split in ("train", "valid", "test"):
            (data / f"ptb.{split}.txt").write_text("the cat sat on the mat\n" * 50)
        bad = data / "ptb.valid.txt"
        argv = ["train", "lm", "--config", "tiny", "--data", "ptb", "--quiet"]
    else:
        data = _multi30k(tmp_path / "data" / "multi30k")
        bad = data / "val.de"
        argv = NMT + ["--data", "multi30k"]
    bad.write_bytes(b"\xff\xfe" + os.urandom(2000))
    rc, out, err = cli(argv + ["--data-dir", data.parent, "--no-verify", "--out", tmp_path / "o"], capsys)
    line = last_line(err)
    assert rc == 2 and str(bad) in line and "UTF-8" in line, err
    assert len(err.strip().splitlines()) == 1


def test_edge_values_still_work(tmp_path):
    """Valid values at the edges still work: seed 0 and 2^32-1, checkpointing every 0 steps (off)."""
    for seed in (0, 2**32 - 1):
        res = train_lm(get_config("tiny", seed=seed, max_steps=1, checkpoint_every_steps=0), tmp_path / str(seed),
                       quiet=True)
        assert res["global_step"] == 1
    assert json.loads((tmp_path / "0" / "log.jsonl").read_text().splitlines()[0])["config"]["seed"] == 0


@pytest.mark.parametrize("method", ["torch-checkpoint", "revolve"])
def test_train_nmt_runs_the_peer_methods(method, tmp_path, capsys):
    """The registry's peers that run on the encoder-decoder are offered by `train nmt --method` too."""
    rc, out, err = cli(NMT + ["--method", method, "--epochs", "1", "--out", tmp_path / method], capsys)
    assert rc == 0, err
    assert (tmp_path / method / "results.json").exists()


# ------------------------------------------------------------------------------------------- --device
HAS_CUDA = __import__("torch").cuda.is_available()


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU: cuda is not absent")
@pytest.mark.parametrize("kind,device", [("lm", "cuda"), ("lm", "cuda:1"), ("nmt", "cuda"), ("nmt", "cuda:0")])
def test_cuda_asked_for_and_absent_is_one_line_exit_2_nothing_written(kind, device, tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, out, err = cli((LM if kind == "lm" else NMT) + ["--out", out_dir, "--device", device], capsys)
    line = last_line(err)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert line.startswith(f"revbench train {kind}: error: --device: device {device!r}") and "no CUDA device" in line
    assert not out_dir.exists()                                     # refused before anything was written


def test_train_nmt_passes_the_device_to_training(tmp_path, capsys, monkeypatch):
    import revbench.tasks.nmt.train as nmt_train

    seen = {}

    def fake_train(cfg, out, **kw):
        seen.update(kw)
        raise KeyboardInterrupt                                     # stop there: exit 130

    monkeypatch.setattr(nmt_train, "train", fake_train)
    rc, out, err = cli(NMT + ["--out", tmp_path / "o", "--device", "cpu"], capsys)
    assert rc == 130 and seen.get("device") == "cpu", (seen, err)


def test_nmt_library_takes_a_device_and_records_it(tmp_path):
    res = train_nmt(make_config("tiny", epochs=1, beam_size=1, max_train=16), tmp_path / "n", log=lambda s: None,
                    device="cpu")
    assert res["device"] == "cpu"
    with pytest.raises(ValueError, match="'gpu'"):
        train_nmt(make_config("tiny"), tmp_path / "bad", device="gpu")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (this machine has none)")
@pytest.mark.parametrize("kind", ["lm", "nmt"])
def test_tiny_training_on_cuda(kind, tmp_path, capsys):
    """The tiny configs train on the GPU end to end (checkpoint, evaluation, results)."""
    extra = ["--max-steps", "4"] if kind == "lm" else ["--epochs", "1", "--beam-size", "1"]
    rc, out, err = cli((LM[:-2] if kind == "lm" else NMT) + extra + ["--device", "cuda", "--out", tmp_path / kind],
                       capsys)
    assert rc == 0, err
    assert (tmp_path / kind / "checkpoint.pt").exists()
    if kind == "nmt":
        assert json.loads((tmp_path / kind / "results.json").read_text())["device"] == "cuda"
