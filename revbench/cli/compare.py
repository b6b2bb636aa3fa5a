"""`revbench compare`: compare two benchmark JSON files; non-zero exit on a regression or a missing benchmark."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 3

EPILOG = """\
Benchmarks are matched on name, config_id, method and method_options. Memory figures (every
*_bytes column, buffer_bits_actual, buffer_bits_ideal) regress when they grow by more than
--memory-threshold (default 0.01 = 1%; rss_peak_delta_bytes 0.25 and nvml_*_bytes 0.10 by
default, being sampled meters); time_median_s regresses when it grows by more than
--time-threshold (default 0.25). A figure that is unavailable (null) on either side is skipped
with a note, never compared to 0.

  --threshold peak_bytes=0.005       gate one figure tighter or looser
  --threshold saved_bytes=off        report a figure but do not gate it
  --no-time                          report time changes as warnings only (noisy CI machines)

exit status:
  0  no regression
  1  a figure regressed, or a benchmark of the base run is missing from the new run
  2  usage error (argparse)
  3  an input file is missing, malformed, not pytest-benchmark output, has no revbench
     records, or holds a value the record contract rules out (a wrong type, a negative or
     zero size, byte count or time, an unknown kind); nothing is written to --output then
"""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (give a fraction, e.g. 0.01 for 1%)") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction >= 0 (e.g. 0.01 for 1%)")
    return value


def _figure_threshold(text: str) -> tuple[str, float | None]:
    from revbench.report.compare import is_comparable_figure

    figure, sep, value = text.partition("=")
    figure = figure.strip()
    if not sep or not figure:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIGURE=FRACTION, e.g. peak_bytes=0.005")
    if not is_comparable_figure(figure):
        raise argparse.ArgumentTypeError(
            f"{figure!r} is not a compared figure (time_median_s, buffer_bits_actual, buffer_bits_ideal or a "
            "column ending in _bytes)")
    if value.strip().lower() in ("off", "none"):
        return figure, None
    return figure, _fraction(value.strip())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("base", type=Path, help="benchmark JSON of the reference run")
    parser.add_argument("new", type=Path, help="benchmark JSON of the run to check")
    parser.add_argument("--memory-threshold", type=_fraction, default=0.01, metavar="FRACTION",
                        help="allowed growth of memory figures (default: 0.01 = 1%%)")
    parser.add_argument("--time-threshold", type=_fraction, default=0.25, metavar="FRACTION",
                        help="allowed growth of the median time (default: 0.25 = 25%%)")
    parser.add_argument("--threshold", type=_figure_threshold, action="append", default=[],
                        metavar="FIGURE=FRACTION", help="per-figure threshold ('off' = report only); repeatable")
    parser.add_argument("--no-time", action="store_true", help="do not fail on time regressions (still reported)")
    parser.add_argument("--all", action="store_true", help="list every compared figure, unchanged ones included")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="also write the comparison (.json, .csv, or text for any other suffix)")


def main(args: argparse.Namespace) -> int:
    from revbench.report.compare import compare
    from revbench.report.results import BenchmarkFileError, load_benchmarks
    from revbench.util.atomic import atomic_write_text

    try:
        base = load_benchmarks(args.base)
        new = load_benchmarks(args.new)
        result = compare(base, new, memory_threshold=args.memory_threshold, time_threshold=args.time_threshold,
                         per_figure=dict(args.threshold), gate_time=not args.no_time)
    except (BenchmarkFileError, ValueError) as exc:
        print(f"revbench compare: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    print(f"base: {args.base} ({len(base)} benchmarks, {base.attrs.get('datetime') or 'date n/a'})")
    print(f"new:  {args.new} ({len(new)} benchmarks, {new.attrs.get('datetime') or 'date n/a'})")
    print(f"thresholds: memory +{100 * args.memory_threshold:g}%, time +{100 * args.time_threshold:g}%"
          f"{' (not gated)' if args.no_time else ''}"
          + "".join(f", {f} {'off' if t is None else f'+{100 * t:g}%'}" for f, t in sorted(dict(args.threshold).items())))
    print()
    print(result.format_table(show_all=args.all))

    if args.output is not None:
        text = _output_text(result, args.output, args.all)
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.output, text)
        except OSError as exc:
            print(f"revbench compare: error: cannot write {args.output}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return EXIT_OK if result.ok else EXIT_REGRESSION


def _output_text(result, path: Path, show_all: bool) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return result.to_json() + "\n"
    if suffix == ".csv":
        return result.to_frame().to_csv(index=False)
    return result.format_table(show_all=show_all) + "\n"
