"""`revbench run`: the project's main job.

Runs a benchmark grid of the pytest-benchmark suites (the built-in synthetic workload, no data files), shows
progress, writes ``benchmarks.json`` and ``report.html`` into the output folder, and prints where they are and a
short summary table. Results are written to temporary files and renamed into place only when the run succeeded,
so a failed run never overwrites earlier results.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from revbench.cli.options import EXIT_FAILED
from revbench.util.atomic import replacing


class RunFailed(Exception):
    """The suite failed or wrote no usable results: the earlier results are kept."""


def suites_dir() -> Path:
    """The suites/ folder: beside the installed revbench package (a source checkout) or in the current folder."""
    for cand in (Path(__file__).resolve().parents[2] / "suites", Path.cwd() / "suites"):
        if (cand / "test_steps.py").exists():
            return cand
    raise FileNotFoundError("cannot find the benchmark suites (suites/test_steps.py): run revbench from a source "
                            "checkout of the project (pip install -e .) or from its root folder")


def configure(parser: argparse.ArgumentParser) -> None:
    from revbench.measure.grids import GRIDS  # light: no torch work at import

    parser.add_argument("--grid", default="default", choices=sorted(GRIDS),
                        help="benchmark grid (default: %(default)s; see README 'Benchmark grids')")
    parser.add_argument("--out-dir", type=Path, default=Path("out"), help="output folder (default: %(default)s)")
    parser.add_argument("--filter", default=None, help="only cases whose id contains this substring")
    parser.add_argument("--no-report", action="store_true", help="write the JSON only")
    parser.add_argument("--pytest-args", default="", help="extra arguments passed to pytest (quoted)")


def main(args: argparse.Namespace) -> int:
    import shlex

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    final_json, final_html = out_dir / "benchmarks.json", out_dir / "report.html"
    suites = suites_dir()
    try:
        with replacing(final_json) as tmp_json:     # renamed onto benchmarks.json only if the block succeeds
            cmd = [sys.executable, "-m", "pytest", str(suites), f"--benchmark-json={tmp_json}",
                   f"--revbench-grid={args.grid}", "-v", "-rs", "-p", "no:cacheprovider",
                   "--benchmark-columns=median,rounds", "--benchmark-sort=name"]
            if args.filter:
                cmd.append(f"--revbench-filter={args.filter}")
            cmd += shlex.split(args.pytest_args)
            print(f"revbench run: grid {args.grid!r} -> {out_dir}/", flush=True)
            print("  " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            rc = subprocess.call(cmd)
            if rc != 0:
                raise RunFailed("no benchmark ran (check --filter)" if rc == 5 else f"pytest exited with status {rc}")
            from revbench.report.results import BenchmarkFileError, load_benchmarks
            try:
                df = load_benchmarks(tmp_json)
            except BenchmarkFileError as exc:
                hint = f" (no case matched --filter {args.filter!r}?)" if args.filter else ""
                raise RunFailed(f"the suite wrote no usable results{hint}: {exc}") from None
    except RunFailed as exc:
        print(f"revbench run: failed: {exc}; earlier results in {out_dir} were left untouched", file=sys.stderr)
        return EXIT_FAILED
    df.attrs["source"] = str(final_json)            # the report names the file it was built from, not the temp file
    print(f"\nbenchmark JSON: {final_json.resolve()}")
    if not args.no_report:
        import matplotlib

        matplotlib.use("Agg")
        from revbench.report.page import render_report
        render_report(df, final_html, title=f"revbench: {args.grid} grid")
        print(f"HTML report:    {final_html.resolve()}")
    print()
    print(summary_text(df))
    return 0


def summary_text(df) -> str:
    """A short table for the terminal: activation memory, savings and time per method and configuration."""
    import pandas as pd

    cols = {"method_label": "method", "config_id": "configuration", "peak_bytes": "peak MiB",
            "allocator_saving": "x vs bptt", "saving_actual": "paper-style x", "time_median_s": "median s"}
    have = [c for c in cols if c in df.columns]
    t = df[have].rename(columns=cols).copy()
    if "peak MiB" in t:
        t["peak MiB"] = pd.to_numeric(t["peak MiB"], errors="coerce") / 2 ** 20
    t = t.sort_values(["configuration", "method"]) if "configuration" in t else t
    with pd.option_context("display.max_rows", 200, "display.width", 200, "display.max_colwidth", 60):
        return t.to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="n/a")
