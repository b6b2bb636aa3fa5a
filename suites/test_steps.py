"""One benchmark per (method, configuration): memory with every meter (untimed), then the step timed by
pytest-benchmark; the flat record goes into benchmark.extra_info, with its cost against the fused nn.LSTM/nn.GRU
step of the same sizes (revbench.measure.fused_reference)."""
import pytest
import torch

from revbench import methods
from revbench.measure.fused_reference import add_fused_ratios, benchmark_median
from revbench.measure.harness import Workload, add_allocator_saving, measure_method


def test_step(benchmark, case, bptt_peaks, fused_refs, measure_options):
    ok, why = methods.supports(case.method, case.cfg.cell, kind="lm")
    if not ok:
        pytest.skip(why)
    if case.cfg.device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("GPU benchmark: no CUDA device on this machine")
    method = methods.get(case.method, **case.options)
    wl = Workload(case.cfg)
    try:
        record = measure_method(method, case.cfg, wl, **measure_options)   # memory first, outside the timed rounds
    except methods.MethodUnavailable as exc:            # e.g. compile-budget under the live-tensor meter
        pytest.skip(f"{case.method}: {exc}")
    bptt_peaks.remember(record)
    add_allocator_saving(record, bptt_peaks.bptt_peak(case.cfg))
    benchmark.group = case.cfg.config_id
    ref = fused_refs.reference(case.cfg, rounds=case.rounds)   # once per configuration: same timer and rounds
    benchmark.pedantic(wl.step, args=(method,), rounds=case.rounds, warmup_rounds=1, iterations=1)
    add_fused_ratios(record, ref, benchmark_median(benchmark))
    benchmark.extra_info.update(record)
