"""One case of the check -> one pytest-benchmark entry (or a snapshot file), measured as the suites measure it.

Memory: ``revbench.measure.harness.measure_method`` / ``seq2seq_bench.measure_seq2seq`` (a warm-up step, then one
step under every meter of ``default_meters``). Time: one warm-up round, then ``rounds`` rounds of one step, each
``sync(); t0 = clock(); step(); sync()`` (``torch.cuda.synchronize`` on a GPU: the host clock only stops once the
GPU has finished), median as pytest-benchmark reports it. Savings against bptt use the bptt record of the same
configuration when the check measured it (never a measurement the budget did not allow); LM records carry their
cost against the fused nn.LSTM / nn.GRU step (``revbench.measure.fused_reference``).
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from revbench import methods
from revbench.measure.fused_reference import FusedReferenceCache, add_fused_ratios
from revbench.measure.harness import BaselineCache, Workload, add_allocator_saving, measure_method
from revbench.measure.seq2seq_bench import Seq2SeqWorkload, add_side_savings, measure_seq2seq

TIMER = "time.perf_counter between torch.cuda.synchronize() calls"
SUITES = {"lm": ("suites/test_steps.py", "test_step"), "seq2seq": ("suites/test_seq2seq_steps.py", "test_seq2seq_step")}


class CaseSkipped(Exception):
    """The case does not apply or cannot run here; the message says why."""


@dataclass
class RunContext:
    """What every case of one check shares: ``sync`` (waits for the device), ``clock`` (seconds, for step
    times), the bptt records and fused references measured so far, the snapshot API and the folder snapshots go to."""
    sync: Callable[[], None]
    clock: Callable[[], float] = time.perf_counter
    out_dir: Any = None
    snapshot_api: Any = None
    file_limit_bytes: int = 16 * 2 ** 20
    timer: str = TIMER
    lm_bptt: BaselineCache = field(default_factory=lambda: BaselineCache(measure=lambda cfg: {}))
    s2s_bptt: BaselineCache = field(default_factory=lambda: BaselineCache(measure=lambda cfg: {}))
    fused: FusedReferenceCache = field(default_factory=FusedReferenceCache)


def time_steps(step: Callable[[], Any], rounds: int, sync: Callable[[], None], clock: Callable[[], float],
               warmup_rounds: int = 1) -> list[float]:
    """Seconds of each of ``rounds`` calls of ``step`` after ``warmup_rounds`` untimed ones, each between two
    ``sync()`` calls."""
    for _ in range(warmup_rounds):
        step()
    sync()
    times = []
    for _ in range(rounds):
        sync()
        t0 = clock()
        step()
        sync()
        times.append(clock() - t0)
    return times


def preflight(case) -> str | None:
    """Why ``case`` cannot run (None when it can), decided without building anything."""
    if case.method not in methods.available():
        return f"method {case.method!r} is not registered here"
    kind = "seq2seq" if case.kind == "seq2seq" else "lm"
    try:
        ok, why = methods.supports(case.method, case.cfg.cell, kind=kind)
    except ImportError as exc:               # a method whose package is missing (revolve: checkpoint-schedules)
        return f"method {case.method!r} needs a package that is not installed: {exc}"
    if not ok:
        return why
    if case.method == "compile-budget" and case.kind != "snapshot":
        # measure_method always runs the live-tensor meter (a TorchDispatchMode), under which torch.compile
        # cannot run: the method says so with MethodUnavailable after compiling its warm-up graph
        return ("compile-budget cannot run under the live-tensor meter (a TorchDispatchMode), which "
                "revbench.measure.harness.measure_method always uses; measured by the CUDA allocator only once the "
                "harness can leave that meter out")
    return None


def _method(case):
    try:
        return methods.get(case.method, **case.options)
    except ImportError as exc:
        raise CaseSkipped(f"method {case.method!r} needs a package that is not installed: {exc}") from None


def run_lm(case, ctx: RunContext) -> tuple[dict, list[float]]:
    method = _method(case)
    wl = Workload(case.cfg)
    try:
        record = measure_method(method, case.cfg, wl)
    except methods.MethodUnavailable as exc:
        raise CaseSkipped(f"{case.method}: {exc}") from None
    ctx.lm_bptt.remember(record)
    add_allocator_saving(record, ctx.lm_bptt.bptt_peak(case.cfg))
    ref = ctx.fused.reference(case.cfg, rounds=case.rounds)
    times = time_steps(lambda: wl.step(method), case.rounds, ctx.sync, ctx.clock)
    add_fused_ratios(record, ref, statistics.median(times))
    return record, times


def run_seq2seq(case, ctx: RunContext) -> tuple[dict, list[float]]:
    method = _method(case)
    wl = Seq2SeqWorkload(case.cfg)
    try:
        record = measure_seq2seq(method, case.cfg, wl)
    except methods.MethodUnavailable as exc:
        raise CaseSkipped(f"{case.method}: {exc}") from None
    ctx.s2s_bptt.remember(record)
    bptt = ctx.s2s_bptt.bptt(case.cfg)
    add_allocator_saving(record, bptt.get("peak_bytes"))
    add_side_savings(record, bptt or None)
    times = time_steps(lambda: wl.step(method), case.rounds, ctx.sync, ctx.clock)
    return record, times


def run_snapshot(case, ctx: RunContext) -> dict:
    """Warm the method up on the case's workload, then record one step's allocator history into
    ``snapshot-<method>.pickle``."""
    from revbench.tasks.gpu_check.snapshot import write_snapshot

    method = _method(case)
    wl = Workload(case.cfg)
    wl.warm_up(method)
    ctx.sync()
    name = f"snapshot-{case.method}.pickle"
    info = write_snapshot(lambda: wl.step(method), ctx.out_dir / name, ctx.file_limit_bytes, api=ctx.snapshot_api)
    return {"case": case.id, "method": case.method, "config_id": case.cfg.config_id, **info}


def benchmark_entry(case, record: dict, times: list[float], timer: str = TIMER) -> dict:
    """The pytest-benchmark entry of a measured case: named as ``revbench run`` names the same case (so
    ``revbench compare`` matches them), stats computed by pytest-benchmark's own ``Stats``."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for t in times:
        stats.update(t)
    module, test = SUITES[case.kind]
    record = {**record, "time_timer": timer}
    return {
        "group": case.cfg.config_id, "name": f"{test}[{case.id}]", "fullname": f"{module}::{test}[{case.id}]",
        "params": {"case": case.id}, "param": case.id, "extra_info": record,
        "options": {"disable_gc": False, "timer": timer, "min_rounds": case.rounds, "max_time": None,
                    "min_time": None, "warmup": 1},
        "stats": {**stats.as_dict(), "data": list(times), "iterations": 1},
    }


def machine_info(env: dict) -> dict:
    """pytest-benchmark's ``machine_info`` for the document, with the GPU environment under ``gpu``."""
    return {"node": platform.node(), "processor": platform.processor(), "machine": platform.machine(),
            "python_implementation": platform.python_implementation(), "python_version": platform.python_version(),
            "release": platform.release(), "system": platform.system(),
            "cpu": {"brand_raw": env.get("host_device_name"), "count": env.get("cpu_count")}, "gpu": env}
