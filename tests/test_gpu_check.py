"""`revbench gpu-check` on the CPU: its budget, skip reasons, calibration arithmetic, output limits, ordering, the
no-GPU path, NVML device mapping and readings through a fake pynvml, snapshot writing through a fake recorder, a
whole run of the case runner through a fake probe (its JSON passes `revbench report`), the import graph of a
stock GPU image (the project's optional packages blocked), and `train lm|nmt --device`."""
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from revbench.measure import nvml
from revbench.measure.harness import BenchConfig
from revbench.measure.live import LiveTensorMeter
from revbench.measure.meter import Meter
from revbench.measure.seq2seq_bench import Seq2SeqBenchConfig
from revbench.report.results import load_benchmarks
from revbench.tasks.gpu_check import calibration, writer
from revbench.tasks.gpu_check.budget import Budget
from revbench.tasks.gpu_check.cases import CheckCase, check_cases
from revbench.tasks.gpu_check.check import run_check
from revbench.tasks.gpu_check.snapshot import write_snapshot
from tests.helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
MiB = 2 ** 20
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- fakes
class Clock:
    """A clock that moves only when told (``tick`` seconds per reading, plus ``advance``)."""

    def __init__(self, tick=0.0):
        self.now, self.tick = 1000.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now

    def advance(self, s):
        self.now += s


class FixedMeter(Meter):
    """A meter that reports fixed figures (stands in for the CUDA allocator and NVML on the CPU)."""
    name = "fixed"

    def __init__(self, figures):
        super().__init__()
        self.figure_names = tuple(figures)
        self._figs = dict(figures)

    def _start(self):
        pass

    def _stop(self):
        return dict(self._figs)


class FakeProbe:
    """The GPU probe of run_check, on the CPU: NVML readings and allocator figures made up, the live-tensor meter
    real. ``per_case_s``: how far the check's clock moves per case (in cleanup)."""
    cfg_device = "cpu"

    def __init__(self, clock=None, per_case_s=0.0):
        self.clock, self.per_case_s, self.syncs, self.cleanups = clock, per_case_s, 0, 0

    def sync(self):
        self.syncs += 1

    def context(self):
        before = {"available": True, "device_used_bytes": 1000 * MiB, "process_used_bytes": 0, "process_listed": False}
        after = {"available": True, "device_used_bytes": 1502 * MiB, "process_used_bytes": 502 * MiB,
                 "process_listed": True, "other_processes": 0}
        return {**calibration.context_cost(before, after, 2 * MiB), "context_s": 1.5}

    def environment(self):
        return {"gpu_name": "Fake GPU", "cuda_device": "cuda:0", "gpu_memory_bytes": 80 * 2 ** 30,
                "torch_version": torch.__version__, "torch_cuda_version": "12.8", "cudnn_version": 90100,
                "nvml_driver_version": "570.00", "nvml_matched_by": "uuid", "commit": None, "cpu_count": 2}

    def startup(self):
        return {"first_matmul_s": 0.5, "second_matmul_s": 0.001, "first_cudnn_lstm_s": 2.0,
                "second_cudnn_lstm_s": 0.002}

    def calibrate(self):
        return calibration.calibrate(torch.device("cpu"), sizes=(MiB,), meters_for=lambda d: [
            FixedMeter({"cuda_peak_allocated_bytes": MiB, "nvml_peak_used_bytes": 2 * MiB}),
            LiveTensorMeter(device=d)], region=lambda n, d: calibration.hold_tensor(n, d, hold_s=0))

    def gradients(self):
        from revbench.tasks.gpu_check.gradients import gradient_check

        return gradient_check("cpu", cells=("revgru", "lstm"), T=4, B=2, size=4, layers=1,
                              available=["bptt", "reversible", "bptt-fused", "checkpoint", "compile-budget"])

    def cleanup(self):
        self.cleanups += 1
        if self.clock is not None:
            self.clock.advance(self.per_case_s)


class FakeRecorder:
    """torch.cuda.memory's history API: records calls, dumps a pickle of ``size`` bytes."""

    def __init__(self, sizes=(1000,)):
        self.sizes, self.calls = list(sizes), []

    def _record_memory_history(self, enabled="all", **kw):
        self.calls.append(("record", enabled, kw.get("context"), kw.get("max_entries")))

    def _dump_snapshot(self, filename):
        size = self.sizes.pop(0) if len(self.sizes) > 1 else self.sizes[0]
        Path(filename).write_bytes(pickle.dumps({"segments": [], "device_traces": [[]]}).ljust(size, b"\0"))
        self.calls.append(("dump", filename))


