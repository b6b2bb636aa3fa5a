"""`revbench train lm|nmt`: train one model.

``revbench train lm`` trains a language model (``revbench.tasks.lm.training``) under a named config
(``paper``, ``small``, ``tiny``; see ``revbench.tasks.lm.configs``) or a JSON config file, with any
training method of ``revbench.methods``; ``--resume`` continues from ``OUT/checkpoint.pt``.
``revbench train nmt`` is provided by ``revbench.cli.nmt`` (if installed in this checkout).
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
_UNSET = None   # argparse default for "not given": the config's value is kept


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


# flag -> (TrainConfig field, type, help)
LM_OVERRIDES = {
    "--layers": ("num_layers", int, "number of recurrent layers"),
    "--emb-size": ("emb_size", int, "embedding size (= last layer's size when tied)"),
    "--hidden-size": ("hidden_size", int, "hidden size of the inner layers"),
    "--batch-size": ("batch_size", int, "training batch size"),
    "--eval-batch-size": ("eval_batch_size", int, "validation batch size"),
    "--test-batch-size": ("test_batch_size", int, "test batch size"),
    "--bptt": ("bptt", int, "mean segment length (AWD variable length around it)"),
    "--epochs": ("epochs", int, "training epochs"),
    "--lr": ("lr", float, "SGD learning rate"),
    "--clip": ("clip", float, "gradient clipping (global norm)"),
    "--weight-decay": ("weight_decay", float, "SGD weight decay"),
    "--dropout-emb": ("dropout_emb", float, "embedding dropout (whole words)"),
    "--dropout-in": ("dropout_in", float, "locked dropout on the input"),
    "--dropout-h": ("dropout_h", float, "locked dropout between layers"),
    "--dropout-out": ("dropout_out", float, "locked dropout on the output"),
    "--weight-drop": ("weight_drop", float, "recurrent weight-drop (DropConnect)"),
    "--seed": ("seed", int, "random seed"),
    "--device": ("device", str, "cpu or cuda[:N]"),
    "--threads": ("threads", int, "torch CPU threads (torch.set_num_threads)"),
    "--max-steps": ("max_steps", int, "stop (with a checkpoint) after this many training steps in total"),
    "--log-interval": ("log_interval", int, "steps between progress records"),
    "--checkpoint-every-steps": ("checkpoint_every_steps", int, "also checkpoint every N steps"),
    "--checkpoint-every-minutes": ("checkpoint_every_minutes", float, "also checkpoint every N minutes"),
}


def configure_lm(p: argparse.ArgumentParser) -> None:
    from revbench.tasks.lm.configs import CONFIGS, DESCRIPTIONS

    p.add_argument("--config", default="small", choices=list(CONFIGS),
                   help="named configuration (default: %(default)s): "
                        + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))
    p.add_argument("--config-file", default=None,
                   help="JSON file of TrainConfig fields (as written by revbench reproduce); replaces --config")
    p.add_argument("--data", default=_UNSET, choices=["ptb", "wikitext-2", "synthetic"],
                   help="corpus (default: the config's, ptb for small/paper)")
    p.add_argument("--data-dir", default=_UNSET, help="data folder holding ptb/ and wikitext-2/ (default: $REVBENCH_DATA)")
    p.add_argument("--no-verify", action="store_true", help="skip the SHA256SUMS check (your own copy of the data)")
    p.add_argument("--cell", default=_UNSET, choices=["revgru", "revlstm", "nf-revgru", "nf-revlstm", "gru", "lstm"],
                   help="recurrent cell (default: the config's, revlstm)")
    p.add_argument("--max-forget-bits", type=forget_bits, default=_UNSET,
                   help="max bits forgotten per unit per step, 1..10 or 'none' (reversible cells; default 3)")
    p.add_argument("--method", default=_UNSET,
                   help="training method (revbench.methods: bptt, reversible, checkpoint, gruslys, bptt-fused; "
                        "default: reversible for reversible cells, bptt otherwise)")
    p.add_argument("--method-options", default=_UNSET, help="JSON object of the method's options, e.g. '{\"budget\": 0.1}'")
    for flag, (_, typ, what) in LM_OVERRIDES.items():
        p.add_argument(flag, type=typ, default=_UNSET, help=what)
    p.add_argument("--no-carry-state", action="store_true",
                   help="start every segment from a zero state instead of carrying it (no-forgetting cells, whose "
                        "additive state grows without bound on a continuous stream)")
    p.add_argument("--no-memory", action="store_true", help="do not meter a step per epoch, nor the final comparison")
    p.add_argument("--out", required=True, help="output folder: checkpoint.pt, best.pt, log.jsonl, result.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")


def lm_config_from_args(args):
    """TrainConfig from the parsed arguments (named config or --config-file, then explicit flags)."""
    import json

    from revbench.tasks.lm.configs import TrainConfig, get_config

    over = {}
    if args.data is not None:
        over["data"] = args.data
    if args.data_dir is not None:
        over["data_dir"] = args.data_dir
    if args.no_verify:
        over["verify"] = False
    if args.cell is not None:
        over["cell"] = args.cell
    if args.max_forget_bits is not None:
        over["max_forget_bits"] = None if args.max_forget_bits == "none" else args.max_forget_bits
    if args.method is not None:
        over["method"] = args.method
    if args.method_options is not None:
        from revbench.methods import parse_options

        over["method_options"] = parse_options(args.method_options)
    for flag, (fld, _, _) in LM_OVERRIDES.items():
        v = getattr(args, flag.lstrip("-").replace("-", "_"))
        if v is not None:
            over[fld] = v
    if args.no_carry_state:
        over["carry_state"] = False
    if args.no_memory:
        over["measure_memory"] = False
        over["final_memory"] = False
    if "method" not in over and "cell" in over:
        over["method"] = "reversible" if over["cell"].startswith(("rev", "nf-rev")) else "bptt"
    if args.config_file:
        try:
            with open(args.config_file, encoding="utf-8") as fh:
                base = json.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"config file {args.config_file!r} does not exist") from None
        except ValueError as exc:
            raise ValueError(f"config file {args.config_file!r} is not valid JSON: {exc}") from None
        return TrainConfig.from_dict({**base, **over}).validate()
    return get_config(args.config, **over)


def main_lm(args) -> int:
    from revbench.tasks.data import DataError
    from revbench.core.fixedpoint import FixedPointOverflowError
    from revbench.tasks.lm.training import CheckpointMismatchError, OutputExistsError, train

    try:
        cfg = lm_config_from_args(args)
        if cfg.data != "synthetic":
            from revbench.tasks.data import resolve_data_dir
            resolve_data_dir(cfg.data_dir)          # a clear error before any work
        res = train(cfg, args.out, resume=args.resume, quiet=args.quiet)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, DataError, CheckpointMismatchError,
            OutputExistsError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"revbench train lm: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FloatingPointError, FixedPointOverflowError) as exc:
        print(f"revbench train lm: training diverged: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\nrevbench train lm: interrupted; continue with the same command and --resume "
              f"(from the last checkpoint in {args.out})", file=sys.stderr)
        return 130
    if res.get("stopped"):
        print(f"revbench train lm: stopped at step {res['global_step']} (--max-steps); checkpoint in {args.out}")
    else:
        print(f"revbench train lm: valid ppl {res['valid_ppl']:.2f}, test ppl {res['test_ppl']:.2f}; "
              f"results in {args.out}/result.json")
    return 0


# ------------------------------------------------------------------------------------------- nmt
def _nmt_module():
    try:
        return importlib.import_module("revbench.cli.nmt")
    except ModuleNotFoundError as exc:
        if exc.name != "revbench.cli.nmt":
            raise
        return None


def configure_nmt(p: argparse.ArgumentParser, kind: str) -> None:
    """Delegate to revbench.cli.nmt's ``configure_<kind>`` (or ``configure``); note when it is missing."""
    mod = _nmt_module()
    fn = None if mod is None else (getattr(mod, f"configure_{kind}", None) or getattr(mod, "configure", None))
    if fn is None:
        # accept any arguments, so that the user gets "not available" rather than an argument error
        def swallow(args=None, namespace=None):
            ns = namespace if namespace is not None else argparse.Namespace()
            ns._nmt_missing, ns.rest = True, list(args or [])
            return ns, []

        p.parse_known_args = swallow
        return
    fn(p)
    p.set_defaults(_nmt_missing=False, _nmt_kind=kind)


def main_nmt(args, kind: str) -> int:
    mod = _nmt_module()
    fn = None if mod is None or getattr(args, "_nmt_missing", False) else \
        (getattr(mod, f"main_{kind}", None) or getattr(mod, "main", None))
    if fn is None:
        print(f"revbench {kind} nmt: not available in this checkout (module revbench.cli.nmt with "
              f"configure_{kind}/main_{kind} is missing)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not getattr(args, "_command", None):
        args._command = "revbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return int(fn(args) or 0)


# ------------------------------------------------------------------------------------------- protocol
def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="task", metavar="TASK")
    p = sub.add_parser("lm", help="train a language model (PTB, WikiText-2, synthetic)",
                       description="Train a language model AWD-style with any training method.")
    configure_lm(p)
    p.set_defaults(_task_main=main_lm)
    p = sub.add_parser("nmt", help="train a translation model (revbench.cli.nmt)")
    configure_nmt(p, "train")
    p.set_defaults(_task_main=lambda a: main_nmt(a, "train"))
    parser.set_defaults(_print_help=parser.print_help)


def main(args) -> int:
    if getattr(args, "task", None) is None:
        args._print_help()
        return EXIT_BAD_INPUT
    return int(args._task_main(args) or 0)
