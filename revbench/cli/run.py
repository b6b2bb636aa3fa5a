"""`revbench run`: the project's main job.

Runs a benchmark grid of the pytest-benchmark suites (the built-in synthetic workload, no data files) through an
engine (``revbench.tasks.engine``: ``local`` pytest workers, or one Ray task per case with ``--engine ray``), shows
progress (cases done / running / failed, ETA), writes ``benchmarks.json`` and ``report.html`` into the output
folder, and prints where they are and a short summary table. Results are written to temporary files and renamed
into place only when every case succeeded, so a failed run never overwrites earlier results.

Reliability (``revbench.tasks.engine``, ``run_output``): workers die with this process, however it dies (their
own process group, stopped on Ctrl-C, which exits 130; a parent-death signal on Linux for SIGKILL); every finished
case is kept at once in ``benchmarks.partial.json`` (atomic, checked before it is trusted), so an interrupted run
resumes where it stopped; a failing case, or one whose worker dies, is retried once in a fresh worker; one run at
a time per output folder; the report names the SHA-256 of the JSON it was built from, and the next run removes
the temporary files of a killed one and repairs a report that does not belong to the JSON beside it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path

from revbench.cli import run_output
from revbench.cli.run_output import PARTIAL_NAME
from revbench.cli.options import EXIT_BAD_INPUT, EXIT_FAILED
from revbench.util.atomic import replacing

EXIT_INTERRUPTED = 130      # Ctrl-C, as `revbench train`


class RunFailed(Exception):
    """The suite failed or wrote no usable results: the earlier results are kept. ``bad_input``: because of
    the arguments given (exit 2), not the suite (exit 1)."""

    def __init__(self, message: str, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input


SUITE_FILES = ("conftest.py", "test_steps.py")


def suites_dir(cwd: Path | None = None) -> Path:
    """The suites/ folder to run: that of the revbench checkout the current folder is in (it or a parent holds
    ``suites/`` and ``revbench/``), else the one beside the installed revbench package (an editable install)."""
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        cand = folder / "suites"
        if all((cand / f).is_file() for f in SUITE_FILES) and (folder / "revbench" / "__init__.py").is_file():
            return cand
    cand = Path(__file__).resolve().parents[2] / "suites"
    if all((cand / f).is_file() for f in SUITE_FILES):
        return cand
    raise FileNotFoundError("cannot find the benchmark suites (suites/test_steps.py): run revbench from a source "
                            "checkout of the project (pip install -e .) or from its root folder")


PYTEST_OWNED = {"--benchmark-json": "revbench run writes it to --out/benchmarks.json",
                "--revbench-grid": "use --grid", "--revbench-filter": "use --filter",
                "--revbench-threads": "use --threads", "--revbench-cases": "use --filter",
                "--revbench-events": "the engine sets it"}
DASH_HINT = ("pass a value that starts with '-' with '=': --pytest-args=--benchmark-disable, or several "
             "arguments quoted: --pytest-args='-x --benchmark-min-rounds=5'")


def configure(parser: argparse.ArgumentParser) -> None:
    from revbench.cli.options import positive_int
    from revbench.measure.grids import GRIDS  # light: no torch work at import

    parser.add_argument("--grid", default="default", choices=sorted(GRIDS),
                        help="benchmark grid (default: %(default)s; see README 'Benchmark grids')")
    parser.add_argument("--out", "--out-dir", dest="out", type=Path, default=Path("out"), metavar="DIR",
                        help="output folder (default: %(default)s; --out-dir is the old spelling)")
    parser.add_argument("--filter", default=None, metavar="SUBSTRING",
                        help="only cases whose id contains this substring")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="N",
                        help="torch CPU threads per worker (torch.set_num_threads, OMP_NUM_THREADS; forwarded to "
                             "the suites as --revbench-threads; default: %(default)s), written into every record")
    parser.add_argument("--no-report", action="store_true", help="write the JSON only")
    parser.add_argument("--fresh", action="store_true",
                        help=f"run every case again, ignoring the cases an interrupted run kept in {PARTIAL_NAME}")
    parser.add_argument("--quiet", action="store_true", help="no progress lines (errors and the summary only)")
    parser.add_argument("--pytest-args", default="", metavar="ARGS",
                        help="extra arguments passed to pytest, as one shell-quoted string; " + DASH_HINT)
    add_engine_options(parser, "case")
    _hint_dash_values(parser)


def add_engine_options(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--engine local|ray``, ``--address``, ``--parallel``, ``--gpus-per-case/--cpus-per-case`` (per ``unit``)."""
    from revbench.cli.options import positive_int

    g = parser.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help=f"local: workers on this machine (default); ray: one Ray task per {unit}, on an embedded "
                        "Ray or the cluster at --address / $RAY_ADDRESS (pip install 'revbench[cluster]')")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join (host:port or 'auto'; default: $RAY_ADDRESS, else an embedded Ray)")
    g.add_argument("--parallel", type=positive_int, default=None, metavar="N",
                   help=f"{unit}s at a time (local: workers on this machine, default 1; ray: default as many as "
                        "the cluster's resources allow, and the CPUs of an embedded Ray)")
    g.add_argument(f"--gpus-per-{unit}", dest="gpus_per_case", type=_amount(0), default=0.0, metavar="G",
                   help=f"GPUs Ray reserves for each {unit} (default: %(default)s)")
    g.add_argument(f"--cpus-per-{unit}", dest="cpus_per_case", type=_amount(1e-9), default=1.0, metavar="C",
                   help=f"CPUs Ray reserves for each {unit} (default: %(default)s)")


