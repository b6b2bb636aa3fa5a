"""One training process per run folder: a second `train lm|nmt` on a folder in use is refused (exit 2, one line,
nothing written), and a killed holder leaves the folder usable."""
import signal
import subprocess
import sys
import time

import pytest

from helpers import run_cli
from revbench.tasks.nmt.config import make_config
from revbench.tasks.nmt.train import train as train_nmt
from revbench.util.runlock import RunFolderBusy, run_lock

TINY_LM = ["train", "lm", "--config", "tiny", "--no-progress", "--quiet"]


def test_a_second_lm_run_in_a_busy_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    with run_lock(out):
        rc, _, err = run_cli(TINY_LM + ["--out", out], capsys)
    assert rc == 2 and "Traceback" not in err
    assert f"{out} is in use: another revbench process is training there" in err and "choose another --out" in err
    assert not list(out.iterdir())                                       # nothing of a run was written
    rc, _, err = run_cli(TINY_LM + ["--out", out], capsys)               # free again once the holder let go
    assert rc == 0, err
    assert (out / "result.json").exists()


def test_a_second_nmt_run_in_a_busy_folder_is_refused(tmp_path):
    cfg = make_config("tiny", epochs=1, synthetic_train=32)
    with run_lock(tmp_path):
        with pytest.raises(RunFolderBusy, match="is in use"):
            train_nmt(cfg, tmp_path, log=lambda *a, **k: None)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_killed_holder_leaves_the_folder_usable(tmp_path):
    code = ("import sys, time\nfrom revbench.util.runlock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match="is in use"):
            with run_lock(tmp_path):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while True:                      # the kernel drops a dead process's lock
        try:
            with run_lock(tmp_path):
                break
        except RunFolderBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)