TINY = BenchConfig(cell="revlstm", hidden_size=8, emb_size=8, batch_size=2, seq_len=6, vocab_size=20)
TINY_S2S = Seq2SeqBenchConfig(context="emb+h:2", hidden_size=8, emb_size=8, batch_size=2, src_len=4, tgt_len=4,
                              vocab_size=20)


def tiny_cases():
    lstm = TINY.with_(cell="lstm", max_forget_bits=None)
    c = CheckCase
    return [c("lm", "bptt", TINY, {}, 2, 1.0, "tiny"), c("lm", "reversible", TINY, {}, 2, 1.0, "tiny"),
            c("lm", "bptt-fused", lstm, {}, 2, 1.0, "tiny"),
            c("snapshot", "bptt", TINY, {}, 1, 1.0, "snap"), c("snapshot", "reversible", TINY, {}, 1, 1.0, "snap"),
            c("lm", "bptt-fused", TINY, {}, 2, 1.0, "tiny"),                   # does not apply to revlstm
            c("lm", "compile-budget", lstm, {"budget": 0.5}, 2, 1.0, "tiny"),   # cannot run under the live meter
            c("seq2seq", "bptt", TINY_S2S, {}, 2, 1.0, "tiny"), c("seq2seq", "reversible", TINY_S2S, {}, 2, 1.0, "tiny"),
            c("lm", "checkpoint", TINY, {}, 2, 1.0, "tiny")]


# ------------------------------------------------------------------------------------------- budget
def test_budget_stops_starting_cases_it_cannot_finish():
    clock = Clock()
    b = Budget(100, reserve_s=20, clock=clock)
    assert b.left() == 80 and b.refusal(80) is None
    clock.advance(50)
    assert b.left() == 30
    why = b.refusal(31)
    assert why.startswith("budget: 30 s left of 100 s") and "about 31 s" in why
    assert b.refusal(30) is None
    b.finished(10, 20)                      # cases take twice their prior: later estimates double
    b.finished(10, 40)
    b.finished(10, 20)
    assert b.scale() == 2.0 and b.estimate(10) == 20 and b.refusal(16) is not None
    b.finished(1, 1000)                     # one outlier cannot push the scale past its clamp
    b.finished(1, 1000)
    assert b.scale() <= 10.0
    with pytest.raises(ValueError, match="positive"):
        Budget(0)


def test_full_run_stops_before_the_budget_and_says_what_it_skipped(tmp_path):
    clock = Clock()
    probe = FakeProbe(clock, per_case_s=10.0)
    cases = [CheckCase("lm", "bptt", TINY.with_(seq_len=T), {}, 1, 10.0, "tiny") for T in range(2, 12)]
    rc, summary = run_check(tmp_path / "out", 60.0, probe, cases, clock=clock)
    rows = summary["cases"]
    done = [r for r in rows if r["status"] == "done"]
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert rc == 0 and len(done) == 4 and len(skipped) == 6           # 60 s - 15 s reserve = 4 cases of 10 s
    assert all(r["reason"].startswith("budget: ") for r in skipped)
    assert rows.index(done[-1]) < rows.index(skipped[0])             # the budget skips the tail, in order
    assert summary["duration_s"] <= 60.0
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## Skipped" in readme and readme.count(": budget: ") == 6
    assert json.loads((tmp_path / "out" / "gpu-check.json").read_text())["cases"][-1]["status"] == "skipped"


