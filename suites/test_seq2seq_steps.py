"""One benchmark per (method, encoder-decoder configuration): memory with every meter (untimed), the two sides'
held bytes, then the training step timed by pytest-benchmark; the record (kind "seq2seq") goes into
benchmark.extra_info."""
import pytest
import torch

from revbench import methods
from revbench.measure.seq2seq_bench import Seq2SeqWorkload, add_side_savings, measure_seq2seq
from revbench.measure.harness import add_allocator_saving


def test_seq2seq_step(benchmark, s2s_case, s2s_bptt, measure_options):
    case = s2s_case
    ok, why = methods.supports(case.method, case.cfg.cell, kind="seq2seq")
    if not ok:
        pytest.skip(why)
    if case.cfg.device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("GPU benchmark: no CUDA device on this machine")
    method = methods.get(case.method, **case.options)
    wl = Seq2SeqWorkload(case.cfg)
    record = measure_seq2seq(method, case.cfg, wl, **measure_options)   # memory first, outside the timed rounds
    s2s_bptt.remember(record)
    bptt = s2s_bptt.bptt(case.cfg)
    add_allocator_saving(record, bptt.get("peak_bytes"))
    add_side_savings(record, bptt)
    benchmark.group = case.cfg.config_id
    benchmark.pedantic(wl.step, args=(method,), rounds=case.rounds, warmup_rounds=1, iterations=1)
    benchmark.extra_info.update(record)
