"""`revbench run`: the project's main job.

Runs a benchmark grid of the pytest-benchmark suites (the built-in synthetic workload, no data files), shows
progress, writes ``benchmarks.json`` and ``report.html`` into the output folder, and prints where they are and a
short summary table. Results are written to temporary files and renamed into place only when the run succeeded,
so a failed run never overwrites earlier results.

Reliability (``run_child``, ``run_output``): the pytest child dies with this process, however it dies (its own
process group, stopped on Ctrl-C, which exits 130; a parent-death signal on Linux for SIGKILL); one run at a time
per output folder; the report names the SHA-256 of the JSON it was built from, and the next run removes the
temporary files of a killed one and repairs a report that does not belong to the JSON beside it.
"""
from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path

from revbench.cli import run_child, run_output
from revbench.cli.options import EXIT_BAD_INPUT, EXIT_FAILED
from revbench.util.atomic import replacing

EXIT_INTERRUPTED = 130      # Ctrl-C, as `revbench train`


class RunFailed(Exception):
    """The suite failed or wrote no usable results: the earlier results are kept. ``bad_input``: because of
    the arguments given (exit 2), not the suite (exit 1)."""

    def __init__(self, message: str, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input


def suites_dir() -> Path:
    """The suites/ folder: beside the installed revbench package (a source checkout) or in the current folder."""
    for cand in (Path(__file__).resolve().parents[2] / "suites", Path.cwd() / "suites"):
        if (cand / "test_steps.py").exists():
            return cand
    raise FileNotFoundError("cannot find the benchmark suites (suites/test_steps.py): run revbench from a source "
                            "checkout of the project (pip install -e .) or from its root folder")


PYTEST_OWNED = {"--benchmark-json": "revbench run writes it to --out-dir/benchmarks.json",
                "--revbench-grid": "use --grid", "--revbench-filter": "use --filter"}
DASH_HINT = ("pass a value that starts with '-' with '=': --pytest-args=--benchmark-disable, or several "
             "arguments quoted: --pytest-args='-x --benchmark-min-rounds=5'")


def configure(parser: argparse.ArgumentParser) -> None:
    from revbench.measure.grids import GRIDS  # light: no torch work at import

    parser.add_argument("--grid", default="default", choices=sorted(GRIDS),
                        help="benchmark grid (default: %(default)s; see README 'Benchmark grids')")
    parser.add_argument("--out-dir", type=Path, default=Path("out"), help="output folder (default: %(default)s)")
    parser.add_argument("--filter", default=None, help="only cases whose id contains this substring")
    parser.add_argument("--no-report", action="store_true", help="write the JSON only")
    parser.add_argument("--pytest-args", default="",
                        help="extra arguments passed to pytest, as one shell-quoted string; " + DASH_HINT)
    _hint_dash_values(parser)


def _hint_dash_values(parser: argparse.ArgumentParser) -> None:
    """argparse takes ``--pytest-args --flag`` for two options ("expected one argument"): say how to pass it."""
    error = parser.error

    def error_with_hint(message: str):
        if "--pytest-args" in message and "expected one argument" in message:
            message = f"{message} ({DASH_HINT})"
        error(message)
    parser.error = error_with_hint


def pytest_extra_args(text: str) -> list[str]:
    """``--pytest-args`` split like a shell would; ValueError (naming the option) when it cannot be used."""
    try:
        extra = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"--pytest-args {text!r}: {exc}") from None
    for arg in extra:
        for opt, use in PYTEST_OWNED.items():
            if arg == opt or arg.startswith(opt + "="):
                raise ValueError(f"--pytest-args {text!r}: {opt} is not allowed ({use})")
    return extra


def selected_cases(grid: str, sub: str | None) -> int:
    """How many cases of ``grid`` the suites run under ``--filter sub`` (cases whose id contains ``sub``)."""
    from revbench.measure.grids import get_grid

    return sum(1 for c in get_grid(grid) if not sub or sub in c.id)


