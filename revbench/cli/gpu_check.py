"""`revbench gpu-check`: every GPU path of revbench on this machine's GPU, in one short run.

Writes at most 8 files into ``--out`` (no subfolders, each under 16 MiB): ``benchmarks.json``, ``report.html``,
``gpu-check.json``, ``README.md`` and memory snapshots (``revbench.tasks.gpu_check``). Without a GPU it says so in
one line and exits 0, writing nothing. Exit status: 0 done (skipped cases included), 1 a case failed, 2 bad
arguments or output folder, 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from revbench.cli.options import EXIT_BAD_INPUT, command_line, device_name


def _minutes(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes > 0, got {text!r}") from None
    if not 0 < v < 10_000:              # NaN and inf fail too
        raise argparse.ArgumentTypeError(f"expected a number of minutes > 0, got {text!r}")
    return v


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("gpu-check"), metavar="DIR",
                   help="output folder (default: %(default)s): benchmarks.json, report.html, gpu-check.json, "
                        "README.md, memory snapshots; at most 8 files, no subfolders")
    p.add_argument("--budget-minutes", type=_minutes, default=8.0,
                   help="start no new case after this many minutes, less what writing the results takes "
                        "(default: %(default)s); cases run most valuable first")
    p.add_argument("--device", type=device_name, default="cuda:0", help="the GPU to check (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def main(args) -> int:
    started = time.monotonic()              # the budget counts the imports too
    import torch

    if not torch.cuda.is_available():
        print(f"revbench gpu-check: no CUDA GPU here (torch {torch.__version__}, "
              f"{'CPU-only build' if torch.version.cuda is None else 'CUDA ' + torch.version.cuda + ', no device'}): "
              "nothing to check, nothing written")
        return 0
    from revbench.measure.cuda import device_problem
    from revbench.tasks.gpu_check.cases import check_cases
    from revbench.tasks.gpu_check.check import CudaProbe, run_check
    from revbench.tasks.gpu_check.writer import OutputError, prepare_out_dir

    device = torch.device(args.device)
    if device.type != "cuda":
        print(f"revbench gpu-check: error: --device must be cuda or cuda:N, got {args.device!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if device.index is None:
        device = torch.device("cuda", 0)
    problem = device_problem(device)
    if problem:
        print(f"revbench gpu-check: error: --device: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        prepare_out_dir(args.out)
    except (OutputError, OSError) as exc:
        print(f"revbench gpu-check: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    probe = CudaProbe(device)
    status, summary = run_check(args.out, args.budget_minutes * 60, probe, check_cases(probe.cfg_device),
                                command=command_line(), log=log, started_at=started)
    done = sum(c["status"] == "done" for c in summary["cases"])
    skipped = sum(c["status"] == "skipped" for c in summary["cases"])
    failed = sum(c["status"] == "failed" for c in summary["cases"])
    print(f"revbench gpu-check: {done} case(s) measured, {skipped} skipped, {failed} failed in "
          f"{summary['duration_s']:.0f} s; {', '.join(summary['files'])} in {args.out}")
    return status
