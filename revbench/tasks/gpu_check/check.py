"""The whole GPU check: :func:`run_check`.

Order: the CUDA context's cost (NVML before and after the first tensor), the environment, start-up costs, the
meters' calibration, every method's float64 gradients against bptt's on the device (``gradients``), then the cases of ``revbench.tasks.gpu_check.cases`` most valuable first while the budget
allows (``budget.Budget``), then the files (``writer``). The hardware is reached only through a probe
(:class:`CudaProbe`) and the run context's ``sync``; tests pass fakes and run every other line on the CPU.
"""
from __future__ import annotations

import datetime as _dt
import gc
import time
from pathlib import Path
from typing import Any, Callable

from revbench.tasks.gpu_check import calibration, writer
from revbench.tasks.gpu_check.budget import Budget
from revbench.tasks.gpu_check.runner import (CaseSkipped, RunContext, benchmark_entry, machine_info, preflight,
                                             run_lm, run_seq2seq, run_snapshot)
from revbench.tasks.gpu_check.texts import readme_text, report_sections

RESERVE_S = 30.0        # kept for writing the files (the report's figures take a few seconds)


class CudaProbe:
    """The GPU itself: context cost, environment, start-up costs, calibration, and freeing cached memory."""

    def __init__(self, device, cuda=None, nvml_reader=None):
        import torch

        from revbench.measure.nvml import read_nvml

        self.torch = torch
        self.cuda = torch.cuda if cuda is None else cuda           # injectable: tests pass a fake
        self.read_nvml = read_nvml if nvml_reader is None else nvml_reader
        self.device = torch.device(device)
        self.cfg_device = "cuda"            # configurations use the current device (set in context())

    def sync(self) -> None:
        self.cuda.synchronize(self.device)

    def context(self) -> dict[str, Any]:
        """NVML before anything allocates on the device, then the first tensor (the context), then NVML again."""
        before = self.read_nvml(self.device.index)
        t0 = time.perf_counter()
        self.cuda.set_device(self.device)   # CUDA 12 creates the context here (or at the first tensor)
        self.torch.empty(1, device=self.device)
        self.sync()
        seconds = time.perf_counter() - t0
        after = self.read_nvml(self.device.index)
        out = calibration.context_cost(before, after, self.cuda.memory_reserved(self.device))
        out["context_s"] = seconds
        return out

    def environment(self) -> dict[str, Any]:
        from revbench.tasks.gpu_check.environment import gpu_environment

        return gpu_environment(self.device)

    def startup(self) -> dict[str, float]:
        return calibration.startup_costs(self.device)

    def calibrate(self) -> list[dict]:
        return calibration.calibrate(self.device)

    def gradients(self) -> list[dict]:
        from revbench.tasks.gpu_check.gradients import gradient_check

        return gradient_check(self.device)

    def cleanup(self) -> None:
        gc.collect()
        self.cuda.empty_cache()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def run_case(case, ctx: RunContext, summary: dict) -> dict | None:
    """Run one case; returns its benchmark entry (None for a snapshot). CaseSkipped propagates."""
    if case.kind == "snapshot":
        summary["snapshots"].append(run_snapshot(case, ctx))
        return None
    record, times = (run_lm if case.kind == "lm" else run_seq2seq)(case, ctx)
    return benchmark_entry(case, record, times, ctx.timer)


