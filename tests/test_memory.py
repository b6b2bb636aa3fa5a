"""Each meter of revbench.measure.memory sees a known allocation of a known size.

Sizes: float32 tensors, so ``n`` elements are ``4 * n`` bytes. The live-tensor meter counts storage bytes
exactly; the only extra bytes in the autograd examples are the two 4-byte scalars that any
``loss.backward()`` creates (the loss itself and its gradient seed ``ones_like(loss)``).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import types

import pytest
import torch

from revbench.measure import memory, nvml, rss
from revbench.measure.cuda import CudaAllocatorMeter
from revbench.measure.environment import environment_info
from revbench.measure.live import LiveTensorMeter
from revbench.measure.memory import default_meters, measure, measuring
from revbench.measure.meter import Meter
from revbench.measure.nvml import NvmlMeter
from revbench.measure.rss import RSSMeter
from revbench.measure.saved import SavedTensorsMeter

MiB = 2**20
F32 = 4  # bytes per float32 element
SCALARS = 2 * F32  # the loss and its gradient seed in a .backward() call

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (this machine has none)")


def _live(fn, params=None, device=None) -> tuple[dict, LiveTensorMeter]:
    m = LiveTensorMeter(params, device=device)
    with m:
        fn()
    return m.figures(), m


# ----------------------------------------------------------------------------------------------------------
# LiveTensorMeter
# ----------------------------------------------------------------------------------------------------------
def test_live_peak_is_max_not_sum():
    def region():
        a = torch.empty(2 * MiB)  # 8 MiB
        del a
        b = torch.zeros(MiB)  # 4 MiB, may reuse a's memory
        region.keep = b

    figs, m = _live(region)
    assert figs["live_peak_bytes"] == 8 * MiB
    assert m.current_bytes == 4 * MiB  # b is still alive after the region

    def both():
        a = torch.empty(2 * MiB)
        b = torch.zeros(MiB)
        del a, b

    figs, m = _live(both)
    assert figs["live_peak_bytes"] == 12 * MiB
    assert m.current_bytes == 0


def test_live_factory_functions_count():
    def region():
        keep = [torch.empty(1000), torch.zeros(10, 10), torch.ones(7, dtype=torch.float64),
                torch.full((3,), 2.0), torch.arange(5), torch.randn(11)]
        region.keep = keep

    figs, _ = _live(region)
    assert figs["live_peak_bytes"] == 1000 * 4 + 100 * 4 + 7 * 8 + 3 * 4 + 5 * 8 + 11 * 4


def test_live_views_do_not_double_count():
    def region():
        b = torch.zeros(MiB)
        views = [b.view(-1, 2), b[::2], b.view(1024, 1024).t(), b.unsqueeze(0), b.detach(), b[10:20]]
        b.add_(1.0)  # in place on a tracked storage: nothing new
        views[0].mul_(2.0)
        region.keep = (b, views)

    figs, _ = _live(region)
    assert figs["live_peak_bytes"] == 4 * MiB


def test_live_preexisting_tensor_freed_inside_is_not_counted_and_peak_not_negative():
    pre = torch.ones(MiB)
    holder = [pre]
    del pre

    def region():
        holder.clear()  # frees 4 MiB allocated before the region

    figs, m = _live(region)
    assert figs["live_peak_bytes"] == 0
    assert m.current_bytes == 0

    holder.append(torch.ones(MiB))

    def region2():
        holder.clear()
        region2.keep = torch.ones(1024)

    figs, _ = _live(region2)
    assert figs["live_peak_bytes"] == 1024 * F32


def test_live_views_and_inplace_on_preexisting_tensors_count_nothing():
    pre = torch.zeros(MiB)
    grad_like = torch.zeros(MiB)

    def region():
        v = pre.view(2, -1)[1]
        v.add_(3.0)
        grad_like.add_(pre)  # in-place accumulation into an existing buffer
        grad_like.mul_(0.5)

    figs, _ = _live(region)
    assert figs["live_peak_bytes"] == 0


def test_live_out_argument_and_resize_count_growth():
    a = torch.ones(1000)
    out = torch.empty(0)

    figs, _ = _live(lambda: torch.add(a, a, out=out))  # a pre-existing empty buffer grown to 1000 floats
    assert figs["live_peak_bytes"] == 1000 * F32
    figs, _ = _live(lambda: torch.add(a, a, out=out))  # already the right size: nothing new
    assert figs["live_peak_bytes"] == 0

    def region():
        t = torch.empty(0)
        t.resize_(2048)  # aten.resize_ on a storage created in the region
        t.untyped_storage().resize_(0)  # UntypedStorage.resize_ is not an aten op: patched while measuring
        region.keep = t

    figs, m = _live(region)
    assert figs["live_peak_bytes"] == 2048 * F32
    assert m.current_bytes == 0


def test_live_autograd_step_and_grad_split():
    n = MiB // 4  # x is 1 MiB
    x = torch.randn(n, requires_grad=True)

    def step():
        y = x * 2
        y.sum().backward()

    # first step: x.grad is allocated inside the region (AccumulateGrad adopts MulBackward's output)
    figs, m = _live(step, params=[x])
    assert figs["live_peak_bytes"] == 2 * n * F32 + SCALARS  # y and x.grad alive together
    assert figs["live_peak_grad_bytes"] == n * F32
    assert figs["live_peak_param_bytes"] == 0
    assert figs["live_peak_other_bytes"] == n * F32 + SCALARS
    assert m.current_bytes == n * F32  # x.grad outlives the region
    grad_ptr = x.grad.data_ptr()

    # second step: the incoming gradient is a temporary added in place into the existing x.grad
    figs, m = _live(step, params=[x])
    assert x.grad.data_ptr() == grad_ptr
    assert figs["live_peak_bytes"] == 2 * n * F32 + SCALARS
    assert figs["live_peak_grad_bytes"] == 0
    assert figs["live_peak_other_bytes"] == figs["live_peak_bytes"]
    assert m.current_bytes == 0

    # in-place accumulation into an existing .grad allocates nothing
    figs, _ = _live(lambda: x.grad.add_(1.0), params=[x])
    assert figs["live_peak_bytes"] == 0


def test_live_split_needs_params():
    figs, _ = _live(lambda: torch.ones(10))
    assert figs["live_peak_bytes"] == 40
    for fig in ("live_peak_param_bytes", "live_peak_grad_bytes", "live_peak_other_bytes"):
        assert figs[fig] is None
        assert "params" in figs[f"{fig}_reason"]


def test_live_device_filter_ignores_other_devices():
    figs, _ = _live(lambda: torch.ones(1000), device="meta")
    assert figs["live_peak_bytes"] == 0


def test_live_meter_leaves_no_trace_after_region():
    resize_before = torch.UntypedStorage.resize_
    depth = torch._C._len_torch_dispatch_stack()
    m = LiveTensorMeter()
    with pytest.raises(ZeroDivisionError):
        measure(lambda: (torch.ones(3), 1 / 0), [m])
    assert torch._C._len_torch_dispatch_stack() == depth
    assert torch.UntypedStorage.resize_ is resize_before
    with m:  # reusable after a failed region
        t = torch.ones(3)
    assert m.figures()["live_peak_bytes"] == 12
    del t  # a storage dying after the region does not call back into the meter
    assert m.peak_bytes == 12


# ----------------------------------------------------------------------------------------------------------
# SavedTensorsMeter
# ----------------------------------------------------------------------------------------------------------
def _saved(fn, params=None, exclude=None) -> int:
    m = SavedTensorsMeter(params, exclude)
    with m:
        fn()
    return m.figures()["saved_bytes"]


def test_saved_bytes_exact():
    n = 1000
    x = torch.randn(n, requires_grad=True)
    # mul by a Python scalar saves no tensor; sum saves only sizes
    assert _saved(lambda: (x * 2).sum().backward(), params=[x]) == 0
    # exp saves its result (n floats); the input x is a parameter and excluded
    assert _saved(lambda: (x * 2).exp().sum().backward(), params=[x]) == n * F32
    # x * x saves x twice: one storage
    assert _saved(lambda: (x * x).sum().backward()) == n * F32
    assert _saved(lambda: (x * x).sum().backward(), params=[x]) == 0


def test_saved_view_brings_whole_storage():
    w = torch.randn(100, requires_grad=True)
    xs = torch.randn(8, 100)
    # w * xs[3] saves xs[3], a view of all of xs
    assert _saved(lambda: (w * xs[3]).sum().backward(), params=[w]) == 8 * 100 * F32
    assert _saved(lambda: (w * xs[3]).sum().backward(), params=[w], exclude=[xs]) == 0


def test_saved_hooks_keep_gradients_and_free_graphs():
    w = torch.randn(50, requires_grad=True)
    (w.exp() * w).sum().backward()
    expected = w.grad.clone()
    w.grad = None
    with SavedTensorsMeter([w]):
        (w.exp() * w).sum().backward()
    assert torch.equal(w.grad, expected)

    # a graph dropped without backward frees its saved output (no reference cycle through the hook)
    import weakref

    freed = []
    with SavedTensorsMeter():
        y = w.exp()
        loss = y.sum()
    ref = weakref.ref(y.untyped_storage(), lambda _: freed.append(True))
    del y, loss
    assert freed == [True] and ref() is None


# ----------------------------------------------------------------------------------------------------------
# RSSMeter
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not RSSMeter().available()[0], reason=f"RSS meter unavailable: {RSSMeter().available()[1]}")
def test_rss_sees_64_mib():
    def region():
        t = torch.ones(16 * MiB)  # 64 MiB, every page touched
        del t

    m = RSSMeter()
    with m:
        region()
    delta = m.figures()["rss_peak_delta_bytes"]
    # the kernel's RSS counters are batched per CPU (a few hundred KiB); the interpreter adds a little
    assert 60 * MiB <= delta <= 80 * MiB, delta

    with m:
        pass
    assert m.figures()["rss_peak_delta_bytes"] < 16 * MiB  # the high-water mark was reset


def test_rss_unavailable_has_reason(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    figs = measure(lambda: None, [RSSMeter()])
    assert figs["rss_peak_delta_bytes"] is None
    assert "Linux" in figs["rss_peak_delta_bytes_reason"]

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(rss, "_CLEAR_REFS", "/nonexistent-dir/clear_refs")
    figs = measure(lambda: None, [RSSMeter()])
    assert figs["rss_peak_delta_bytes"] is None
    assert "high-water mark" in figs["rss_peak_delta_bytes_reason"]


# ----------------------------------------------------------------------------------------------------------
# CUDA allocator and NVML
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA path")
def test_cuda_meters_unavailable_on_cpu():
    figs = measure(lambda: torch.ones(10), [CudaAllocatorMeter(), NvmlMeter()])
    for fig in ("cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes", "nvml_peak_used_bytes",
                "nvml_process_peak_used_bytes", "nvml_samples"):
        assert figs[fig] is None
        assert figs[f"{fig}_reason"] == "no CUDA device"


def test_cuda_meters_reject_cpu_device():
    with pytest.raises(ValueError, match="cuda device"):
        CudaAllocatorMeter("cpu")
    with pytest.raises(ValueError, match="cuda device"):
        NvmlMeter("cpu")
    with pytest.raises(ValueError, match="interval_s"):
        NvmlMeter(interval_s=0)


@pytest.mark.gpu
@needs_cuda
def test_cuda_allocator_sees_8_mib():
    dev = torch.device("cuda", torch.cuda.current_device())
    torch.ones(1, device=dev)  # context and allocator initialised outside the region

    def region():
        a = torch.empty(2 * MiB, device=dev)  # 8 MiB
        del a
        b = torch.empty(MiB, device=dev)  # 4 MiB
        del b

    figs = measure(region, [CudaAllocatorMeter(dev), LiveTensorMeter(device=dev)])
    assert figs["cuda_peak_allocated_bytes"] == 8 * MiB
    assert figs["cuda_peak_reserved_bytes"] >= 0
    assert figs["live_peak_bytes"] == 8 * MiB


@pytest.mark.gpu
@needs_cuda
def test_nvml_sees_256_mib():
    ok, reason = NvmlMeter().available()
    if not ok:
        pytest.skip(f"NVML unavailable: {reason}")
    dev = torch.device("cuda", torch.cuda.current_device())
    torch.ones(1, device=dev)
    torch.cuda.empty_cache()
    m = NvmlMeter(dev)

    def region():
        t = torch.ones(64 * MiB, device=dev)  # 256 MiB, from the driver since the cache is empty
        torch.cuda.synchronize()
        time.sleep(0.05)  # let the sampler see it
        del t
        torch.cuda.empty_cache()

    figs = measure(region, [m])
    assert figs["nvml_samples"] >= 2
    assert figs["nvml_peak_used_bytes"] >= 250 * MiB
    if figs["nvml_process_peak_used_bytes"] is not None:
        assert figs["nvml_process_peak_used_bytes"] >= 250 * MiB


class _FakeNvml:
    """Just enough of pynvml for NvmlMeter's sampling logic, with memory set by the test."""

    nvmlMemory_v2 = object()

    class NVMLError(Exception):
        pass

    def __init__(self, uuid: str, pid: int):
        self.uuid = uuid
        self.pid = pid
        self.used = 1000 * MiB
        self.proc_used = 500 * MiB
        self.calls = 0
        self.lock = threading.Lock()

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid != self.uuid:
            raise self.NVMLError(f"no device {uuid}")
        return "handle"

    def nvmlDeviceGetHandleByPciBusId(self, bus):
        raise self.NVMLError("not supported")

    def nvmlDeviceGetHandleByIndex(self, i):
        raise self.NVMLError("not by index")

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        assert handle == "handle" and version is self.nvmlMemory_v2
        with self.lock:
            self.calls += 1
            return types.SimpleNamespace(used=self.used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [types.SimpleNamespace(pid=self.pid + 1, usedGpuMemory=None),
                types.SimpleNamespace(pid=self.pid, usedGpuMemory=self.proc_used)]


def _fake_cuda(monkeypatch, fake, uuid="0a1b2c3d-0000-1111-2222-333344445555"):
    monkeypatch.setattr(nvml, "_import_pynvml", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid=uuid))
    monkeypatch.setattr(torch.cuda, "_get_nvml_device_index", lambda i: (_ for _ in ()).throw(RuntimeError("x")))