# ------------------------------------------------------------------------------------------- whole run
def test_full_run_on_cpu_writes_valid_json_report_and_readme(tmp_path, capsys):
    out = tmp_path / "out"
    rec = FakeRecorder()
    logs = []
    rc, summary = run_check(out, 600.0, FakeProbe(), tiny_cases(), command="revbench gpu-check --out x",
                            snapshot_api=rec, log=logs.append)
    status = {r["case"]: (r["status"], r.get("reason", "")) for r in summary["cases"]}
    assert rc == 0, status
    assert status["bptt-fused-revlstm-L1-H8-E8-B2-T6-k3-V20-cpu-float32"][0] == "skipped"
    assert "live-tensor meter" in status["compile-budget[budget=0.5]-lstm-L1-H8-E8-B2-T6-knone-V20-cpu-float32"][1]
    assert sum(s == "done" for s, _ in status.values()) == 8
    # the benchmark JSON passes the record contract, and revbench report renders it
    df = load_benchmarks(out / "benchmarks.json")
    assert len(df) == 6 and set(df["method"]) == {"bptt", "reversible", "bptt-fused", "checkpoint"}
    assert (df["time_median_s"] > 0).all() and (df["rounds"] == 2).all()
    doc = json.loads((out / "benchmarks.json").read_text())
    names = [b["name"] for b in doc["benchmarks"]]
    assert "test_step[reversible-revlstm-L1-H8-E8-B2-T6-k3-V20-cpu-float32]" in names   # as revbench run names it
    rev = next(b["extra_info"] for b in doc["benchmarks"] if b["extra_info"]["method"] == "reversible"
               and b["extra_info"]["kind"] == "lm")
    bptt = next(b["extra_info"] for b in doc["benchmarks"] if b["extra_info"]["method"] == "bptt"
                and b["extra_info"]["kind"] == "lm")
    assert rev["allocator_saving"] == pytest.approx(bptt["peak_bytes"] / rev["peak_bytes"])
    assert doc["machine_info"]["gpu"]["gpu_name"] == "Fake GPU"
    rc2, _, err = run_cli(["report", out / "benchmarks.json", "-o", tmp_path / "again.html"], capsys)
    assert rc2 == 0, err
    page = (out / "report.html").read_text()
    assert "GPU check: meter calibration" in page and 'href="snapshot-bptt.pickle"' in page
    # snapshots written through the recorder, recording switched off after each
    assert {s["file"] for s in summary["snapshots"]} == {"snapshot-bptt.pickle", "snapshot-reversible.pickle"}
    assert [c for c in rec.calls if c[0] == "record"][-1][1] is None
    # the folder's limits; every step was synchronised around
    assert sorted(p.name for p in out.iterdir()) == sorted(writer.OWN_FILES)
    writer.check_limits(out)
    readme = (out / "README.md").read_text()
    for words in ("Fake GPU", "revbench gpu-check --out x", "## Meter calibration", "CUDA context", "## Skipped",
                  "pytorch.org/memory_viz", "first cuDNN nn.LSTM forward + backward: 2.000 s"):
        assert words in readme, words


