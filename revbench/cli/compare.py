"""`revbench compare`: compare two benchmark JSON files; non-zero exit on a regression or a missing benchmark."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3

EPILOG = """\
Benchmarks are matched on name, config_id, method and method_options. Exact memory figures
(every *_bytes figure of the live-tensor meter, the CUDA allocator, the profiler and saved
tensors; the buffer bits) regress when they grow by more than --memory-threshold (default 1%);
time_median_s when it grows by more than --time-threshold (default 25%). The sampled meters
(rss_peak_delta_bytes, nvml_*_bytes, heap_peak_bytes) are reported, not gated, unless a
--threshold is given for them. A figure unavailable (null) on either side is skipped, never
compared to 0; a figure the base file does not record at all (an older baseline) is listed as a
new figure with -v and never fails.

Thresholds: a percentage (5%), a fraction (0.05) or off (report, do not gate).
  --threshold peak_bytes=0.5%        gate one figure tighter or looser
  --threshold rss_peak_delta_bytes=30%   gate a sampled meter after all
  --threshold saved_bytes=off        report a figure but do not gate it
  --no-time                          report time changes, do not gate them (noisy machines)
  --filter revgru --allow-missing    gate the subset a filtered `revbench run` measured

Output: a pass prints one summary line; a failure lists the regressed figures and missing
benchmarks (full names), then the summary. -v adds warnings, improvements, added benchmarks,
new figures and skipped figures; --all every compared figure.

exit status:
  0  no regression
  1  a figure regressed, or a benchmark of the base run is missing from the new run
     (without --allow-missing)
  2  usage error (a bad option or threshold, a filter that matches nothing)
  3  an input file is missing, malformed, not pytest-benchmark output, has no revbench
     records, or holds a value the record contract rules out (a wrong type, a negative or
     zero size, byte count or time, an unknown kind); nothing is written to --output then
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("base", type=Path, help="benchmark JSON of the reference run")
    parser.add_argument("new", type=Path, help="benchmark JSON of the run to check")
    parser.add_argument("--memory-threshold", default="1%", metavar="T",
                        help="allowed growth of the exact memory figures: 1%%, 0.01 or off (default: 1%%)")
    parser.add_argument("--time-threshold", default="25%", metavar="T",
                        help="allowed growth of the median time: 25%%, 0.25 or off (default: 25%%)")
    parser.add_argument("--threshold", action="append", default=[], metavar="FIGURE=T",
                        help="threshold of one figure (5%%, 0.05 or off); repeatable")
    parser.add_argument("--no-time", action="store_true", help="do not fail on time regressions (still reported)")
    parser.add_argument("--filter", action="append", default=[], metavar="SUBSTRING",
                        help="compare only benchmarks whose name or config id contains SUBSTRING, in both "
                             "files; repeatable (any of them)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="report benchmarks of the base run missing from the new run, do not fail on them")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also list warnings, improvements, added benchmarks, new and skipped figures")
    parser.add_argument("--all", action="store_true", help="list every compared figure, unchanged ones included")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="also write the comparison (.json, .csv, or the -v text for any other suffix)")


def _usage_error(message: str) -> int:
    print(f"revbench compare: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(args: argparse.Namespace) -> int:
    from revbench.report.compare_thresholds import (ThresholdError, format_threshold, parse_figure_threshold,
                                                    parse_threshold)

    try:
        memory = parse_threshold(args.memory_threshold)
    except ThresholdError as exc:
        return _usage_error(f"--memory-threshold: {exc}")
    try:
        time = parse_threshold(args.time_threshold)
    except ThresholdError as exc:
        return _usage_error(f"--time-threshold: {exc}")
    per_figure = {}
    for text in args.threshold:
        try:
            fig, value = parse_figure_threshold(text)
        except ThresholdError as exc:
            return _usage_error(f"--threshold: {exc}")
        per_figure[fig] = value
    if any(not s for s in args.filter):
        return _usage_error("--filter: an empty substring would match every benchmark")

    from revbench.report.compare import compare
    from revbench.report.compare_output import format_text
    from revbench.report.results import BenchmarkFileError, load_benchmarks
    from revbench.util.atomic import atomic_write_text

    try:
        base = load_benchmarks(args.base)
        new = load_benchmarks(args.new)
    except BenchmarkFileError as exc:
        print(f"revbench compare: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = compare(base, new, memory_threshold=memory, time_threshold=time, per_figure=per_figure,
                         gate_time=not args.no_time, only=args.filter, allow_missing=args.allow_missing)
    except ThresholdError as exc:
        return _usage_error(str(exc))
    except ValueError as exc:      # ambiguous benchmark keys: the file cannot be compared
        print(f"revbench compare: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    header = [f"base: {args.base} ({len(base)} benchmarks, {base.attrs.get('datetime') or 'date n/a'})",
              f"new:  {args.new} ({len(new)} benchmarks, {new.attrs.get('datetime') or 'date n/a'})",
              f"thresholds: memory {format_threshold(memory)}, time {format_threshold(time)}"
              f"{' (not gated: --no-time)' if args.no_time else ''}"
              + "".join(f", {f} {format_threshold(t)}" for f, t in sorted(per_figure.items())), ""]
    verbose = args.verbose or args.all
    text = format_text(result, verbose=verbose, show_all=args.all)
    print("\n".join(header) + "\n" + text if verbose else text)

    if args.output is not None:
        body = _output_text(result, args.output, "\n".join(header) + "\n"
                            + format_text(result, verbose=True, show_all=args.all))
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.output, body)
        except OSError as exc:
            print(f"revbench compare: error: cannot write {args.output}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return EXIT_OK if result.ok else EXIT_REGRESSION


def _output_text(result, path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return result.to_json() + "\n"
    if suffix == ".csv":
        return result.to_frame().to_csv(index=False)
    return text + "\n"
