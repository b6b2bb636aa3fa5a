"""`revbench` command line: one thin dispatcher; each subcommand lives in its own module.

A subcommand module exposes ``configure(parser)`` (adds its arguments) and
``main(args) -> int`` (the exit status). Only the subcommand named on the command line
is imported and configured (the others are listed by name and help), and subcommand
modules keep heavy imports (torch, pandas, seaborn) inside ``main``, so that
`revbench --version` and `revbench compare --help` answer without importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

EXIT_INTERRUPTED = 130     # Ctrl-C, as a shell reports SIGINT

# name -> (module, one-line help)
COMMANDS = {
    "run": ("revbench.cli.run", "run the benchmark suites on a grid (--grid), write the JSON and the HTML report"),
    "report": ("revbench.cli.report", "render a benchmark JSON into one self-contained HTML report"),
    "compare": ("revbench.cli.compare", "compare two benchmark JSON files; non-zero exit on regression"),
    "train": ("revbench.cli.train", "train a model (lm or nmt)"),
    "reproduce": ("revbench.cli.reproduce", "run a paper reproduction grid (lm, repeat or nmt)"),
    "export": ("revbench.cli.export", "convert a benchmark JSON for CI dashboards (github-action-benchmark, bencher)"),
    "profile": ("revbench.cli.profile", "show where one training step's time goes, per method (torch.profiler)"),
    "gpu-check": ("revbench.cli.gpu_check", "validate every GPU path on this machine's GPU in one short run"),
}


DESCRIPTION = """\
Reversible RNNs (MacKay et al. 2018) and a memory/time benchmark harness: how much
activation memory each training method saves, and what it costs in time."""
EPILOG = """\
`revbench COMMAND --help` shows a command's options. Exit status of every command:
0 done, 1 failed (a regression, a failed suite, a diverged training), 2 bad arguments
(train: also a bad config, data or checkpoint), 3 bad input file (report, compare, export),
130 interrupted (Ctrl-C)."""


def version_line() -> str:
    """``revbench <version> (torch <version>, Python <version>)``, read from the installed distributions' metadata
    (torch is not imported)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from revbench import __version__

    try:
        torch = f"torch {version('torch')}"
    except PackageNotFoundError:
        torch = "torch not installed"
    return f"revbench {__version__} ({torch}, Python {platform.python_version()})"


class _VersionAction(argparse.Action):
    """``--version``: print ``version_line()`` and exit 0 (computed only when asked for)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit(0)


def command_named(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names: its first argument that is not an option (the top-level options take no
    value), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(configure: list[str] | None = None) -> argparse.ArgumentParser:
    """The `revbench` parser. Every subcommand is listed; the modules of those in ``configure`` (default: all) are
    imported and add their arguments, a module missing from this checkout makes its subcommand "not available"."""
    parser = argparse.ArgumentParser(prog="revbench", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of revbench, torch and Python, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if configure is not None and name not in configure:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a subcommand not built yet in this checkout
            if exc.name != module:
                raise
            p.set_defaults(_missing=module)
            continue
        mod.configure(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name = command_named(argv)
    parser = build_parser([name] if name in COMMANDS else [])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"revbench: subcommand {args.command!r} is not available ({args._missing} missing)", file=sys.stderr)
        return 2
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:       # subcommands that stop children or save state catch it first
        print(f"\nrevbench {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