def _wait_samples(fake, k=3):
    start = fake.calls
    deadline = time.monotonic() + 30
    while fake.calls < start + k and time.monotonic() < deadline:
        time.sleep(0.001)


def test_nvml_sampling_logic_with_fake_nvml(monkeypatch):
    # CUDA device 0's UUID maps to NVML by UUID (torch prints it without NVML's "GPU-" prefix)
    fake = _FakeNvml("GPU-0a1b2c3d-0000-1111-2222-333344445555", os.getpid())
    _fake_cuda(monkeypatch, fake)
    m = NvmlMeter("cuda:0")
    assert m.available() == (True, "")

    def region():
        _wait_samples(fake)
        fake.used += 100 * MiB
        fake.proc_used += 60 * MiB
        _wait_samples(fake)
        fake.used -= 100 * MiB
        fake.proc_used -= 60 * MiB
        _wait_samples(fake)

    figs = measure(region, [m])
    assert figs["nvml_peak_used_bytes"] == 100 * MiB
    assert figs["nvml_process_peak_used_bytes"] == 60 * MiB
    assert figs["nvml_samples"] >= 9

    # this process not in NVML's list (a container's PID namespace): that figure alone is unavailable
    fake.pid = -5
    figs = measure(lambda: _wait_samples(fake), [NvmlMeter("cuda:0")])
    assert figs["nvml_peak_used_bytes"] == 0
    assert figs["nvml_process_peak_used_bytes"] is None
    assert "not among NVML's compute processes" in figs["nvml_process_peak_used_bytes_reason"]


