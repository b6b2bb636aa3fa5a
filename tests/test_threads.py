"""Thread pinning for timings (issue 14): ``pin_threads``, the suites' ``--revbench-threads N`` and the
``torch_num_threads`` / ``cpu_model`` every record carries."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from revbench.measure.environment import cpu_model, environment_info, pin_threads, restore_threads
from revbench.report.validate import value_problem

ROOT = Path(__file__).resolve().parents[1]


def test_pin_threads_sets_and_restore_gives_back():
    before = torch.get_num_threads()
    try:
        got = pin_threads(1)
        assert torch.get_num_threads() == 1 and got["num_threads"] == before
        assert isinstance(got["interop_pinned"], bool) and isinstance(got["interop_reason"], str)
        assert environment_info("cpu")["torch_num_threads"] == 1
        pin_threads(2)
        assert environment_info("cpu")["torch_num_threads"] == torch.get_num_threads() == 2
    finally:
        restore_threads({"num_threads": before})
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", None])
def test_pin_threads_refuses_what_is_not_a_thread_count(bad):
    with pytest.raises(ValueError, match="integer >= 1"):
        pin_threads(bad)


def test_cpu_model_names_the_processor(monkeypatch, tmp_path):
    name = cpu_model()
    assert name is None or (isinstance(name, str) and name == name.strip() and name)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000 @ 1.00GHz\n")
    real_open = open

    def fake_open(path, *args, **kwargs):
        return real_open(info if path == "/proc/cpuinfo" else path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", fake_open)
    assert cpu_model() == "Test CPU 9000 @ 1.00GHz"
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no /proc")))
    monkeypatch.setattr("platform.processor", lambda: "x86_64")
    assert cpu_model() == "x86_64"


@pytest.mark.parametrize("key,value,ok", [
    ("torch_num_threads", 1, True), ("torch_num_threads", 0, False), ("torch_num_threads", 2.0, False),
    ("torch_num_threads", True, False), ("torch_num_threads", None, True), ("fused_torch_num_threads", 0, False),
    ("cpu_model", "AMD EPYC", True), ("cpu_model", 7, False),
    ("profiler_peak_bytes", 0, True), ("profiler_gradient_bytes", -1, False), ("profiler_other_bytes", 1.5, False),
    ("heap_peak_bytes", 10, True), ("heap_peak_bytes", -10, False), ("heap_peak_bytes", None, True),
    ("buffer_bits_reference", 12.5, True), ("buffer_bits_reference", -1, False),
    ("buffer_bits_reference", float("nan"), False), ("heap_peak_bytes_reason", "no mallinfo2", True),
    ("cuda_peak_allocated_bytes_reason", 3, False),
])
def test_the_contract_of_this_rounds_keys(key, value, ok):
    assert (value_problem(key, value) is None) == ok, value_problem(key, value)


def _pytest(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_the_suite_option_pins_the_session_and_refuses_bad_counts():
    res = _pytest("--co", "--revbench-threads", "2", "--revbench-filter", "bptt-fused-lstm-L1-H128-E128-B16-T35")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "revbench: torch threads 2" in res.stdout
    for bad in ("0", "two"):
        res = _pytest("--co", "--revbench-threads", bad)
        assert res.returncode == 4
        assert "must be a whole number of threads >= 1" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_every_record_of_a_suite_run_names_its_threads_and_cpu(tmp_path):
    """A real suite run with 2 threads (about 30 s on an idle 2-core machine, so marked slow; the in-process
    suite run of tests/test_fused_reference.py checks the same keys with 1 thread)."""
    out = tmp_path / "b.json"
    res = _pytest("--revbench-threads", "2", "--revbench-profiler", "peak", "--revbench-filter",
                  "bptt-fused-lstm-L1-H128-E128-B16-T35", f"--benchmark-json={out}", "-q")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    records = [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]]
    assert records
    for rec in records:
        assert rec["torch_num_threads"] == 2 and rec["fused_torch_num_threads"] == 2
        assert rec["cpu_model"] == cpu_model()
        assert rec["fused_time_ratio"] is not None
        assert rec["heap_peak_bytes"] is not None or rec["heap_peak_bytes_reason"]
        assert rec["profiler_peak_bytes"] > 0
