"""`revbench report`: render a benchmark JSON file into one self-contained HTML report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_BAD_INPUT = 3

EPILOG = """\
exit status:
  0  report written (its path is printed)
  2  bad arguments
  3  the JSON file is missing, malformed, not pytest-benchmark output, has no revbench
     records, or holds a value the record contract rules out (a wrong type, a negative or
     zero size, byte count or time, an unknown kind); or the report cannot be written

The report is written to a temporary file and renamed into place, so a failed run never
replaces an earlier report.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("json", type=Path, metavar="JSON",
                        help="benchmark JSON written by `revbench run` (out/benchmarks.json) or by "
                             "`pytest suites/ --benchmark-json FILE`")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="HTML file to write (default: the JSON's name with .html)")
    parser.add_argument("--title", default=None, help="report title (default: 'revbench report: <json name>')")


def main(args: argparse.Namespace) -> int:
    from revbench.report.results import BenchmarkFileError, load_benchmarks

    out = args.output if args.output is not None else args.json.with_suffix(".html")
    if out.exists() and out.is_dir():
        print(f"revbench report: error: output {out} is a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        df = load_benchmarks(args.json)  # checked against the record contract before anything is drawn
    except BenchmarkFileError as exc:
        print(f"revbench report: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    import matplotlib

    matplotlib.use("Agg")
    from revbench.report.page import render_report

    title = args.title or f"revbench report: {args.json.name}"
    try:
        path = render_report(df, out, title=title)
    except OSError as exc:
        print(f"revbench report: error: cannot write {out}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(path)
    return EXIT_OK