def main(args: argparse.Namespace) -> int:
    out_dir: Path = args.out_dir
    try:
        extra = pytest_extra_args(args.pytest_args)
        suites = suites_dir()
        run_output.prepare(out_dir)
    except (ValueError, FileNotFoundError, run_output.OutDirError) as exc:
        print(f"revbench run: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    committed = False
    try:
        with run_output.locked(out_dir):
            run_output.recover(out_dir, rebuild=not args.no_report, say=lambda line: print(line, flush=True))
            df = _run(args, out_dir, suites, extra)
            committed = True
    except run_output.OutDirError as exc:
        print(f"revbench run: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunFailed as exc:
        print(f"revbench run: failed: {exc}; earlier results in {out_dir} were left untouched", file=sys.stderr)
        return EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED
    except KeyboardInterrupt:
        where = (f"the results in {out_dir} were written" if committed else
                 f"pytest was stopped; earlier results in {out_dir} were left untouched")
        print(f"\nrevbench run: interrupted; {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    final_json, final_html = out_dir / run_output.JSON_NAME, out_dir / run_output.HTML_NAME
    print(f"\nbenchmark JSON: {final_json.resolve()}")
    if not args.no_report:
        print(f"HTML report:    {final_html.resolve()}")
    elif run_output.named_digest(final_html) not in (None, run_output.file_digest(final_json)):
        print(f"note: {final_html} is the report of earlier results (--no-report); the next run without "
              "--no-report rebuilds it")
    print()
    print(summary_text(df))
    return 0


def _run(args: argparse.Namespace, out_dir: Path, suites: Path, extra: list[str]):
    """Run the suite into temporary files and commit benchmarks.json, then report.html (see run_output); the
    loaded results. RunFailed (nothing replaced) when the suite fails or records nothing."""
    n = selected_cases(args.grid, args.filter)
    if n == 0:
        raise RunFailed(f"no case of grid {args.grid!r} matches --filter {args.filter!r}")
    final_json, final_html = out_dir / run_output.JSON_NAME, out_dir / run_output.HTML_NAME
    with contextlib.ExitStack() as stack:       # exits in reverse: benchmarks.json is renamed first, then the report
        tmp_html = None if args.no_report else stack.enter_context(replacing(final_html))
        tmp_json = stack.enter_context(replacing(final_json))
        cmd = [str(suites), f"--benchmark-json={tmp_json}", f"--revbench-grid={args.grid}", "-v", "-rs",
               "-p", "no:cacheprovider", "--benchmark-columns=median,rounds", "--benchmark-sort=name"]
        if args.filter:
            cmd.append(f"--revbench-filter={args.filter}")
        cmd += extra
        print(f"revbench run: grid {args.grid!r} -> {out_dir}/", flush=True)
        print("  " + " ".join(shlex.quote(c) for c in [sys.executable, "-m", "pytest", *cmd]), flush=True)
        rc = run_child.run_module("pytest", cmd)
        if rc == 4:
            raise RunFailed("pytest refused its arguments (exit status 4; see its error above): check --pytest-args",
                            bad_input=True)
        if rc == 5:
            raise RunFailed(f"pytest selected none of the {_cases(n)} (exit status 5): check --pytest-args")
        if rc != 0:
            raise RunFailed(f"pytest exited with status {rc}")
        from revbench.report.results import BenchmarkFileError, load_benchmarks
        try:
            df = load_benchmarks(tmp_json)
        except BenchmarkFileError as exc:
            raise RunFailed(_no_records(tmp_json, n, exc, args.pytest_args)) from None
        digest = run_output.file_digest(tmp_json)
        df.attrs["source"] = run_output.source_label(final_json, digest)   # the final file, not the temporary one
        if tmp_html is not None:
            tmp_html.write_text(run_output.report_page(df, digest, f"revbench: {args.grid} grid"), encoding="utf-8")
    return df


def _cases(n: int) -> str:
    return f"{n} selected case{'s' if n != 1 else ''}"


def _no_records(tmp_json: Path, n: int, exc, pytest_args: str) -> str:
    """Why pytest ran the selected cases (the filter matched) but left no usable benchmark records."""
    given = f" (--pytest-args {pytest_args!r})" if pytest_args else ""
    if tmp_json.stat().st_size == 0:
        return (f"pytest ran the {_cases(n)} but pytest-benchmark wrote no JSON: benchmarking was disabled or "
                f"skipped{given}, e.g. by --benchmark-disable, --benchmark-skip or --collect-only")
    return (f"the suite recorded no usable benchmark for the {_cases(n)} (skipped or not benchmarked: see "
            f"pytest's output above{given}): {exc}")


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
