"""The engine behind `revbench run` (revbench.tasks.engine) on the local engine: a failing case is retried once and
then failed without losing the others; a worker killed in the middle of a case is retried and the run completes;
an interrupted run resumes without repeating its finished cases; a damaged partial file is never trusted; progress
has an ETA; `--engine ray` without Ray is one line and exit 2. The real runs use the three cheap encoder-decoder
cases of the GRU baseline (bptt, checkpoint, gruslys: about 15 s in one worker)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from revbench.report.results import load_benchmarks
from revbench.tasks.engine.partial import PARTIAL_NAME, PartialStore
from revbench.tasks.engine.progress import Progress
from revbench.tasks.engine.runner import Tracker
from tests.helpers import run_cli

CHEAP = "s2s-gru-all-L1"            # bptt, checkpoint and gruslys on the small GRU encoder-decoder
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- helpers
def cmdline(pid) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def workers(*needles: bytes) -> list[int]:
    """Processes running an engine worker (any parent: a Ray worker's child too) whose command line holds
    every one of ``needles``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cl = cmdline(entry.name)
            if b"revbench.tasks.engine.child" in cl and b"pytest" in cl and all(n in cl for n in needles):
                out.append(int(entry.name))
    return out


def events_of(pid: int) -> list[dict]:
    arg = next((a for a in cmdline(pid).split(b"\0") if a.startswith(b"--revbench-events=")), None)
    if arg is None:
        return []
    try:
        lines = Path(arg.split(b"=", 1)[1].decode()).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(ln) for ln in lines if ln.strip()]


def kill_in_case(nth_start: int, needles=(), timeout: float = 120) -> threading.Thread:
    """A thread that SIGKILLs the first worker seen to start its ``nth_start``-th case (1-based), a tenth of a
    second into it; ``thread.killed`` says which case it was in."""
    def watch():
        end = time.monotonic() + timeout
        while time.monotonic() < end and thread.killed is None:
            for pid in workers(*needles):
                starts = [e["case"] for e in events_of(pid) if e.get("event") == "start"]
                ends = {e["case"] for e in events_of(pid) if e.get("event") == "end"}
                if len(starts) >= nth_start and starts[nth_start - 1] not in ends:
                    time.sleep(0.1)
                    if starts[nth_start - 1] in {e["case"] for e in events_of(pid) if e.get("event") == "end"}:
                        continue                     # it ended meanwhile: wait for another
                    os.kill(pid, signal.SIGKILL)
                    thread.killed = starts[nth_start - 1]
                    return
            time.sleep(0.05)
    thread = threading.Thread(target=watch, daemon=True)
    thread.killed = None
    thread.start()
    return thread


class _MemoryStore(PartialStore):
    def save(self):                         # the Tracker's rules only: no file
        pass


def _tracker(ids, retries=1):
    return Tracker(ids, _MemoryStore(Path("/nonexistent"), {}), Progress(len(ids), quiet=True), retries=retries)


def _entry(case):
    return {"name": f"test_step[{case}]", "extra_info": {"worker": "h:1"}}


# ------------------------------------------------------------------------------------------- the rules
def test_a_failing_case_is_retried_once_then_failed_and_the_others_are_kept():
    t = _tracker(["a", "b", "c"])
    assert t.take() == ["a", "b", "c"]
    t.event({"event": "end", "case": "a", "outcome": "failed", "error": "boom\ntraceback"})
    t.event({"event": "end", "case": "b", "outcome": "passed", "benchmark": _entry("b")})
    t.lost("c", "the worker died during the case")               # its worker was killed in it
    assert list(t.pending) == ["a", "c"] and not t.finished()    # each back once
    assert t.take() == ["a", "c"]
    t.event({"event": "end", "case": "a", "outcome": "failed", "error": "boom again"})
    t.event({"event": "end", "case": "c", "outcome": "passed", "benchmark": _entry("c")})
    assert t.finished()
    res = t.result()
    assert res.failed == {"a": "boom again"} and list(res.entries) == ["b", "c"]


def test_cases_a_dead_worker_never_started_are_requeued_without_a_try():
    t = _tracker(["a", "b"], retries=0)
    t.take()
    t.unstarted(["a", "b"])
    assert list(t.pending) == ["a", "b"] and t.attempts == {}
    t.take()
    t.lost("a", "killed")                                        # retries=0: failed at once
    assert t.result().failed == {"a": "killed"}


def test_progress_counts_and_eta():
    p = Progress(4, already=1, quiet=True)
    p.start("a")
    p.start("b")
    assert "running 2" in p.line() and p.eta() is None           # no rate before a case finished here
    time.sleep(0.05)
    p.finish("a", "done")
    p.finish("b", "failed", "boom")
    assert p.line().startswith("[3/4] done 2, running 0, failed 1, ETA ")
    assert 0 < p.eta() < 1                                       # 1 left at the mean of 2 finished here


# ------------------------------------------------------------------------------------------- the partial file
@pytest.fixture(scope="module")
def real_entry():
    doc = json.loads((ROOT / "reports" / "baseline.json").read_text())
    entry = doc["benchmarks"][0]
    return entry["name"][entry["name"].index("[") + 1:-1], entry