def test_nvml_unmatched_device_is_unavailable(monkeypatch):
    fake = _FakeNvml("GPU-ffffffff-0000-1111-2222-333344445555", os.getpid())
    _fake_cuda(monkeypatch, fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    figs = measure(lambda: None, [NvmlMeter("cuda:0")])
    assert figs["nvml_samples"] is None
    assert "cannot match CUDA device 0" in figs["nvml_samples_reason"]


def test_cuda_allocator_arithmetic_with_fake_cuda(monkeypatch):
    stats = {"alloc": 100, "reserved": 1000, "max_alloc": 100, "max_reserved": 1000}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: stats.update(max_alloc=stats["alloc"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: stats["alloc"])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: stats["reserved"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: stats["max_alloc"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda d: stats["max_reserved"])

    def region():
        stats.update(max_alloc=100 + 8 * MiB, max_reserved=1000 + 20 * MiB)

    figs = measure(region, [CudaAllocatorMeter("cuda:0")])
    assert figs == {"cuda_peak_allocated_bytes": 8 * MiB, "cuda_peak_reserved_bytes": 20 * MiB}


# ----------------------------------------------------------------------------------------------------------
# measure(), default_meters(), the protocol
# ----------------------------------------------------------------------------------------------------------
def test_live_meter_does_not_count_other_meters_bookkeeping():
    n = 10_000
    w = torch.randn(n, requires_grad=True)
    w.grad = torch.zeros(n)

    def step():
        (w.exp() * w).sum().backward()

    alone = measure(step, [LiveTensorMeter([w])])
    together = measure(step, default_meters("cpu", params=[w]))
    assert together["live_peak_bytes"] == alone["live_peak_bytes"]
    # exp result (saved), the product, then the backward temporaries; all exact multiples of n floats + scalars
    assert (alone["live_peak_bytes"] - SCALARS) % (n * F32) == 0
    assert together["saved_bytes"] == n * F32  # exp's result; w is a parameter


def test_default_meters_per_device():
    assert [m.name for m in default_meters("cpu")] == ["nvml", "cuda_allocator", "rss", "saved_tensors",
                                                       "live_tensors"]
    cuda = default_meters("cuda:0", params=[torch.zeros(1)])
    assert [m.name for m in cuda] == ["nvml", "cuda_allocator", "saved_tensors", "live_tensors"]
    with pytest.raises(ValueError, match="unsupported device"):
        default_meters("meta")
    with pytest.raises(ValueError, match="unknown device"):
        default_meters("gpu0")


def test_measure_merges_all_figures_and_nests_live_innermost():
    meters = default_meters("cpu", params=[torch.zeros(1)])
    ordered = memory._check_meters(list(reversed(meters)))
    assert ordered[-1].name == "live_tensors"
    with measuring(meters) as figs:
        keep = torch.ones(MiB)
    names = {f for m in meters for f in m.figure_names}
    assert names <= set(figs)
    for k, v in figs.items():
        if k.endswith("_reason"):
            assert isinstance(v, str) and v
        else:
            assert v is None or isinstance(v, int), (k, v)
            assert v is not None or f"{k}_reason" in figs
    assert figs["live_peak_bytes"] == 4 * MiB
    del keep


def test_protocol_errors():
    m = LiveTensorMeter()
    with pytest.raises(RuntimeError, match="not measured a region yet"):
        m.figures()
    with pytest.raises(RuntimeError, match="without being started"):
        m.stop()
    with pytest.raises(ValueError, match="both"):
        measure(lambda: None, [LiveTensorMeter(), LiveTensorMeter()])
    with pytest.raises(ValueError, match="twice"):
        measure(lambda: None, [m, m])
    with pytest.raises(TypeError, match="not a meter"):
        measure(lambda: None, [object()])
    with pytest.raises(TypeError, match="params must be tensors"):
        LiveTensorMeter(params=[1, 2])
    assert isinstance(m, Meter)


# ----------------------------------------------------------------------------------------------------------
# environment_info
# ----------------------------------------------------------------------------------------------------------
def test_environment_info(monkeypatch, tmp_path):
    info = environment_info("cpu")
    assert set(info) == {"torch_version", "python_version", "platform", "device_name", "cpu_model", "cpu_count",
                         "torch_num_threads", "commit", "hostname"}
    assert info["torch_num_threads"] == torch.get_num_threads() >= 1
    assert info["cpu_model"] == info["device_name"]
    assert info["torch_version"] == torch.__version__
    assert info["cpu_count"] == os.cpu_count()
    assert isinstance(info["device_name"], str) and info["device_name"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:
        assert environment_info("cpu")["commit"] == head
        assert re.fullmatch(r"[0-9a-f]{40}", head)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert environment_info("cpu")["commit"] is None


def test_environment_info_bad_device():
    if not HAS_CUDA:
        with pytest.raises(ValueError, match="no CUDA device"):
            environment_info("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        environment_info("gpu0")


def test_peak_figures_prefers_the_cuda_allocator():
    from revbench.measure.memory import peak_figures

    cpu = measure(lambda: torch.ones(MiB), default_meters("cpu"))
    assert peak_figures(cpu) == {"peak_bytes": 4 * MiB, "peak_bytes_meter": "live_tensors"}
    both = {"cuda_peak_allocated_bytes": 512, "live_peak_bytes": 500}
    assert peak_figures(both) == {"peak_bytes": 512, "peak_bytes_meter": "cuda_allocator"}
    none = peak_figures({"cuda_peak_allocated_bytes": None, "cuda_peak_allocated_bytes_reason": "no CUDA device"})
    assert none["peak_bytes"] is None and "no CUDA device" in none["peak_bytes_reason"]


def test_saved_bytes_is_a_peak_not_a_sum():
    """Two graphs backpropagated one after the other: saved bytes of the first are freed before the second."""
    n = 1 << 16
    meter = SavedTensorsMeter()

    def two_graphs():
        for _ in range(2):
            x = torch.ones(n, requires_grad=True)
            torch.exp(x).sum().backward()       # exp saves its output: n * 4 bytes, freed by backward

    figs = measure(two_graphs, [meter])
    assert figs["saved_bytes"] == n * 4
