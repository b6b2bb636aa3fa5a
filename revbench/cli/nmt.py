"""`revbench train nmt` and `revbench reproduce nmt`: argument parsing and entry points.

``configure_train(parser)`` / ``main_train(args)`` and ``configure_reproduce(parser)`` /
``main_reproduce(args)`` follow the subcommand protocol of ``revbench.cli`` (``configure`` adds arguments,
``main`` returns the exit status). Heavy imports (torch) happen inside ``main_*``. The module also runs on
its own: ``python -m revbench.cli.nmt train ...`` / ``python -m revbench.cli.nmt reproduce ...``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from revbench.cli.train import forget_bits

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _forget_bits(text: str):
    """``revbench train lm``'s parser of the limit, with 'none' as None (this CLI marks "not given" otherwise)."""
    k = forget_bits(text)
    return None if k == "none" else k


_UNSET = object()


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="small", choices=["tiny", "small", "paper"],
                        help="named configuration (default: %(default)s): 'paper' = the paper's Multi30K setting "
                             "(H = emb = 300, 80 epochs), 'small' = CPU-sized (H = emb = 128, 3 epochs), "
                             "'tiny' = synthetic corpus, for smoke tests")
    parser.add_argument("--data-dir", default=None,
                        help="data folder holding multi30k/ (default: $REVBENCH_DATA)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (torch.set_num_threads); default: torch's choice")
    for flag, typ, what in (("--epochs", int, "training epochs"), ("--hidden-size", int, "hidden units per layer"),
                            ("--emb-size", int, "embedding size"), ("--batch-size", int, "sentence pairs per batch"),
                            ("--layers", int, "layers in the encoder and in the decoder"),
                            ("--lr", float, "SGD learning rate (default: the paper's rate for the cell)"),
                            ("--dropout", float, "dropout rate"), ("--beam-size", int, "beam size for test BLEU"),
                            ("--length-penalty", float, "beam: rank by log-prob / length**alpha"),
                            ("--min-freq", int, "vocabulary: words seen at least this often"),
                            ("--max-train", int, "use only the first N training pairs"),
                            ("--save-every", int, "checkpoint every N steps (0: at epoch ends only)"),
                            ("--seed", int, "random seed")):
        parser.add_argument(flag, type=typ, default=_UNSET, help=what)
    parser.add_argument("--loss-norm", choices=["sents", "tokens"], default=_UNSET,
                        help="divide the summed token loss by sentences (OpenNMT, default) or tokens")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=_UNSET)


_FIELD = {"epochs": "epochs", "hidden_size": "hidden_size", "emb_size": "emb_size", "batch_size": "batch_size",
          "layers": "num_layers", "lr": "lr", "dropout": "dropout", "beam_size": "beam_size",
          "length_penalty": "length_penalty", "min_freq": "min_freq", "max_train": "max_train",
          "save_every": "save_every", "seed": "seed", "loss_norm": "loss_norm", "dtype": "dtype"}


def _overrides(args, extra=()) -> dict:
    out = {}
    for a, f in list(_FIELD.items()) + list(extra):
        v = getattr(args, a, _UNSET)
        if v is not _UNSET:
            out[f] = v
    return out


def configure_train(parser: argparse.ArgumentParser) -> None:
    """Arguments of `revbench train nmt`."""
    parser.add_argument("--data", default=_UNSET, choices=["multi30k", "synthetic"],
                        help="corpus (default: multi30k; synthetic for config tiny)")
    parser.add_argument("--cell", default=_UNSET,
                        choices=["revgru", "revlstm", "nf-revgru", "nf-revlstm", "gru", "lstm"],
                        help="recurrent cell of encoder and decoder (default: revgru)")
    parser.add_argument("--context", default=_UNSET,
                        help="attention context: 'h:D', 'emb', 'emb+h:D' (default emb+h:20) or 'all'")
    parser.add_argument("--max-forget-bits", type=_forget_bits, default=_UNSET,
                        help="forgetting limit k in bits per unit and step (1-10) or 'none' (default 3)")
    parser.add_argument("--method", default=_UNSET, choices=["reversible", "bptt", "checkpoint", "gruslys"],
                        help="training method (default: reversible for reversible cells, else bptt); checkpoint "
                             "and gruslys recompute each side from stored states (revbench.models.seq2seq)")
    parser.add_argument("--method-options", default=_UNSET,
                        help="JSON object of the method's options, e.g. '{\"segments\": 4}' (checkpoint) or "
                             "'{\"budget\": 0.1, \"policy\": \"mixed\"}' (gruslys)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (checkpoint, results, hypotheses)")
    parser.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway without a TTY)")
    _common(parser)