def _amount(least: float):
    """An argparse type: a finite number >= ``least`` (GPUs may be 0, CPUs must be > 0)."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number {'>= 0' if least == 0 else '> 0'}")
        return value
    return parse


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
    from revbench.tasks.engine.cases import select_cases

    return len(select_cases(grid, sub))


def main(args: argparse.Namespace) -> int:
    from revbench.tasks.engine.cases import EngineError

    out_dir: Path = args.out
    try:
        if args.engine == "ray":
            from revbench.tasks.engine.ray_engine import import_ray

            import_ray()                                # before anything is done: one line, exit 2
        extra = pytest_extra_args(args.pytest_args)
        suites = suites_dir()
        run_output.prepare(out_dir)
    except (ValueError, FileNotFoundError, run_output.OutDirError, EngineError) as exc:
        print(f"revbench run: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    committed, kept = False, [0]
    try:
        with run_output.locked(out_dir):
            df = _run(args, out_dir, suites, extra, kept)
            committed = True
    except run_output.OutDirError as exc:
        print(f"revbench run: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EngineError as exc:
        print(f"revbench run: {'error' if exc.bad_input else 'failed'}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED
    except RunFailed as exc:
        print(f"revbench run: failed: {exc}; earlier results in {out_dir} were left untouched", file=sys.stderr)
        return EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED
    except KeyboardInterrupt:
        where = (f"the results in {out_dir} were written" if committed else
                 f"the workers were stopped; earlier results in {out_dir} were left untouched"
                 + (f"; {_cases(kept[0], 'finished case')} kept in {out_dir / PARTIAL_NAME}: run the same command "
                    "to resume" if kept[0] else ""))
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


def _run(args: argparse.Namespace, out_dir: Path, suites: Path, extra: list[str], kept: list):
    """Run the selected cases through the engine (resuming from the partial file), then commit benchmarks.json,
    then report.html (see run_output); the loaded results. RunFailed (nothing replaced) when a case failed or
    nothing was recorded."""
    from revbench.tasks.engine.cases import Settings, select_cases, suite_declares
    from revbench.tasks.engine.partial import PartialStore
    from revbench.tasks.engine.progress import Progress
    from revbench.tasks.engine.runner import build_document, run_cases

    ids = select_cases(args.grid, args.filter)
    n = len(ids)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    print(f"revbench run: suites {suites}, grid {args.grid!r}, {_cases(n, 'case')}, engine {args.engine}, "
          f"{args.threads} thread{'s' if args.threads != 1 else ''} per worker -> {out_dir}/", flush=True)
    run_output.recover(out_dir, rebuild=not args.no_report, say=lambda line: print(line, flush=True))
    if args.engine == "local" and (args.address or args.gpus_per_case):
        say("note: --address and --gpus-per-case are for --engine ray; the local engine ignores them")
    if n == 0:
        raise RunFailed(f"no case of grid {args.grid!r} matches --filter {args.filter!r}")
    settings = Settings(suites=str(suites), grid=args.grid, threads=args.threads, extra=tuple(extra),
                        suite_threads_option=suite_declares(suites, "--revbench-threads"), filter=args.filter,
                        engine=args.engine)
    store = PartialStore(out_dir / PARTIAL_NAME, settings.fingerprint())
    if args.fresh:
        store.remove()
    resumed = sum(1 for c in ids if c in store.cases) if store.load(say) else 0
    if resumed:
        say(f"resuming: {resumed} of {n} cases finished by an earlier run (kept in {store.path}); "
            "--fresh runs them again")
    progress = Progress(n, already=resumed, quiet=args.quiet)
    try:
        outcome = run_cases(settings, ids, store, engine=args.engine, parallel=args.parallel, progress=progress,
                            say=say, **_engine_options(args))
    finally:
        progress.close()
        kept[0] = sum(1 for c in ids if c in store.cases)
    reasons: dict[str, int] = {}
    for why in outcome.skipped.values():
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in reasons.items():
        say(f"skipped {_cases(count, 'case')}: {why}")
    if outcome.failed:
        lines = [f"  {c}: {(err.strip() or 'failed').splitlines()[0]}" for c, err in outcome.failed.items()]
        for c, err in outcome.failed.items():
            print(f"\n--- {c} failed (twice):\n{err.strip()}", file=sys.stderr)
        raise RunFailed(f"{_cases(len(outcome.failed), 'case')} of {n} failed after a retry:\n" + "\n".join(lines)
                        + f"\nthe {_cases(len(outcome.entries), 'finished case')} are kept in {store.path}: run the "
                          "same command to run only the others")
    if not outcome.entries:
        raise RunFailed(_no_records(n, outcome, args.pytest_args))
    final_json, final_html = out_dir / run_output.JSON_NAME, out_dir / run_output.HTML_NAME
    with contextlib.ExitStack() as stack:       # exits in reverse: benchmarks.json is renamed first, then the report
        tmp_html = None if args.no_report else stack.enter_context(replacing(final_html))
        tmp_json = stack.enter_context(replacing(final_json))
        tmp_json.write_text(json.dumps(build_document(outcome), indent=4) + "\n", encoding="utf-8")
        from revbench.report.results import BenchmarkFileError, load_benchmarks
        try:
            df = load_benchmarks(tmp_json)
        except BenchmarkFileError as exc:
            raise RunFailed(f"the merged results break the record contract: {exc}") from None
        digest = run_output.file_digest(tmp_json)
        df.attrs["source"] = run_output.source_label(final_json, digest)   # the final file, not the temporary one
        if tmp_html is not None:
            tmp_html.write_text(run_output.report_page(df, digest, f"revbench: {args.grid} grid"), encoding="utf-8")
    store.remove()
    return df


def _engine_options(args) -> dict:
    if args.engine != "ray":
        return {}
    return {"address": args.address, "gpus_per_case": args.gpus_per_case, "cpus_per_case": args.cpus_per_case}


def _cases(n: int, what: str = "selected case") -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _no_records(n: int, outcome, pytest_args: str) -> str:
    """Why the selected cases ran (the filter matched) but left no usable benchmark records."""
    given = f" (--pytest-args {pytest_args!r})" if pytest_args else ""
    if outcome.unrecorded:
        return (f"pytest ran the {_cases(n)} but pytest-benchmark recorded nothing: benchmarking was disabled or "
                f"skipped{given}, e.g. by --benchmark-disable, --benchmark-skip or --collect-only")
    why = next(iter(outcome.skipped.values()), "no case ran")
    return (f"the suite recorded no usable benchmark for the {_cases(n)} (skipped or not benchmarked{given}; "
            f"e.g. {why})")


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
