"""Checkpoints prove they are intact: a flipped bit, a truncated or foreign file, a renamed key is refused with one
line naming the file (exit 2), never resumed from; an old checkpoint without a digest is used with a warning; the
temporary files a killed write leaves are removed by the next run in that folder, and nothing else is."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from revbench.tasks.integrity import CheckpointCorruptError, load_sealed, payload_digest, seal
from revbench.tasks.lm.configs import get_config
from revbench.tasks.lm.training import train as train_lm
from revbench.tasks.nmt.config import make_config
from revbench.tasks.nmt.train import train as train_nmt
from tests.helpers import run_cli as cli

pytestmark = pytest.mark.usefixtures("one_thread")

NMT_ARGS = ["--config", "tiny", "--max-train", "48", "--epochs", "2"]




def error_line(err: str) -> str:
    """The one line an error prints (no traceback)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("revbench: warning")]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------------------- runs to damage
@pytest.fixture(scope="module")
def lm_source(tmp_path_factory):
    """An LM run stopped after 20 steps (one epoch done: checkpoint.pt and best.pt), and its config file."""
    base = tmp_path_factory.mktemp("lm")
    cfg = get_config("tiny", synthetic_tokens=1500, epochs=2, checkpoint_every_minutes=None, max_steps=20)
    cfg_file = base / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    train_lm(cfg, base / "run", quiet=True)
    assert (base / "run" / "best.pt").exists()
    return base


@pytest.fixture
def lm_run(lm_source, tmp_path):
    run = tmp_path / "lm"
    shutil.copytree(lm_source / "run", run)
    return run, ["train", "lm", "--config-file", lm_source / "cfg.json", "--out", run, "--resume", "--quiet",
                 "--max-steps", "22"]


@pytest.fixture(scope="module")
def nmt_source(tmp_path_factory):
    """An NMT run stopped in its second epoch (checkpoint.pt and best.pt written)."""
    base = tmp_path_factory.mktemp("nmt")
    train_nmt(make_config("tiny", max_train=48, epochs=2), base / "run", stop_after_steps=4, log=lambda s: None)
    assert (base / "run" / "best.pt").exists()
    return base


@pytest.fixture
def nmt_run(nmt_source, tmp_path):
    run = tmp_path / "nmt"
    shutil.copytree(nmt_source / "run", run)
    return run, ["train", "nmt", *NMT_ARGS, "--out", run, "--resume", "--quiet", "--no-progress"]


def _largest_weight(state_dict):
    return max((k for k, v in state_dict.items() if v.is_floating_point()), key=lambda k: state_dict[k].numel())


