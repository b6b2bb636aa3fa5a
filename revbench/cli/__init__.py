"""`revbench` command line: one thin dispatcher; each subcommand lives in its own module.

A subcommand module exposes ``configure(parser)`` (adds its arguments) and
``main(args) -> int`` (the exit status). Subcommand modules keep heavy imports
(torch, pandas, seaborn) inside ``main`` so that `revbench compare --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

EXIT_INTERRUPTED = 130     # Ctrl-C, as a shell reports SIGINT

# name -> (module, one-line help)
COMMANDS = {
    "run": ("revbench.cli.run", "run the default benchmark suite, write JSON and the HTML report"),
    "report": ("revbench.cli.report", "render a benchmark JSON into one self-contained HTML report"),
    "compare": ("revbench.cli.compare", "compare two benchmark JSON files; non-zero exit on regression"),
    "train": ("revbench.cli.train", "train a model (lm or nmt)"),
    "reproduce": ("revbench.cli.reproduce", "run a paper reproduction grid (lm, repeat or nmt)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
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
    parser = build_parser()
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
