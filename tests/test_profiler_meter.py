"""torch's own meter (revbench.measure.profiler_meter): the profiler's peak on known allocations and beside
``peak_bytes`` on real steps, its category split adding up to its peak, repeated steps giving the same
figures, and None with the reason where the profiler cannot run."""
from __future__ import annotations

import pytest
import torch

from revbench import methods
from revbench.measure import memory
from revbench.measure.harness import BenchConfig, Workload, measure_method
from revbench.measure.live import LiveTensorMeter
from revbench.measure.memory import apart_meters, measure, measure_apart
from revbench.measure.profiler_meter import CATEGORY_FIGURES, PROFILER_FIGURES, ProfilerMeter
from revbench.report.validate import value_problem

pytestmark = pytest.mark.usefixtures("one_thread")

MiB = 2 ** 20
TINY = BenchConfig(cell="revlstm", hidden_size=16, emb_size=16, batch_size=4, seq_len=12, vocab_size=50)


def test_the_peak_of_known_allocations():
    def step():
        a = torch.ones(MiB)          # 4 MiB
        b = a * 2                    # 4 MiB more: the peak
        del a, b
        torch.ones(MiB // 2)         # 2 MiB after both died

    for split in (False, True):
        figs = measure(step, [ProfilerMeter(split=split)])
        # plus the 0-dim tensors the Python scalars 1 and 2 are wrapped into (created outside the dispatcher)
        assert 8 * MiB <= figs["profiler_peak_bytes"] <= 8 * MiB + 64


def test_a_tensor_freed_inside_the_step_that_existed_before_is_not_counted():
    """The baseline convention of peak_bytes: storages alive before the region never count."""
    old = [torch.ones(MiB)]

    def step():
        old.clear()                  # frees 4 MiB that existed before
        keep = torch.ones(MiB // 4)  # 1 MiB: the step's own peak
        del keep

    figs = measure(step, [ProfilerMeter()])
    assert figs["profiler_peak_bytes"] == MiB


@pytest.mark.parametrize("name", ["bptt", "reversible", "checkpoint"])
def test_it_agrees_with_the_live_tensor_peak_on_a_training_step(name):
    method, wl = methods.get(name), Workload(TINY)
    wl.warm_up(method)
    live = measure(lambda: wl.step(method), [LiveTensorMeter(list(wl.model.parameters()))])["live_peak_bytes"]
    prof = measure(lambda: wl.step(method), [ProfilerMeter()])["profiler_peak_bytes"]
    # the profiler also sees what no dispatch mode sees: Python scalars wrapped into 0-dim tensors and saved
    # for backward (8 bytes each), a kernel's scratch buffers inside one op
    assert live <= prof <= live + max(2048, live // 1000), (live, prof)


def test_the_split_adds_up_to_the_peak_and_repeated_steps_give_the_same_figures():
    method, wl = methods.get("bptt"), Workload(TINY.with_(seq_len=4))
    wl.warm_up(method)
    peak_only = measure(lambda: wl.step(method), [ProfilerMeter()])
    runs = [measure(lambda: wl.step(method), [ProfilerMeter(split=True)]) for _ in range(2)]
    assert runs[0] == runs[1]                       # a second step (grads accumulate in place) changes nothing
    split = runs[0]
    assert split["profiler_peak_bytes"] == peak_only["profiler_peak_bytes"] > 0
    assert sum(split[f] for f in CATEGORY_FIGURES) == split["profiler_peak_bytes"]
    assert all(split[f] >= 0 for f in CATEGORY_FIGURES)
    assert all(peak_only[f] is None and "category split not computed" in peak_only[f"{f}_reason"]
               for f in CATEGORY_FIGURES)


def test_repeated_metered_steps_are_byte_identical():
    """Why a second, identical step may carry the profiler: after warm-up a step's figures do not move."""
    cfg = TINY.with_(seq_len=8)
    wl, method = Workload(cfg), methods.get("reversible")
    a = measure_method(method, cfg, wl, profiler="peak")
    b = measure_method(method, cfg, wl, profiler="peak")
    for key in ("peak_bytes", "live_peak_grad_bytes", "live_peak_other_bytes", "saved_bytes", "profiler_peak_bytes"):
        assert a[key] == b[key], key


def test_another_profiler_running_is_a_reason():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        figs = measure(lambda: torch.ones(8), [ProfilerMeter()])
    assert set(figs) == set(PROFILER_FIGURES) | {f"{f}_reason" for f in PROFILER_FIGURES}
    assert figs["profiler_peak_bytes"] is None and "already running" in figs["profiler_peak_bytes_reason"]
    # and the meter works again once it is gone
    assert measure(lambda: torch.ones(MiB), [ProfilerMeter()])["profiler_peak_bytes"] == 4 * MiB


def test_auto_splits_small_steps_only(monkeypatch):
    small = measure_apart(lambda: torch.ones(8) * 2, apart_meters("cpu", "auto"))
    assert 64 <= small["profiler_peak_bytes"] <= 96 and small["profiler_other_bytes"] is not None
    monkeypatch.setattr(memory, "AUTO_SPLIT_MAX_EVENTS", 1)
    big = measure_apart(lambda: torch.ones(8) * 2, apart_meters("cpu", "auto"))
    assert big["profiler_peak_bytes"] == small["profiler_peak_bytes"] and big["profiler_other_bytes"] is None
    assert "more than 1 allocations and frees" in big["profiler_other_bytes_reason"]
    steps = []
    off = measure_apart(lambda: steps.append(torch.ones(8)), apart_meters("cpu", "off", heap=False))
    assert off["profiler_peak_bytes"] is None and "switched off" in off["profiler_peak_bytes_reason"]
    assert off["heap_peak_bytes"] is None and "--revbench-heap off" in off["heap_peak_bytes_reason"]
    assert steps == []                              # no step is spent on meters that do not run
    with pytest.raises(ValueError, match="profiler must be one of"):
        apart_meters("cpu", "sometimes")
    with pytest.raises(TypeError, match="split must be True or False"):
        ProfilerMeter(split="yes")


def test_every_record_carries_both_new_meters_within_the_contract():
    rec = measure_method(methods.get("bptt"), TINY, Workload(TINY))
    for key in PROFILER_FIGURES + ("heap_peak_bytes", "cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes",
                                   "nvml_peak_used_bytes", "nvml_process_peak_used_bytes"):
        assert key in rec
        assert rec[key] is not None or rec[f"{key}_reason"], key
    assert rec["profiler_peak_bytes"] > 0
    if not torch.cuda.is_available():
        assert rec["cuda_peak_allocated_bytes"] is None
        assert rec["cuda_peak_allocated_bytes_reason"] == "no CUDA device: this run is on cpu"
    problems = {k: value_problem(k, v) for k, v in rec.items() if value_problem(k, v)}
    assert not problems
