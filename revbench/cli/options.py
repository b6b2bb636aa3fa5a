"""What the `revbench` subcommands share: exit codes, argument types, the command line for reports, and the
options several subcommands offer (data, model and method, threads/device/seed, output and grid control), each
spelled, defaulted and explained once here. ``add_*`` functions add them to a parser; a ``default`` or
``unset`` argument is the subcommand's value for "not given" (its config's value is kept then)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from revbench.tasks import run_options

EXIT_FAILED = 1         # the work ran and failed (training diverged, a grid left unfinished)
EXIT_BAD_INPUT = 2      # bad arguments, config or data: nothing was trained

CELLS = ["revgru", "revlstm", "nf-revgru", "nf-revlstm", "gru", "lstm"]
LM_CORPORA = ["ptb", "wikitext-2", "synthetic"]
NMT_CORPORA = ["multi30k", "synthetic"]


def forget_bits(text: str):
    """argparse type: an int 1..10 or 'none' (no limit)."""
    if text.strip().lower() in ("none", "nolimit", "no-limit"):
        return "none"
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int from 1 to 10 or 'none' (no limit), got {text!r}") from None
    if not 1 <= k <= 10:
        raise argparse.ArgumentTypeError(f"expected an int from 1 to 10 or 'none' (no limit), got {k}")
    return k


def _checked(check, parse=int, what: str = "an int"):
    """An argparse type: ``parse`` the text, then ``check`` it (a ``revbench.tasks.run_options`` check); argparse
    names the option in its error."""
    def typ(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    typ.__name__ = getattr(check, "__name__", "value")
    return typ


seed_int = _checked(lambda v: run_options.check_seed(v, "a seed"), what=f"an int from 0 to {run_options.SEED_MAX}")
positive_int = _checked(lambda v: run_options.check_count(v, "the value", allow_none=False, minimum=1),
                        what="an int >= 1")
count_int = _checked(lambda v: run_options.check_count(v, "the value", allow_none=False), what="an int >= 0")
non_negative_float = _checked(lambda v: run_options.check_real(v, "the value", minimum=0), float, "a number >= 0")
finite_float = _checked(lambda v: run_options.check_real(v, "the value"), float, "a finite number")
device_name = _checked(lambda v: run_options.check_device(v, "the device"), str, "a device")


def command_line() -> str:
    """The command as typed (``revbench`` and the quoted arguments), for reports and metadata."""
    return "revbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def say_quiet(quiet: bool):
    """A ``print`` (flushed) for progress lines, or one that prints nothing under ``--quiet``."""
    return (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))


# ------------------------------------------------------------------------------------------- config overrides
def add_overrides(p: argparse.ArgumentParser, table: dict, unset) -> None:
    """One option per ``flag -> (config field, type or list of choices, help)`` of ``table``, default ``unset``."""
    for flag, (_, typ, what) in table.items():
        kind = {"choices": typ} if isinstance(typ, list) else {
            "type": typ, "metavar": "N" if typ in (int, positive_int, count_int, seed_int) else "X"}
        p.add_argument(flag, default=unset, help=what, **kind)


def table_fields(table: dict) -> dict:
    """``{argparse dest: config field}`` of an override table (see ``add_overrides``)."""
    return {flag.lstrip("-").replace("-", "_"): fld for flag, (fld, _, _) in table.items()}


def given(args, fields: dict, unset) -> dict:
    """``{config field: value}`` for each ``dest -> field`` of ``fields`` given on the command line."""
    out = {}
    for dest, fld in fields.items():
        v = getattr(args, dest, unset)
        if v is not unset:
            out[fld] = v
    return out


# ------------------------------------------------------------------------------------------- option groups
def add_data_options(p: argparse.ArgumentParser, corpora: list[str], default=None, default_help: str | None = None,
                     verify: bool = True) -> None:
    """``--data`` (one of ``corpora``; left out when ``default_help`` is None), ``--data-dir`` and ``--no-verify``."""
    g = p.add_argument_group("data")
    if default_help is not None:
        g.add_argument("--data", default=default, choices=corpora, help=f"corpus (default: {default_help})")
    holding = " and ".join(f"{c}/" for c in corpora if c != "synthetic")
    g.add_argument("--data-dir", default=None, metavar="DIR", help=f"data folder holding {holding} (default: $REVBENCH_DATA)")
    if verify:
        g.add_argument("--no-verify", action="store_true",
                       help="skip the SHA256SUMS check (your own copy of the data)")


def add_model_options(p: argparse.ArgumentParser, unset, cell_default: str, method_choices: list[str] | None = None,
                      method_note: str = "") -> None:
    """``--cell``, ``--max-forget-bits``, ``--method`` and ``--method-options`` (read back by ``model_overrides``)."""
    g = p.add_argument_group("model and training method")
    g.add_argument("--cell", default=unset, choices=CELLS, help=f"recurrent cell (default: {cell_default})")
    g.add_argument("--max-forget-bits", type=forget_bits, default=unset, metavar="K",
                   help="max bits forgotten per unit per step, 1..10 or 'none' (reversible cells; default 3)")
    g.add_argument("--method", default=unset, choices=method_choices,
                   help=f"training method (default: reversible for reversible cells, bptt otherwise){method_note}")
    g.add_argument("--method-options", default=unset, metavar="JSON",
                   help="JSON object of the method's options, e.g. '{\"segments\": 4}' (checkpoint) or "
                        "'{\"budget\": 0.1, \"policy\": \"mixed\"}' (gruslys)")


def model_overrides(args, unset) -> dict:
    """The config fields given by ``add_model_options``' options: 'none' (no limit) becomes None and the method
    options are parsed (ValueError on bad JSON)."""
    over = given(args, {"cell": "cell", "max_forget_bits": "max_forget_bits", "method": "method"}, unset)
    if over.get("max_forget_bits") == "none":
        over["max_forget_bits"] = None
    if getattr(args, "method_options", unset) is not unset:
        from revbench.methods import parse_options

        over["method_options"] = parse_options(args.method_options)
    return over


def add_threads(p: argparse.ArgumentParser, default=None, default_help: str = "%(default)s",
                per_run: bool = False) -> None:
    p.add_argument("--threads", type=positive_int, default=default, metavar="N",
                   help=f"torch CPU threads{' per run' if per_run else ''} (torch.set_num_threads; "
                        f"default: {default_help})")


def add_device(p: argparse.ArgumentParser, default_help: str = "the config's") -> None:
    p.add_argument("--device", type=device_name, default=None,
                   help=f"cpu, cuda or cuda:N (default: {default_help})")


def add_seed(p: argparse.ArgumentParser, default=None) -> None:
    p.add_argument("--seed", type=seed_int, default=default, metavar="N",
                   help=f"random seed, 0..{run_options.SEED_MAX}" + (" (default: %(default)s)" if isinstance(default, int)
                                                                     else ""))


def add_epochs(p: argparse.ArgumentParser, default=None) -> None:
    p.add_argument("--epochs", type=int, default=default, metavar="N", help="training epochs (default: the config's)")


def add_run_control(p: argparse.ArgumentParser, contents: str = "", default_out: Path | None = None,
                    resume: bool = False, progress: bool = False) -> None:
    """``--out`` (required without ``default_out``), ``--resume``, ``--quiet`` and ``--no-progress``."""
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=default_out, required=default_out is None, metavar="DIR",
                   help="output folder" + (" (default: %(default)s)" if default_out is not None else "")
                        + (f": {contents}" if contents else ""))
    if resume:
        g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g.add_argument("--quiet", action="store_true", help="less output: no progress bar and no per-epoch lines")
    if progress:
        g.add_argument("--no-progress", action="store_true",
                       help="no progress bar (it is off anyway without a TTY)")


def add_grid_control(p: argparse.ArgumentParser, unit: str, kept: str = "") -> None:
    """``--budget-minutes`` and ``--keep-checkpoints`` of a reproduction grid whose entries are ``unit``s."""
    g = p.add_argument_group("grid")
    g.add_argument("--budget-minutes", type=float, default=None, metavar="MIN",
                   help=f"start no new {unit} after this many minutes (finished {unit}s are kept; rerun to continue)")
    g.add_argument("--keep-checkpoints", action="store_true",
                   help=f"keep checkpoint.pt/best.pt of finished {unit}s (deleted by default{kept})")


def add_report_only(p: argparse.ArgumentParser, source: str) -> None:
    p.add_argument("--report-only", action="store_true", help=f"train nothing: rebuild the report from {source}")


def add_tasks(parser: argparse.ArgumentParser, tasks) -> None:
    """Subcommands of a command that takes a task (``train lm|nmt``, ``reproduce lm|repeat|nmt``): ``tasks`` is a
    list of (name, help, description or None, configure(parser), main(args)); ``run_task`` dispatches them."""
    sub = parser.add_subparsers(dest="task", metavar="TASK")
    for name, help_text, description, configure, main in tasks:
        p = sub.add_parser(name, help=help_text, **({"description": description} if description else {}))
        configure(p)
        p.set_defaults(_task_main=main)
    parser.set_defaults(_print_help=parser.print_help)


def run_task(args) -> int:
    """Run the task ``add_tasks`` wired, or print the help (exit 2) when none was named."""
    if getattr(args, "task", None) is None:
        args._print_help()
        return EXIT_BAD_INPUT
    return int(args._task_main(args) or 0)


def run_training(command: str, out, bad_input: tuple, run):
    """``run()`` a training call; returns (its result, None), or (None, exit code) after one line on stderr:
    bad input (``bad_input`` exceptions) exit 2, divergence exit 1, Ctrl-C exit 130 with how to resume."""
    from revbench.core.fixedpoint import FixedPointOverflowError

    try:
        return run(), None
    except bad_input as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"revbench {command}: error: {msg}", file=sys.stderr)
        return None, EXIT_BAD_INPUT
    except (FloatingPointError, FixedPointOverflowError) as exc:
        print(f"revbench {command}: training diverged: {exc}", file=sys.stderr)
        return None, EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\nrevbench {command}: interrupted; continue with the same command and --resume "
              f"(from the last checkpoint in {out})", file=sys.stderr)
        return None, 130

