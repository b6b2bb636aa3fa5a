"""`revbench export`: convert a benchmark JSON for CI dashboards (github-action-benchmark, Bencher)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_BAD_INPUT = 3

EPILOG = """\
formats:
  github-action-benchmark  the customSmallerIsBetter list of benchmark-action/github-action-benchmark:
                           [{"name": "<benchmark> / <figure>", "unit", "value", "range"?, "extra"}]
                           for every memory figure (*_bytes, buffer bits) and time_median_s (seconds)
  bencher                  Bencher Metric Format: {"<benchmark>": {"<figure-slug>": {"value", ...}}}
                           with every figure as a measure (bencher run --adapter json --file FILE)

--figures picks what goes in: all (default), memory (every memory figure), exact (the memory figures
`revbench compare` gates: the sampled RSS, NVML and heap meters left out) or time. Unavailable
figures (null in the record) are left out, never written as 0.

exit status:
  0  written (the path is printed; with no -o the JSON goes to standard output)
  2  bad arguments
  3  the JSON file is missing, malformed, not pytest-benchmark output, has no revbench
     records, or holds a value the record contract rules out; or the output cannot be written
"""


def configure(parser: argparse.ArgumentParser) -> None:
    from revbench.report.export import FORMATS, SELECTIONS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("json", type=Path, metavar="JSON",
                        help="benchmark JSON written by `revbench run` (out/benchmarks.json) or by "
                             "`pytest suites/ --benchmark-json FILE`")
    parser.add_argument("--format", required=True, choices=FORMATS, help="the dashboard's input format")
    parser.add_argument("--figures", choices=SELECTIONS, default="all",
                        help="all (default); memory: every memory figure; exact: the memory figures revbench "
                             "compare gates (no RSS/NVML/heap); time: the median time")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="file to write (written atomically; default: standard output)")


def main(args: argparse.Namespace) -> int:
    from revbench.report.export import ExportError, export
    from revbench.report.results import BenchmarkFileError, load_benchmarks
    from revbench.util.atomic import atomic_write_text

    if args.output is not None and args.output.is_dir():
        print(f"revbench export: error: output {args.output} is a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        df = load_benchmarks(args.json)
        text = json.dumps(export(df, args.format, args.figures), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    except (BenchmarkFileError, ExportError) as exc:
        where = "" if isinstance(exc, BenchmarkFileError) else f"{args.json}: "
        print(f"revbench export: error: {where}{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, text)
    except OSError as exc:
        print(f"revbench export: error: cannot write {args.output}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(args.output)
    return EXIT_OK