def main_train(args: argparse.Namespace) -> int:
    """`revbench train nmt`: train one model, print test BLEU; exit 0 on success."""
    import torch

    from revbench.tasks.data import DataError
    from revbench.tasks.nmt.train import CheckpointError, make_config, train

    if args.threads:
        torch.set_num_threads(args.threads)
    over = _overrides(args, (("data", "data"), ("cell", "cell"), ("context", "context"),
                             ("max_forget_bits", "max_forget_bits"), ("method", "method")))
    if getattr(args, "method_options", _UNSET) is not _UNSET:
        from revbench.methods import parse_options

        try:
            over["method_options"] = parse_options(args.method_options)
        except ValueError as exc:
            print(f"revbench train nmt: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if "method" not in over and over.get("cell") in ("gru", "lstm"):
        over["method"] = "bptt"
    if over.get("cell") in ("gru", "lstm"):
        over.setdefault("max_forget_bits", None)
        over.setdefault("context", "all")
    try:
        cfg = make_config(args.config, **over)
        res = train(cfg, args.out, resume=args.resume, data_dir=args.data_dir,
                    progress=False if args.no_progress else None)
    except (ValueError, FileNotFoundError, DataError, CheckpointError) as exc:
        print(f"revbench train nmt: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"revbench train nmt: done: test BLEU greedy {res['test_bleu_greedy']:.2f}, beam {cfg.beam_size} "
          f"{res['test_bleu_beam']:.2f}; results in {args.out / 'results.json'}")
    return 0


def configure_reproduce(parser: argparse.ArgumentParser) -> None:
    """Arguments of `revbench reproduce nmt`."""
    parser.add_argument("--out", type=Path, default=Path("reports/nmt"),
                        help="output folder (default: %(default)s): runs/<point>/, grid.json, README.md, index.html")
    parser.add_argument("--points", default=None,
                        help="comma-separated grid points cell/context[/k] in the order to run, e.g. "
                             "'revgru/emb+h:20/3,gru/all' (default: the configuration's priority list)")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="start no new grid point after this many minutes (finished points are kept)")
    parser.add_argument("--force", action="store_true", help="retrain points that already have results")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each completed point's checkpoint.pt/best.pt (deleted by default)")
    _common(parser)


def main_reproduce(args: argparse.Namespace) -> int:
    """`revbench reproduce nmt`: run the Table 3 grid, write the report; exit 0 when every point completed."""
    import torch

    from revbench.tasks.data import DataError
    from revbench.tasks.nmt.train import CheckpointError, GridPoint, reproduce

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        points = None if not args.points else [GridPoint.parse(p) for p in args.points.split(",") if p.strip()]
        command = getattr(args, "_command", None) or "revbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        summary = reproduce(args.config, args.out, points=points, data_dir=args.data_dir,
                            budget_minutes=args.budget_minutes, overrides=_overrides(args), force=args.force,
                            command=command, keep_checkpoints=args.keep_checkpoints)
    except (ValueError, FileNotFoundError, DataError, CheckpointError) as exc:
        print(f"revbench reproduce nmt: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    done = sum(e["status"].startswith("completed") for e in summary["points"])
    print(f"revbench reproduce nmt: {done} of {len(summary['points'])} grid points completed; "
          f"report in {args.out / 'README.md'} and {args.out / 'index.html'}")
    return 0 if done == len(summary["points"]) else EXIT_FAILED


# the generic subcommand protocol, for a dispatcher that expects configure/main per kind
configure = configure_train
main = main_train


def _standalone(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m revbench.cli.nmt")
    sub = parser.add_subparsers(dest="what", required=True)
    configure_train(sub.add_parser("train", help="train one NMT model"))
    configure_reproduce(sub.add_parser("reproduce", help="run the NMT Table 3 grid"))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._argv = argv[1:]
    args._command = "python -m revbench.cli.nmt " + " ".join(shlex.quote(a) for a in argv)
    return main_train(args) if args.what == "train" else main_reproduce(args)


if __name__ == "__main__":
    sys.exit(_standalone())