def test_a_damaged_partial_file_is_never_trusted(tmp_path, real_entry):
    case, entry = real_entry
    path = tmp_path / PARTIAL_NAME
    PartialStore(path, {"grid": "default"}).add(case, entry, {"machine_info": {}, "commit_info": {}})
    said = []
    assert PartialStore(path, {"grid": "default"}).load(said.append) == 1 and not said
    good = path.read_bytes()
    variants = {"flipped": good.replace(b'"peak_bytes": ', b'"peak_bytes": 1', 1),
                "truncated": good[: len(good) // 2], "empty": b"", "not json": b"\xff\xfe",
                "foreign": json.dumps({"benchmarks": []}).encode()}
    for what, data in variants.items():
        path.write_bytes(data)
        said.clear()
        store = PartialStore(path, {"grid": "default"})
        assert store.load(said.append) == 0 and store.cases == {}, what
        assert len(said) == 1 and str(path) in said[0] and "not used" in said[0], (what, said)
    path.write_bytes(good)
    said.clear()
    assert PartialStore(path, {"grid": "frontier"}).load(said.append) == 0    # other settings
    assert "other settings" in said[0] and "grid" in said[0]
    # a record that breaks the contract, sealed with a correct digest, is refused too
    bad = json.loads(json.dumps(entry))
    bad["extra_info"]["peak_bytes"] = -5
    PartialStore(path, {"grid": "default"}).add(case, bad)
    said.clear()
    assert PartialStore(path, {"grid": "default"}).load(said.append) == 0 and "record contract" in said[0]


# ------------------------------------------------------------------------------------------- real runs
def test_a_worker_killed_in_a_case_is_retried_and_the_run_completes(tmp_path, capsys):
    out = tmp_path / "out"
    killer = kill_in_case(2, needles=(b"--revbench-engine-name=local",))
    rc, printed, err = run_cli(["run", "--filter", CHEAP, "--out", out, "--no-report"], capsys)
    killer.join(5)
    assert killer.killed, "the worker was not killed in a case"
    assert rc == 0, err
    df = load_benchmarks(out / "benchmarks.json")
    assert len(df) == 3 and df["config_id"].nunique() == 1
    assert f"retry {killer.killed}" in printed and "failed 1" not in printed
    assert df["worker"].nunique() == 2                            # the retried case ran in a fresh worker


def interrupt_after_first_case(out, extra=(), env_extra=None):
    """Start ``revbench run --filter CHEAP`` into ``out`` (plus ``extra``), press Ctrl-C once a case is kept in
    the partial file; returns (exit status, stderr, the kept cases)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    run = subprocess.Popen([sys.executable, "-m", "revbench.cli", "run", "--filter", CHEAP, "--out", str(out),
                            "--no-report", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                           env=env, start_new_session=True)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and not (out / PARTIAL_NAME).exists():
            time.sleep(0.1)
        assert (out / PARTIAL_NAME).exists(), "no case finished"
        os.killpg(run.pid, signal.SIGINT)                        # Ctrl-C
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    return run.returncode, err.decode(), json.loads((out / PARTIAL_NAME).read_text())["cases"]


def test_an_interrupted_run_resumes_without_repeating_finished_cases(tmp_path, capsys):
    out = tmp_path / "out"
    code, err, kept = interrupt_after_first_case(out)
    assert code == 130 and "Traceback" not in err, err
    assert 1 <= len(kept) < 3 and f"{len(kept)} finished case" in err and "resume" in err, err
    assert not workers(b"--revbench-engine-name=local", str(out).encode())   # nothing left running

    rc, printed, err = run_cli(["run", "--filter", CHEAP, "--out", out, "--no-report"], capsys)
    assert rc == 0, err
    assert f"resuming: {len(kept)} of 3 cases" in printed
    assert sum(" done " in ln for ln in printed.splitlines()) == 3 - len(kept)    # only the others ran
    final = {b["name"]: b for b in json.loads((out / "benchmarks.json").read_text())["benchmarks"]}
    for case, entry in kept.items():                              # the very same measurements, not rerun
        assert final[entry["name"]] == entry
    assert len(final) == 3 and not (out / PARTIAL_NAME).exists()


def test_the_ray_engine_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)                 # import ray -> ImportError
    for argv in (["run", "--filter", CHEAP, "--out", tmp_path / "out", "--engine", "ray"],
                 ["reproduce", "repeat", "--engine", "ray", "--out", tmp_path / "rep"]):
        rc, out, err = run_cli(argv, capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and 'pip install "revbench[cluster]"' in lines[0], err
    assert not (tmp_path / "out" / "benchmarks.json").exists()


@pytest.mark.parametrize("argv, says", [
    (["run", "--gpus-per-case", "-1"], "--gpus-per-case: '-1' is not a number >= 0"),
    (["run", "--cpus-per-case", "0"], "--cpus-per-case: '0' is not a number > 0"),
    (["run", "--parallel", "0"], "--parallel"),
    (["reproduce", "lm", "--gpus-per-run", "nan"], "--gpus-per-run: 'nan'")])
def test_bad_engine_resources_are_one_line_and_exit_2(argv, says, capsys):
    rc, out, err = run_cli(argv, capsys)
    assert rc == 2 and says in err.strip().splitlines()[-1] and "Traceback" not in err, err


def test_the_local_pool_starts_no_job_once_the_budget_is_used():
    from revbench.tasks.cells import parse_limit
    from revbench.tasks.engine.tasks import Pool

    jobs = [("a", ("3",)), ("b", ("none",))]
    done = Pool("local", quiet=True).map(parse_limit, jobs, budget_minutes=60)
    assert {n: (r.ok, r.value, r.skipped) for n, r in done.items()} == {"a": (True, 3, False), "b": (True, None, False)}
    skipped = Pool("local", quiet=True).map(parse_limit, jobs, budget_minutes=0)
    assert all(r.skipped and not r.ok for r in skipped.values())