def run_check(out: Path, budget_s: float, probe, cases: list, command: str = "", log: Callable = print,
              clock: Callable[[], float] = time.monotonic, step_clock: Callable[[], float] = time.perf_counter,
              snapshot_api=None, started_at: float | None = None) -> tuple[int, dict]:
    """Run the check into ``out`` within ``budget_s`` seconds; returns (exit status, summary). Exit 0: every
    case that started finished (skips are not failures); 1: a method's gradients were wrong on the device, a case
    failed, or the results broke the record contract; 130: interrupted (what was measured is still written).
    ``started_at``: the clock's reading when the command started (its imports count against the budget too;
    default: now)."""
    budget = Budget(budget_s, reserve_s=min(RESERVE_S, budget_s / 4), clock=clock, start=started_at)
    out = Path(out)
    writer.prepare_out_dir(out)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    summary: dict[str, Any] = {"format": "revbench.gpu-check/1", "command": command, "started_at": started,
                               "budget_s": budget_s, "hold_s": calibration.HOLD_S, "cases": [], "snapshots": []}
    errors = summary["stage_errors"] = {}

    def stage(name, fn, default):
        """One step before the cases; its failure is said in one line and the check goes on without it."""
        try:
            return fn()
        except Exception as exc:
            errors[name] = _one_line(exc)
            log(f"gpu-check: {name} failed: {errors[name]}")
            return default

    summary["context"] = stage("context", probe.context, {})
    summary["startup"] = {"context_s": summary["context"].pop("context_s", None)}
    summary["environment"] = env = stage("environment", probe.environment, {})
    summary["gpu_name"] = env.get("gpu_name")
    log(f"gpu-check: {env.get('gpu_name')} ({env.get('cuda_device')}), torch {env.get('torch_version')}, "
        f"CUDA {env.get('torch_cuda_version')}, cuDNN {env.get('cudnn_version')}; budget {budget_s:.0f} s")
    summary["startup"].update(stage("startup", probe.startup, {}))
    summary["calibration"] = stage("calibration", probe.calibrate, [])
    t_grads = clock()
    summary["gradients"] = grads = stage("gradients", probe.gradients, [])
    summary["startup"]["gradients_s"] = round(clock() - t_grads, 2)
    wrong = [g for g in grads if g.get("ok") is False]
    for g in wrong:
        log(f"gpu-check: WRONG gradients: {g['method']} {g['options']} on {g['cell']}: "
            f"{g.get('reason') or 'max relative error %.3g' % g['max_rel_err']}")
    log(f"gpu-check: context, start-up, calibration and {sum(g.get('ok') is True for g in grads)} float64 gradient "
        f"checks done after {budget.elapsed():.1f} s ({len(wrong)} wrong)")
    ctx = RunContext(sync=probe.sync, clock=step_clock, out_dir=out, snapshot_api=snapshot_api,
                     file_limit_bytes=writer.MAX_FILE_BYTES - 1)
    summary["timer"] = ctx.timer
    entries: list[dict] = []
    status = 1 if wrong or errors else 0
    interrupted = False
    for i, case in enumerate(cases):
        row = {"case": case.key, "kind": case.kind, "section": case.section, "prior_s": case.prior_s}
        summary["cases"].append(row)
        if interrupted:
            row.update(status="skipped", reason="interrupted (Ctrl-C)")
            continue
        reason = preflight(case) or budget.refusal(case.prior_s)
        if reason:
            row.update(status="skipped", reason=reason)
            continue
        row["estimate_s"] = round(budget.estimate(case.prior_s), 1)
        t0 = clock()
        try:
            entry = run_case(case, ctx, summary)
        except CaseSkipped as exc:
            row.update(status="skipped", reason=str(exc))
        except KeyboardInterrupt:
            row.update(status="skipped", reason="interrupted (Ctrl-C)")
            interrupted, status = True, 130
        except Exception as exc:            # one case's failure (out of memory, a kernel error) is reported
            row.update(status="failed", reason=_one_line(exc))
            status = status or 1
        else:
            row["status"] = "done"
            if entry is not None:
                entries.append(entry)
        probe.cleanup()                     # freeing the case's cached memory is part of its time
        row["seconds"] = round(clock() - t0, 2)
        if row["status"] == "done":
            budget.finished(case.prior_s, row["seconds"])
        log(f"gpu-check: [{i + 1}/{len(cases)}] {row['status']} {case.key} ({row['seconds']:.1f} s)"
            + (f": {row['reason']}" if row.get("reason") else ""))
    summary["duration_s"] = round(budget.elapsed(), 1)
    commit = next((e["extra_info"].get("commit") for e in entries), None) or env.get("commit")
    document = writer.benchmark_document(entries, machine_info(env), commit, started) if entries else None
    from revbench.report.validate import BenchmarkFileError

    t_write = clock()
    try:
        summary["files"] = writer.write_results(out, summary, document, readme_text, report_sections)
    except BenchmarkFileError as exc:   # a record the contract refuses: a bug of the check, said in one line
        summary["contract_error"] = str(exc)
        summary["files"] = writer.write_results(out, summary, None, readme_text, report_sections)
        log(f"gpu-check: the benchmark records break the record contract, not written: {exc}")
        status = status or 1
    fresh = set(summary["files"]) | {s["file"] for s in summary["snapshots"] if s.get("file")}
    for name in set(writer.OWN_FILES) - fresh:           # an earlier check's file this one did not write again
        (out / name).unlink(missing_ok=True)
    if summary.get("report_error"):
        log(f"gpu-check: report.html could not be built ({summary['report_error']}); rebuild it with "
            f"revbench report {out / writer.BENCHMARKS}")
        status = status or 1
    summary["files"] = sorted(p.name for p in out.iterdir())
    writer.check_limits(out)
    log(f"gpu-check: files written in {clock() - t_write:.1f} s ({budget.reserve_s:.0f} s were kept for them)")
    return status, summary
