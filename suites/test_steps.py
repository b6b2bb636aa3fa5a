"""One benchmark per (method, configuration): memory with every meter (untimed), then the step timed by
pytest-benchmark; the flat record goes into benchmark.extra_info."""
import pytest
import torch

from revbench import methods
from revbench.measure.harness import Workload, add_allocator_saving, measure_method


def test_step(benchmark, case, bptt_peaks):
    ok, why = methods.supports(case.method, case.cfg.cell, kind="lm")
    if not ok:
        pytest.skip(why)
    if case.cfg.device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("GPU benchmark: no CUDA device on this machine")
    method = methods.get(case.method, **case.options)
    wl = Workload(case.cfg)
    record = measure_method(method, case.cfg, wl)       # memory first, outside the timed rounds
    bptt_peaks.remember(record)
    add_allocator_saving(record, bptt_peaks.bptt_peak(case.cfg))
    benchmark.group = case.cfg.config_id
    benchmark.pedantic(wl.step, args=(method,), rounds=case.rounds, warmup_rounds=1, iterations=1)
    benchmark.extra_info.update(record)