def test_a_failing_case_is_reported_and_the_rest_still_run(tmp_path, monkeypatch):
    from revbench.tasks.gpu_check import runner

    real = runner.run_lm

    def flaky(case, ctx):
        if case.method == "reversible":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")
        return real(case, ctx)

    monkeypatch.setattr("revbench.tasks.gpu_check.check.run_lm", flaky)
    cases = tiny_cases()[:3]
    rc, summary = run_check(tmp_path / "out", 600.0, FakeProbe(), cases)
    rows = {r["case"].split("-")[0]: r for r in summary["cases"]}
    assert rc == 1 and rows["reversible"]["status"] == "failed"
    assert rows["reversible"]["reason"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert rows["bptt"]["status"] == "done" and len(load_benchmarks(tmp_path / "out" / "benchmarks.json")) == 2


def test_nothing_measured_still_writes_readme_and_summary(tmp_path):
    cases = [CheckCase("lm", "nosuch-method", TINY, {}, 1, 1.0, "x")]
    rc, summary = run_check(tmp_path / "out", 600.0, FakeProbe(), cases)
    assert rc == 0 and summary["files"] == ["README.md", "gpu-check.json"]
    assert "not registered" in summary["cases"][0]["reason"]


# ------------------------------------------------------------------------------------------- ordering
def test_cases_are_ordered_by_value_and_unique():
    cases = check_cases("cuda")
    ids = [c.key for c in cases]
    assert len(ids) == len(set(ids))
    first = [(c.kind, c.method, c.cfg.cell, c.cfg.seq_len) for c in cases[:10]]
    assert first[:4] == [("lm", "bptt", "revlstm", 70), ("lm", "reversible", "revlstm", 70),
                         ("lm", "bptt", "lstm", 70), ("lm", "bptt-fused", "lstm", 70)]
    assert first[4:6] == [("snapshot", "bptt", "revlstm", 70), ("snapshot", "reversible", "revlstm", 70)]
    assert {(m, cell) for _, m, cell, T in first[6:10]} == {("bptt", "lstm"), ("bptt-fused", "lstm"),
                                                             ("bptt", "revlstm"), ("reversible", "revlstm")}
    assert all(T == 1000 for *_, T in first[6:10])
    paper = cases[0].cfg
    assert (paper.hidden_size, paper.emb_size, paper.batch_size, paper.seq_len, paper.vocab_size) == (650, 650, 20, 70, 10000)
    long = cases[6].cfg
    assert (long.hidden_size, long.batch_size, long.seq_len, long.vocab_size) == (256, 16, 1000, 2000)
    methods_seen = {c.method for c in cases}
    assert {"bptt", "bptt-fused", "checkpoint", "gruslys", "reversible", "torch-checkpoint", "revolve",
            "compile-budget"} <= methods_seen
    assert all(c.cfg.device == "cuda" for c in cases)
    # every CUDA case of the default grid is in the check
    from revbench.measure.grids import get_grid
    grid_ids = {c.id for c in get_grid("default") if c.cfg.device.startswith("cuda")}
    assert grid_ids <= {c.id for c in cases}
    nmt = [c for c in cases if c.kind == "seq2seq" and c.cfg.hidden_size == 300]
    assert nmt and nmt[0].method == "bptt" and nmt[0].cfg.batch_size == 64


# ------------------------------------------------------------------------------------------- calibration
def test_calibration_arithmetic():
    rows = calibration.calibration_rows(256 * MiB, {
        "cuda_peak_allocated_bytes": 256 * MiB, "cuda_peak_reserved_bytes": 256 * MiB,
        "live_peak_bytes": 256 * MiB, "nvml_peak_used_bytes": 258 * MiB,
        "nvml_process_peak_used_bytes": None, "nvml_process_peak_used_bytes_reason": "host PIDs",
        "nvml_samples": 40})
    by = {r["figure"]: r for r in rows}
    assert set(by) == {"cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes", "live_peak_bytes",
                       "nvml_peak_used_bytes", "nvml_process_peak_used_bytes"}   # nvml_samples is not bytes
    assert by["cuda_peak_allocated_bytes"]["delta_bytes"] == 0 and by["live_peak_bytes"]["ratio"] == 1.0
    assert by["nvml_peak_used_bytes"]["delta_bytes"] == 2 * MiB
    assert by["nvml_peak_used_bytes"]["ratio"] == pytest.approx(258 / 256)
    assert by["nvml_process_peak_used_bytes"]["ratio"] is None
    assert by["nvml_process_peak_used_bytes"]["reason"] == "host PIDs"


def test_calibration_live_meter_sees_exactly_the_tensor_on_cpu():
    rows = calibration.calibrate(torch.device("cpu"), sizes=(MiB, 4 * MiB),
                                 meters_for=lambda d: [LiveTensorMeter(device=d)],
                                 region=lambda n, d: calibration.hold_tensor(n, d, hold_s=0))
    assert [(r["tensor_bytes"], r["seen_bytes"], r["delta_bytes"]) for r in rows] == [(MiB, MiB, 0),
                                                                                       (4 * MiB, 4 * MiB, 0)]


def test_context_cost_subtracts_what_the_allocator_holds():
    before = {"available": True, "device_used_bytes": 1000 * MiB, "process_used_bytes": 0, "process_listed": False}
    after = {"available": True, "device_used_bytes": 1520 * MiB, "process_used_bytes": 518 * MiB,
             "process_listed": True, "other_processes": 1}
    c = calibration.context_cost(before, after, 2 * MiB)
    assert c["context_device_bytes"] == 518 * MiB and c["context_process_bytes"] == 516 * MiB
    assert "1 other process" in c["note_other"] and "note" not in c
    c = calibration.context_cost({"available": False, "reason": "NVML unavailable: x"}, after, 2 * MiB)
    assert c["context_device_bytes"] is None and c["context_device_bytes_reason"] == "NVML unavailable: x"
    hidden = dict(after, process_listed=False, process_used_bytes=0)
    assert "host PIDs" in calibration.context_cost(before, hidden, 0)["context_process_bytes_reason"]
    early = dict(before, process_listed=True, process_used_bytes=300 * MiB)
    assert "lower bound" in calibration.context_cost(early, after, 0)["note"]


# ------------------------------------------------------------------------------------------- output folder
def test_output_limits(tmp_path):
    out = tmp_path / "out"
    writer.prepare_out_dir(out)
    for i in range(8):
        (out / f"f{i}").write_text("x")
    writer.check_limits(out)
    (out / "f8").write_text("x")
    with pytest.raises(writer.OutputError, match="9 files, more than 8"):
        writer.check_limits(out)
    (out / "f8").unlink()
    (out / "f0").write_bytes(b"\0" * writer.MAX_FILE_BYTES)
    with pytest.raises(writer.OutputError, match="f0 .* over the"):
        writer.check_limits(out)
    (out / "f0").unlink()
    (out / "sub").mkdir()
    with pytest.raises(writer.OutputError, match="folder"):
        writer.check_limits(out)
    with pytest.raises(writer.OutputError, match="over the"):
        writer.write_limited(tmp_path / "big.txt", "x" * writer.MAX_FILE_BYTES)
    assert not (tmp_path / "big.txt").exists()


def test_output_folder_must_hold_only_the_checks_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("an earlier check")
    (out / ".README.md.abcd1234.tmp").write_text("litter of a killed check")
    assert [p.name for p in writer.prepare_out_dir(out)] == [".README.md.abcd1234.tmp"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(writer.OutputError, match="holds other files \\(notes.txt\\)"):
        writer.prepare_out_dir(out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(writer.OutputError, match="is a file"):
        writer.prepare_out_dir(tmp_path / "file")


def test_snapshot_too_large_is_recorded_again_smaller_then_left_out(tmp_path):
    rec = FakeRecorder(sizes=[5000, 900])
    steps = []
    info = write_snapshot(lambda: steps.append(1), tmp_path / "snapshot-bptt.pickle", 1000, api=rec, max_entries=400)
    assert info["file"] == "snapshot-bptt.pickle" and info["bytes"] == 900 and len(steps) == 2
    assert info["max_entries"] == 400 and info["stacks"].startswith("none")      # the whole timeline, no stacks
    assert [c[1:] for c in rec.calls if c[0] == "record"] == [("all", "alloc", 400), (None, None, None),
                                                              ("all", None, 400), (None, None, None)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot-bptt.pickle"]      # no temporaries left
    info = write_snapshot(lambda: None, tmp_path / "snapshot-reversible.pickle", 10, api=FakeRecorder([50]))
    assert info["file"] is None and "without stacks" in info["reason"] and "over the 10-byte limit" in info["reason"]
    assert not (tmp_path / "snapshot-reversible.pickle").exists()


def test_snapshot_of_a_failing_step_writes_nothing_and_stops_recording(tmp_path):
    rec = FakeRecorder()

    def boom():
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError):
        write_snapshot(boom, tmp_path / "s.pickle", 10_000, api=rec)
    assert rec.calls[-1] == ("record", None, None, None) and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- NVML, with a fake pynvml
class FakeNvml:
    nvmlMemory_v2 = object()

    class NVMLError(Exception):
        pass

    def __init__(self, uuids=(), buses=(), pid=None):
        self.uuids, self.buses, self.pid = set(uuids), set(buses), pid

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.uuids:
            raise self.NVMLError("not found")
        return f"h:{uuid}"

    def nvmlDeviceGetHandleByPciBusId(self, bus):
        if bus not in self.buses:
            raise self.NVMLError("not found")
        return f"h:{bus}"

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"h:{i}"

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        assert version is self.nvmlMemory_v2
        return types.SimpleNamespace(used=3 * MiB, total=80 * 1024 * MiB)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [types.SimpleNamespace(pid=1, usedGpuMemory=7 * MiB)] + (
            [types.SimpleNamespace(pid=self.pid, usedGpuMemory=5 * MiB)] if self.pid else [])

    def nvmlSystemGetDriverVersion(self):
        return b"570.86.15"

    def nvmlSystemGetNVMLVersion(self):
        return "12.570.86.15"

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return 12080


def _props(monkeypatch, fake, **props):
    monkeypatch.setattr(nvml, "_import_pynvml", lambda: fake)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(**props))
    monkeypatch.setattr(torch.cuda, "_get_nvml_device_index", lambda i: (_ for _ in ()).throw(RuntimeError("x")))


@pytest.mark.parametrize("props,fake,expect", [
    ({"uuid": "0a1b-22"}, FakeNvml(uuids={"GPU-0a1b-22"}), ("h:GPU-0a1b-22", "uuid")),
    ({"uuid": "MIG-77"}, FakeNvml(uuids={"MIG-77"}), ("h:MIG-77", "uuid")),
    ({"uuid": "0a1b-22", "pci_bus_id": 0x3B, "pci_domain_id": 0, "pci_device_id": 0},
     FakeNvml(buses={"00000000:3B:00.0"}), ("h:00000000:3B:00.0", "pci_bus_id")),
])
def test_nvml_device_is_matched_by_uuid_then_pci_bus(monkeypatch, props, fake, expect):
    _props(monkeypatch, fake, **props)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert nvml.match_nvml_device(fake, 0) == expect


def test_nvml_device_falls_back_to_the_only_device_and_else_refuses(monkeypatch):
    fake = FakeNvml()
    _props(monkeypatch, fake, uuid="nope")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml.match_nvml_device(fake, 0) == ("h:0", "only device")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")       # renumbered: index 0 of NVML is another GPU
    with pytest.raises(LookupError, match="cannot match CUDA device 0"):
        nvml.match_nvml_device(fake, 0)


def test_read_nvml_reports_memory_processes_and_versions(monkeypatch):
    fake = FakeNvml(uuids={"GPU-ab"}, pid=os.getpid())
    _props(monkeypatch, fake, uuid="ab")
    r = nvml.read_nvml(0)
    assert r["available"] and r["matched_by"] == "uuid"
    assert (r["device_used_bytes"], r["process_used_bytes"], r["other_processes"]) == (3 * MiB, 5 * MiB, 1)
    assert (r["driver_version"], r["nvml_version"], r["cuda_driver_version"]) == ("570.86.15", "12.570.86.15", "12.8")
    fake.pid = None
    r = nvml.read_nvml(0)
    assert r["process_used_bytes"] == 0 and r["process_listed"] is False
    monkeypatch.setattr(nvml, "_import_pynvml", lambda: (_ for _ in ()).throw(ImportError("no pynvml")))
    assert nvml.read_nvml(0) == {"available": False,
                                 "reason": "pynvml is not installed (pip install nvidia-ml-py): no pynvml"}


# ------------------------------------------------------------------------------------------- command line
def test_no_gpu_is_one_line_exit_0_and_nothing_written(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc, out, err = run_cli(["gpu-check", "--out", tmp_path / "gpu", "--budget-minutes", "1"], capsys)
    assert rc == 0 and err == "" and len(out.splitlines()) == 1 and "no CUDA GPU" in out
    assert not (tmp_path / "gpu").exists()


@pytest.mark.parametrize("argv,words", [
    (["--budget-minutes", "0"], ["--budget-minutes", "0"]),
    (["--budget-minutes", "nan"], ["--budget-minutes", "nan"]),
    (["--device", "gpu7"], ["--device", "gpu7"]),
])
def test_gpu_check_bad_arguments_exit_2(argv, words, capsys):
    rc, out, err = run_cli(["gpu-check"] + argv, capsys)
    assert rc == 2 and all(w in err.splitlines()[-1] for w in words), err


def test_stock_gpu_image_imports_without_the_optional_packages(tmp_path):
    """What gpu-check touches works with checkpoint-schedules, tqdm, jinja2, hypothesis, sacremoses and sacrebleu
    blocked (a stock GPU image after `pip install --no-deps -e .`): a whole fake run writes valid JSON and revolve
    skips with its reason."""
    script = f"""
import sys
for m in ("checkpoint_schedules", "tqdm", "jinja2", "hypothesis", "sacremoses", "sacrebleu"):
    sys.modules[m] = None
sys.path.insert(0, {str(ROOT)!r})
import torch
torch.set_num_threads(1)
import revbench.cli.gpu_check
from revbench.cli import main
from revbench.report.results import load_benchmarks
from revbench.tasks.gpu_check.cases import CheckCase, check_cases
from revbench.tasks.gpu_check.check import run_check
from tests.test_gpu_check import FakeProbe, FakeRecorder, TINY
assert any(c.method == "revolve" for c in check_cases("cuda"))
cases = [CheckCase("lm", "bptt", TINY, {{}}, 1, 1.0, "t"), CheckCase("lm", "revolve", TINY, {{"budget": 0.5}}, 1, 1.0, "t"),
         CheckCase("snapshot", "reversible", TINY, {{}}, 1, 1.0, "t")]
rc, summary = run_check({str(tmp_path / 'out')!r}, 600.0, FakeProbe(), cases, snapshot_api=FakeRecorder())
assert rc == 0, summary["cases"]
assert "checkpoint-schedules" in summary["cases"][1]["reason"], summary["cases"][1]
assert len(load_benchmarks({str(tmp_path / 'out' / 'benchmarks.json')!r})) == 1
assert main(["report", {str(tmp_path / 'out' / 'benchmarks.json')!r}, "-o", {str(tmp_path / 'r.html')!r}]) == 0
blocked = [m for m in ("checkpoint_schedules", "tqdm", "jinja2", "hypothesis", "sacremoses", "sacrebleu")
           if sys.modules.get(m) is not None]
assert not blocked, blocked
print("OK")
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env,
                         cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stdout[-2000:] + res.stderr[-3000:]


# ------------------------------------------------------------------------------------------- gradients
def test_gradient_check_passes_exact_methods_and_catches_a_wrong_one(monkeypatch):
    from revbench import methods
    from revbench.tasks.gpu_check import gradients

    rows = FakeProbe().gradients()
    by = {(r["cell"], r["method"]): r for r in rows}
    assert by[("revgru", "reversible")]["ok"] is True and by[("revgru", "reversible")]["max_rel_err"] < 1e-9
    assert by[("lstm", "bptt-fused")]["ok"] is True and by[("lstm", "checkpoint")]["ok"] is True
    assert by[("lstm", "reversible")]["ok"] is None and "reversible cell" in by[("lstm", "reversible")]["reason"]
    assert by[("revgru", "compile-budget")]["ok"] is None and "tested on the CPU" in by[("revgru", "compile-budget")]["reason"]
    real_get = methods.get

    class Off:
        """checkpoint, with every gradient 1e-6 too large."""
        def __init__(self, inner):
            self.inner = inner

        def step(self, model, *a, **k):
            out = self.inner.step(model, *a, **k)
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.mul_(1 + 1e-6)
            return out

    monkeypatch.setattr(gradients.methods, "get",
                        lambda name, **o: Off(real_get(name, **o)) if name == "checkpoint" else real_get(name, **o))
    bad = gradients.gradient_check("cpu", cells=("lstm",), T=4, B=2, size=4, layers=1, available=["checkpoint"])
    assert bad[0]["ok"] is False and 5e-7 < bad[0]["max_rel_err"] < 2e-6


def test_wrong_gradients_make_the_check_fail_and_say_so(tmp_path):
    class Wrong(FakeProbe):
        def gradients(self):
            return [{"cell": "revlstm", "method": "reversible", "options": {}, "ok": False,
                     "reason": "ValueError: reversal did not rebuild the start state"}]

    logs = []
    rc, summary = run_check(tmp_path / "out", 600.0, Wrong(), [], log=logs.append)
    assert rc == 1 and any("WRONG gradients: reversible" in line for line in logs)
    assert "WRONG: reversible {} on revlstm: ValueError: reversal" in (tmp_path / "out" / "README.md").read_text()


def test_nvml_device_by_torch_index_map(monkeypatch):
    fake = FakeNvml()
    _props(monkeypatch, fake, uuid="nope")
    monkeypatch.setattr(torch.cuda, "_get_nvml_device_index", lambda i: 2)
    assert nvml.match_nvml_device(fake, 0) == ("h:2", "torch index map")


def test_gpu_environment_from_device_properties_and_nvml(monkeypatch):
    from revbench.tasks.gpu_check.environment import environment_lines, gpu_environment

    props = types.SimpleNamespace(name="NVIDIA H200", total_memory=141 * 2 ** 30, major=9, minor=0,
                                  multi_processor_count=132, uuid="ab-cd", pci_bus_id=0x1B, pci_domain_id=0,
                                  pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: props)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    reading = {"available": True, "matched_by": "uuid", "device_used_bytes": 5 * MiB, "device_total_bytes": 1,
               "process_used_bytes": 0, "other_processes": 0, "driver_version": "570.86.15",
               "nvml_version": "12.570.86.15", "cuda_driver_version": "12.8"}
    env = gpu_environment(torch.device("cuda", 0), nvml_reader=lambda i: reading)
    assert env["gpu_name"] == "NVIDIA H200" and env["gpu_compute_capability"] == "9.0"
    assert env["gpu_pci_bus_id"] == "00000000:1B:00.0" and env["cudnn_version"] == 90100
    assert env["nvml_driver_version"] == "570.86.15" and env["nvml_matched_by"] == "uuid"
    text = "\n".join(environment_lines(env))
    assert "NVIDIA H200 (cuda:0), 141.0 GiB, compute capability 9.0, 132 SMs" in text
    assert "driver 570.86.15 (CUDA 12.8), NVML 12.570.86.15; NVML device matched by uuid" in text
    env = gpu_environment(torch.device("cuda", 0), nvml_reader=lambda i: {"available": False, "reason": "no NVML"})
    assert "NVML: unavailable (no NVML)" in "\n".join(environment_lines(env))


def test_cuda_probe_reads_nvml_before_and_after_the_first_tensor():
    from revbench.tasks.gpu_check.check import CudaProbe

    events = []
    readings = iter([{"available": True, "device_used_bytes": 100 * MiB, "process_used_bytes": 0,
                      "process_listed": False},
                     {"available": True, "device_used_bytes": 622 * MiB, "process_used_bytes": 520 * MiB,
                      "process_listed": True, "other_processes": 0}])

    class FakeCuda:
        def set_device(self, d):
            events.append("set_device")

        def synchronize(self, d):
            events.append("sync")

        def memory_reserved(self, d):
            return 2 * MiB

        def empty_cache(self):
            events.append("empty_cache")

    def reader(index):
        events.append("nvml")
        return next(readings)

    probe = CudaProbe(torch.device("cpu"), cuda=FakeCuda(), nvml_reader=reader)
    ctx = probe.context()
    assert events == ["nvml", "set_device", "sync", "nvml"]            # the first reading precedes the context
    assert ctx["context_device_bytes"] == 520 * MiB and ctx["context_process_bytes"] == 518 * MiB
    assert ctx["context_s"] >= 0 and ctx["allocator_reserved_bytes"] == 2 * MiB
    probe.cleanup()
    assert events[-1] == "empty_cache"


def test_device_problem_names_what_is_missing(monkeypatch):
    from revbench.measure.cuda import device_problem

    assert device_problem("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "torch sees no CUDA device" in device_problem("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_problem("cuda:0") is None and device_problem("cuda") is None
    assert device_problem("cuda:3") == "device 'cuda:3' does not exist: 1 CUDA device(s) visible (cuda:0..cuda:0)"


def test_gpu_check_command_end_to_end_with_a_fake_gpu(tmp_path, capsys, monkeypatch):
    """`revbench gpu-check` as on a GPU machine, the probe and the case list replaced by the CPU fakes."""
    import revbench.tasks.gpu_check.cases as cases_mod
    import revbench.tasks.gpu_check.check as check_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(check_mod, "CudaProbe", lambda device: FakeProbe())
    monkeypatch.setattr(cases_mod, "check_cases", lambda device: tiny_cases()[:2])
    out = tmp_path / "gpu"
    argv = ["gpu-check", "--out", str(out), "--budget-minutes", "5", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["revbench"] + argv)               # what the README quotes as the command
    rc, stdout, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert stdout.splitlines()[-1].startswith("revbench gpu-check: 2 case(s) measured, 0 skipped, 0 failed in ")
    assert len(load_benchmarks(out / "benchmarks.json")) == 2
    assert f"Command: `revbench gpu-check --out {out} --budget-minutes 5 --quiet`" in (out / "README.md").read_text()
    (out / "mine.txt").write_text("x")                                  # a folder holding other files: refused
    rc, stdout, err = run_cli(["gpu-check", "--out", out, "--quiet"], capsys)
    assert rc == 2 and "holds other files (mine.txt)" in err and len(err.strip().splitlines()) == 1
    rc, stdout, err = run_cli(["gpu-check", "--device", "cuda:2", "--out", tmp_path / "x"], capsys)
    assert rc == 2 and "'cuda:2' does not exist" in err and not (tmp_path / "x").exists()
    rc, stdout, err = run_cli(["gpu-check", "--device", "cpu", "--out", tmp_path / "x"], capsys)
    assert rc == 2 and "must be cuda or cuda:N" in err


def test_a_report_that_cannot_be_built_leaves_the_json_and_says_so(tmp_path, monkeypatch):
    import revbench.report.page as page

    def broken(*a, **k):
        raise RuntimeError("seaborn exploded")

    monkeypatch.setattr(page, "build_report_html", broken)
    rc, summary = run_check(tmp_path / "out", 600.0, FakeProbe(), tiny_cases()[:1])
    assert rc == 1 and summary["report_error"] == "RuntimeError: seaborn exploded"
    assert sorted(summary["files"]) == ["README.md", "benchmarks.json", "gpu-check.json"]
    assert "NOT WRITTEN: RuntimeError: seaborn exploded" in (tmp_path / "out" / "README.md").read_text()


def test_the_budget_counts_from_the_commands_start(tmp_path):
    clock = Clock()
    started = clock.now - 50.0                      # the imports took 50 s of a 60 s budget
    cases = [CheckCase("lm", "bptt", TINY, {}, 1, 1.0, "tiny")]
    rc, summary = run_check(tmp_path / "out", 60.0, FakeProbe(), cases, clock=clock, started_at=started)
    assert summary["cases"][0]["status"] == "skipped" and summary["cases"][0]["reason"].startswith("budget: 0 s left")


def test_a_failing_calibration_is_said_and_the_cases_still_run(tmp_path):
    class NoNvml(FakeProbe):
        def calibrate(self):
            raise RuntimeError("NVML: driver/library version mismatch")

    logs = []
    rc, summary = run_check(tmp_path / "out", 600.0, NoNvml(), tiny_cases()[:1], log=logs.append)
    assert rc == 1 and summary["calibration"] == [] and summary["cases"][0]["status"] == "done"
    assert "gpu-check: calibration failed: RuntimeError: NVML: driver/library version mismatch" in logs
    assert "- calibration failed: RuntimeError: NVML" in (tmp_path / "out" / "README.md").read_text()
