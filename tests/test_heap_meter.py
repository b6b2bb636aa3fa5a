"""The heap meter (revbench.measure.heap): calibrated on known allocations, above the live-tensor peak where
autograd keeps graph nodes, near-deterministic, None with the reason where glibc's mallinfo2 is missing."""
from __future__ import annotations

import sys

import pytest
import torch

from revbench.measure import heap
from revbench.measure.heap import HeapMeter, heap_in_use
from revbench.measure.live import LiveTensorMeter
from revbench.measure.memory import measure

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(heap._libc()[0] is None, reason=f"no mallinfo2 here: {heap._libc()[2]}")]

MiB = 2 ** 20


def test_a_64_mib_tensor_allocated_and_freed_inside_the_step_is_counted_once():
    def step():
        t = torch.empty(16 * MiB)           # 64 MiB of float32: above glibc's mmap threshold
        del t

    for _ in range(2):
        got = measure(step, [HeapMeter()])["heap_peak_bytes"]
        # the tensor's bytes plus malloc's chunk header and alignment, one page at most, and the few small
        # objects of one op (TensorImpl, StorageImpl)
        assert 64 * MiB <= got <= 64 * MiB + 64 * 1024, got


def test_autograd_nodes_are_heap_the_live_tensor_meter_cannot_see():
    """2,000 ``y * 1.5`` ops keep 2,000 MulBackward0 nodes (each with its saved scalar) but no tensor but the
    last: the live-tensor meter sees 32 bytes, the heap about 1 KB per node."""
    x = torch.ones(4, requires_grad=True)
    n = 2000
    keep = []

    def chain():
        y = x
        for _ in range(n):
            y = y * 1.5
        keep.append(y)

    heap_bytes = measure(chain, [HeapMeter()])["heap_peak_bytes"]
    keep.clear()
    live = measure(chain, [LiveTensorMeter()])["live_peak_bytes"]
    keep.clear()
    assert live <= 64
    per_node = (heap_bytes - live) / n
    assert 200 <= per_node <= 4000, per_node          # measured: about 1,080 bytes per node on glibc 2.36
    assert heap_in_use() is not None


def test_lstm_bptt_heap_peak_exceeds_the_live_tensor_peak():
    """The issue's measurement at a moderate T: tensors plus autograd's graph are more than the tensors."""
    from revbench import methods
    from revbench.measure.harness import BenchConfig, Workload, measure_method

    cfg = BenchConfig(cell="lstm", hidden_size=32, emb_size=32, batch_size=4, seq_len=100, vocab_size=50,
                      max_forget_bits=None)
    rec = measure_method(methods.get("bptt"), cfg, Workload(cfg), profiler="off")
    assert rec["heap_peak_bytes"] > rec["peak_bytes"] == rec["live_peak_bytes"] > 0
    # autograd keeps several nodes per step and layer: at least 20 KB over 100 steps beside the tensors
    assert rec["heap_peak_bytes"] - rec["peak_bytes"] > 20_000


def test_repeated_identical_steps_agree_closely():
    from revbench import methods
    from revbench.measure.harness import BenchConfig, Workload

    cfg = BenchConfig(cell="revlstm", hidden_size=16, emb_size=16, batch_size=4, seq_len=20, vocab_size=50)
    wl, method = Workload(cfg), methods.get("bptt")
    wl.warm_up(method)
    got = [measure(lambda: wl.step(method), [HeapMeter()])["heap_peak_bytes"] for _ in range(3)]
    assert min(got) > 0
    assert (max(got) - min(got)) <= 0.02 * max(got), got      # a few KB of malloc's per-thread cache


def test_the_meter_reads_at_op_boundaries_and_stops_cleanly_on_an_error():
    m = HeapMeter()
    with pytest.raises(ZeroDivisionError):
        with m:
            torch.ones(8).add_(1)
            1 / 0
    assert m.figures()["heap_peak_bytes"] >= 0 and m.readings >= 2
    # the mode is gone: no reading after the region
    before = m.readings
    torch.ones(8).add_(1)
    assert m.readings == before


def test_without_mallinfo2_the_figure_is_none_with_the_reason(monkeypatch):
    monkeypatch.setattr(heap, "_libc", lambda: (None, None, "glibc 2.31 has no mallinfo2 (added in 2.33)"))
    figs = measure(lambda: torch.ones(4), [HeapMeter()])
    assert figs == {"heap_peak_bytes": None, "heap_peak_bytes_reason": "glibc 2.31 has no mallinfo2 (added in 2.33)"}


def test_not_linux_is_a_reason(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    info, trim, reason = heap._libc.__wrapped__()
    assert info is None and trim is None and "needs Linux" in reason and "darwin" in reason
