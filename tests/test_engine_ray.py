"""`--engine ray` on an embedded Ray with 2 worker processes on the CPU: a small grid gives the local engine's
memory figures (`revbench compare --no-time`: no regression, nothing missing), a worker killed in the middle of a
case is retried and the run completes, an interrupted run resumes without repeating its finished cases, and a tiny
reproduction grid runs through Ray with the local engine's results. Skipped without Ray
(`pip install "revbench[cluster]"`)."""
import json
import time

import pytest

from revbench.report.results import load_benchmarks
from tests.helpers import run_cli
from tests.test_engine_local import CHEAP, interrupt_after_first_case, kill_in_case, workers

ONE = "bptt-s2s-gru-all"            # one case: a worker's whole life, twice

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "revbench[cluster]")')


@pytest.fixture(scope="module")
def cluster():
    """One embedded Ray (2 CPUs) for the module; runs in this process use it as it is, others join it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_a_grid_through_ray_gives_the_local_memory_figures(cluster, tmp_path, capsys):
    local, remote = tmp_path / "local", tmp_path / "ray"
    rc, _, err = run_cli(["run", "--filter", CHEAP, "--out", local, "--no-report", "--quiet"], capsys)
    assert rc == 0, err
    rc, printed, err = run_cli(["run", "--filter", CHEAP, "--out", remote, "--no-report", "--engine", "ray",
                                "--parallel", "2"], capsys)
    assert rc == 0, err
    assert "engine ray" in printed.splitlines()[0] and "ETA" in printed
    df = load_benchmarks(remote / "benchmarks.json")
    assert len(df) == 3 and set(df["engine"]) == {"ray"} and df["worker"].nunique() == 3   # a fresh worker each
    assert (df["torch_num_threads"] == 1).all()
    rc, cmp_out, err = run_cli(["compare", local / "benchmarks.json", remote / "benchmarks.json", "--no-time"], capsys)
    assert rc == 0 and "no regression" in cmp_out and "3 benchmarks compared" in cmp_out, cmp_out + err
    exact = ["peak_bytes", "live_peak_bytes", "saved_bytes", "enc_held_bytes", "dec_held_bytes"]
    base = load_benchmarks(local / "benchmarks.json").set_index("name")[exact]
    assert base.equals(df.set_index("name")[exact].loc[base.index])        # byte for byte


def test_a_ray_worker_killed_in_a_case_is_retried(cluster, tmp_path, capsys):
    out = tmp_path / "out"
    killer = kill_in_case(1, needles=(b"--revbench-engine-name=ray",))
    rc, printed, err = run_cli(["run", "--filter", ONE, "--out", out, "--no-report", "--engine", "ray"], capsys)
    killer.join(5)
    assert killer.killed, "no worker was killed in a case"
    assert rc == 0, err
    assert f"retry {killer.killed}" in printed and "signal 9" in printed
    df = load_benchmarks(out / "benchmarks.json")
    assert len(df) == 1 and df["name"][0].endswith(f"[{killer.killed}]")


def test_an_interrupted_ray_run_resumes_without_repeating_finished_cases(cluster, tmp_path, capsys):
    out = tmp_path / "out"
    code, err, kept = interrupt_after_first_case(out, ("--engine", "ray", "--parallel", "1"),
                                                 {"RAY_ADDRESS": cluster})              # joins the module's Ray
    assert code == 130 and "Traceback" not in err and "resume" in err, err
    end = time.monotonic() + 20
    while workers(b"--revbench-engine-name=ray") and time.monotonic() < end:   # cancelled with the driver
        time.sleep(0.2)
    assert not workers(b"--revbench-engine-name=ray")

    rc, printed, err = run_cli(["run", "--filter", CHEAP, "--out", out, "--no-report", "--engine", "ray"], capsys)
    assert rc == 0, err
    assert f"resuming: {len(kept)} of 3 cases" in printed
    final = {b["name"]: b for b in json.loads((out / "benchmarks.json").read_text())["benchmarks"]}
    assert len(final) == 3 and all(final[e["name"]] == e for e in kept.values())


def test_a_tiny_reproduction_grid_through_ray(cluster, tmp_path, capsys):
    argv = ["reproduce", "repeat", "--lengths", "3,4", "--models", "gru,revgru", "--steps", "4",
            "--eval-sequences", "16", "--hidden-size", "8", "--emb-size", "8"]
    rc, _, err = run_cli(argv + ["--out", tmp_path / "local", "--quiet"], capsys)
    assert rc == 0, err
    rc, printed, err = run_cli(argv + ["--out", tmp_path / "ray", "--engine", "ray"], capsys)
    assert rc == 0, err
    assert "[4/4] done 4" in printed and "ETA" in printed
    import pandas as pd

    cols = ["model", "seq_len", "accuracy", "final_train_loss"]
    a, b = (pd.read_csv(tmp_path / d / "repeat.csv")[cols] for d in ("local", "ray"))
    assert len(b) == 4 and a.equals(b)                                   # the same seeds, the same results


def test_no_task_starts_once_the_budget_is_used(cluster, tmp_path):
    """--budget-minutes holds with --engine ray too: no run starts after it (they come back skipped, not failed)."""
    from revbench.tasks.engine.tasks import Pool
    from revbench.tasks.lm.grid import LMRun, run_lm_grid
    from revbench.tasks.nmt.grid import GridPoint, reproduce

    from revbench.tasks.cells import parse_limit

    pool = Pool("ray", parallel=2, address=cluster, quiet=True)
    jobs = [("a", ("3",)), ("b", ("5",))]
    assert {n: r.value for n, r in pool.map(parse_limit, jobs, budget_minutes=60).items()} == {"a": 3, "b": 5}
    res = pool.map(parse_limit, jobs, budget_minutes=0)
    assert all(r.skipped and not r.ok and r.value is None for r in res.values())
    s = reproduce("tiny", tmp_path / "nmt", points=[GridPoint("gru", "all")], overrides={"epochs": 1},
                  budget_minutes=0, pool=pool, log=lambda m: None)
    assert s["points"][0]["status"] == "not started: the time budget of 0 min was used"
    assert not (tmp_path / "nmt" / "runs" / "gru-all" / "checkpoint.pt").exists()
    st = run_lm_grid([LMRun("synthetic", "gru")], "tiny", tmp_path / "lm", budget_minutes=0, pool=pool,
                     say=lambda *a: None)
    assert st == [{"run": "synthetic-gru-L1", "status": "skipped (budget)"}]