def flip_weight_bit(path, key=None):
    """Flip one bit inside the bytes of a weight tensor of ``path``'s ``model``; check that it landed there."""
    before = torch.load(path, weights_only=False)["model"]
    key = key or _largest_weight(before)
    data = before[key].contiguous().numpy().tobytes()
    raw = bytearray(path.read_bytes())
    at = raw.find(data)
    assert at >= 0 and raw.find(data, at + 1) < 0
    raw[at + len(data) // 2] ^= 0x04
    path.write_bytes(bytes(raw))
    after = torch.load(path, weights_only=False)["model"]          # torch itself notices nothing
    assert int((after[key] != before[key]).sum()) == 1
    assert all(torch.equal(after[k], before[k]) for k in before if k != key and not torch.equal(before[k], before[key]))
    return key


# ------------------------------------------------------------------------------------------- the digest
def test_digest_covers_every_tensor_byte_and_value():
    payload = {"model": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, "step": 3, "lr": 0.5,
               "hidden": [(torch.zeros(2, dtype=torch.int64),)], "name": "x", "none": None, "ok": True}
    d = payload_digest(payload)
    assert d == payload_digest({**payload})              # deterministic
    w = payload["model"]["w"].clone()
    w.view(torch.int32)[0, 1] ^= 1                       # lowest mantissa bit of one element
    assert payload_digest({**payload, "model": {"w": w}}) != d
    assert payload_digest({**payload, "model": {"w": payload["model"]["w"].double()}}) != d   # dtype counts
    assert payload_digest({**payload, "model": {"w": payload["model"]["w"].reshape(3, 2)}}) != d  # shape counts
    assert payload_digest({**payload, "step": 4}) != d and payload_digest({**payload, "lr": 0.5000001}) != d
    assert payload_digest({**payload, "ok": 1}) != d     # True and 1 differ
    assert payload_digest({"a": 1, "b": 2}) != payload_digest({"a": 2, "b": 1})


def test_seal_round_trip_and_mismatch(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(seal({"format": "t/2", "model": {"w": torch.ones(4)}}), path)
    got = load_sealed(path, "test checkpoint", required=("model",))
    assert torch.equal(got["model"]["w"], torch.ones(4)) and "integrity" not in got
    flip_weight_bit(path, "w")
    with pytest.raises(CheckpointCorruptError, match=r"x\.pt.*SHA-256"):
        load_sealed(path, "test checkpoint")


# ------------------------------------------------------------------------------------------- item 1: bit flips
def test_lm_checkpoint_with_a_flipped_weight_bit_is_refused(lm_run, capsys):
    run, argv = lm_run
    flip_weight_bit(run / "checkpoint.pt")
    damaged = (run / "checkpoint.pt").read_bytes()
    rc, out, err = cli(argv, capsys)
    line = error_line(err)
    assert rc == 2 and str(run / "checkpoint.pt") in line and "SHA-256" in line
    assert (run / "checkpoint.pt").read_bytes() == damaged          # not overwritten: nothing trained on it


def test_lm_best_with_a_flipped_weight_bit_is_refused(lm_run, capsys):
    run, argv = lm_run
    flip_weight_bit(run / "best.pt")
    rc, out, err = cli(argv, capsys)
    line = error_line(err)
    assert rc == 2 and str(run / "best.pt") in line and "SHA-256" in line


@pytest.mark.parametrize("name", ["checkpoint.pt", "best.pt"])
def test_nmt_checkpoints_with_a_flipped_weight_bit_are_refused(nmt_run, name, capsys):
    run, argv = nmt_run
    flip_weight_bit(run / name)
    rc, out, err = cli(argv, capsys)
    line = error_line(err)
    assert rc == 2 and str(run / name) in line and "SHA-256" in line


def test_intact_checkpoints_resume(lm_run, nmt_run, capsys):
    rc, out, err = cli(lm_run[1], capsys)
    assert rc == 0 and "stopped at step 22" in out, err
    rc, out, err = cli(nmt_run[1], capsys)
    assert rc == 0 and "test BLEU" in out, err


# ------------------------------------------------------------------------------------------- item 2: damage
def _resealed(path, change):
    ck = load_sealed(path, "checkpoint")
    change(ck)
    torch.save(seal(ck), path)


def _unsealed(path):
    ck = load_sealed(path, "checkpoint")
    torch.save(ck, path)


DAMAGE = {
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "half": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "cannot be read"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(4096)), "cannot be read"),
    "json": (lambda p: p.write_text('{"model": {}, "format": "revbench.lm-checkpoint/2"}'), "cannot be read"),
    "directory": (lambda p: (p.unlink(), p.mkdir()), "directory"),
    "a list": (lambda p: torch.save([1, 2, 3], p), "not a"),
    "no digest": (_unsealed, "no integrity digest"),
    "renamed key": (lambda p: _resealed(p, lambda ck: ck.__setitem__("modex", ck.pop("model"))), "model"),
    "missing key": (lambda p: _resealed(p, lambda ck: ck.pop("optimizer")), "optimizer"),
    "renamed weight": (lambda p: _resealed(p, lambda ck: ck["model"].__setitem__(
        "bogus.weight", ck["model"].pop(next(iter(ck["model"]))))), "bogus.weight"),
    "bad digest entry": (lambda p: torch.save({**load_sealed(p, "c"), "integrity": "x"}, p), "integrity"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_lm_damaged_checkpoint_is_one_line_and_exit_2(lm_run, damage, capsys):
    run, argv = lm_run
    do, why = DAMAGE[damage]
    do(run / "checkpoint.pt")
    rc, out, err = cli(argv, capsys)
    line = error_line(err)
    assert rc == 2 and str(run / "checkpoint.pt") in line and why in line, line


@pytest.mark.parametrize("damage", ["empty", "half", "random bytes", "directory", "no digest", "renamed key",
                                    "missing key", "renamed weight"])
def test_nmt_damaged_checkpoint_is_one_line_and_exit_2(nmt_run, damage, capsys):
    run, argv = nmt_run
    do, why = DAMAGE[damage]
    do(run / "checkpoint.pt")
    rc, out, err = cli(argv, capsys)
    line = error_line(err)
    assert rc == 2 and str(run / "checkpoint.pt") in line and why in line, line


@pytest.mark.parametrize("damage", ["half", "renamed key"])
def test_damaged_best_is_refused(lm_run, nmt_run, damage, capsys):
    do, why = DAMAGE[damage]
    for run, argv in (lm_run, nmt_run):
        do(run / "best.pt")
        rc, out, err = cli(argv, capsys)
        line = error_line(err)
        assert rc == 2 and str(run / "best.pt") in line and why in line, line


# ------------------------------------------------------------------------------------------- old checkpoints
def test_checkpoints_without_a_digest_from_older_versions_are_used_with_a_warning(lm_run, nmt_run, capsys):
    run, argv = lm_run
    for name, fmt in (("checkpoint.pt", "revbench.lm-checkpoint/1"), ("best.pt", None)):
        ck = load_sealed(run / name, name)
        ck.pop("format") if fmt is None else ck.update(format=fmt)
        torch.save(ck, run / name)
    rc, out, err = cli(argv, capsys)
    assert rc == 0, err
    assert "warning" in err and str(run / "checkpoint.pt") in err and "no integrity digest" in err
    run, argv = nmt_run
    ck = load_sealed(run / "checkpoint.pt", "checkpoint")
    ck.pop("format")
    torch.save(ck, run / "checkpoint.pt")
    rc, out, err = cli(argv, capsys)
    assert rc == 0 and str(run / "checkpoint.pt") in err and "no integrity digest" in err, err


# ------------------------------------------------------------------------------------------- item 12: litter
LITTER = [".checkpoint.pt.a1b2c3d4.tmp", ".best.pt.zz_09xyq.tmp"]
NOT_OURS = [".notes.txt.a1b2c3d4.tmp", "checkpoint.pt.tmp", ".checkpoint.pt.tmp", "keep.tmp",
            ".checkpoint.pt.a1b2c3d4.tmp.bak"]


@pytest.mark.parametrize("kind", ["lm", "nmt"])
def test_stale_temporaries_are_removed_and_nothing_else(lm_run, nmt_run, kind, capsys):
    run, argv = lm_run if kind == "lm" else nmt_run
    for name in LITTER + NOT_OURS:
        (run / name).write_bytes(b"partial")
    (run / ".result.json.q1w2e3r4.tmp").mkdir()               # a folder of that name is not ours to remove
    argv = [a for a in argv if a != "--quiet"]
    rc, out, err = cli(argv, capsys)
    assert rc == 0, err
    names = {p.name for p in run.iterdir()}
    assert not names & set(LITTER) and set(NOT_OURS) <= names and ".result.json.q1w2e3r4.tmp" in names
    said = [ln for ln in (out + err).splitlines() if "removed" in ln and "stale temporary" in ln]
    assert len(said) == 1 and all(n in said[0] for n in LITTER), out + err


def test_the_litter_pattern_is_what_replacing_writes(tmp_path):
    """``stale_temporaries`` recognises the very names ``replacing`` gives its temporary files, and no others."""
    from revbench.util.atomic import replacing, stale_temporaries

    with replacing(tmp_path / "checkpoint.pt") as tmp:
        tmp.write_bytes(b"x")
        assert stale_temporaries(tmp_path, ["checkpoint.pt"]) == [tmp]
        assert stale_temporaries(tmp_path, ["best.pt", "pt"]) == []
    assert stale_temporaries(tmp_path, ["checkpoint.pt"]) == []


def test_a_checkpoint_write_killed_midway_leaves_litter_the_next_run_removes(lm_run, capsys):
    """A real SIGKILL in the middle of writing checkpoint.pt: the old checkpoint is intact, the temporary file the
    write left is removed (and reported) by the resume, which then trains on from the intact checkpoint."""
    run, argv = lm_run
    before = (run / "checkpoint.pt").read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, torch
        from revbench.util.atomic import atomic_save
        real = torch.save
        def dying(obj, fh, *a, **k):
            fh.write(b"PK\\x03\\x04 half a checkpoint")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying
        atomic_save({{"model": {{}}}}, {str(run / "checkpoint.pt")!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    litter = [p.name for p in run.iterdir() if p.name.startswith(".checkpoint.pt.") and p.name.endswith(".tmp")]
    assert len(litter) == 1 and (run / "checkpoint.pt").read_bytes() == before
    rc, out, err = cli([a for a in argv if a != "--quiet"], capsys)
    assert rc == 0 and "stopped at step 22" in out, err
    assert not (run / litter[0]).exists() and litter[0] in out + err
