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

from revbench.cli.options import (EXIT_BAD_INPUT, EXIT_FAILED, NMT_CORPORA, add_data_options, add_epochs,
                                  add_grid_control, add_model_options, add_overrides, add_run_control, add_seed,
                                  add_threads, command_line, count_int, finite_float, given, model_overrides,
                                  run_training, say_quiet, table_fields)

_UNSET = object()

# flag -> (NMTConfig field, type or choices, help); --epochs and --seed come from revbench.cli.options
NMT_OVERRIDES = {
    "--hidden-size": ("hidden_size", int, "hidden units per layer"),
    "--emb-size": ("emb_size", int, "embedding size"),
    "--batch-size": ("batch_size", int, "sentence pairs per batch"),
    "--layers": ("num_layers", int, "layers in the encoder and in the decoder"),
    "--lr": ("lr", float, "SGD learning rate (default: the paper's rate for the cell)"),
    "--dropout": ("dropout", float, "dropout rate"),
    "--beam-size": ("beam_size", int, "beam width of the beam-search test BLEU (default 5; greedy BLEU is "
                                      "always reported too)"),
    "--length-penalty": ("length_penalty", finite_float,
                         "ALPHA: beam search ranks hypotheses by log-probability / length**ALPHA (default 0: "
                         "the plain log-probability)"),
    "--min-freq": ("min_freq", int, "vocabulary: words seen at least this often"),
    "--max-train": ("max_train", int, "use only the first N training pairs"),
    "--save-every": ("save_every", count_int, "checkpoint every N steps (0: at epoch ends only)"),
    "--loss-norm": ("loss_norm", ["sents", "tokens"],
                    "divide the summed token loss by sentences (OpenNMT, default) or tokens"),
    "--dtype": ("dtype", ["float32", "float64"], "floating-point type of the model (default float32)"),
}
FIELDS = {"epochs": "epochs", "seed": "seed", **table_fields(NMT_OVERRIDES)}   # argparse dest -> NMTConfig field


def _common(parser: argparse.ArgumentParser, threads=None, threads_help: str = "torch's choice") -> None:
    parser.add_argument("--config", default="small", choices=["tiny", "small", "paper"],
                        help="named configuration (default: %(default)s): 'paper' = the paper's Multi30K setting "
                             "(H = emb = 300, 80 epochs), 'small' = CPU-sized (H = emb = 128, 10 epochs), "
                             "'tiny' = synthetic corpus, for smoke tests")
    add_threads(parser, threads, threads_help)
    add_epochs(parser, _UNSET)
    add_seed(parser, _UNSET)
    add_overrides(parser, NMT_OVERRIDES, _UNSET)


def configure_train(parser: argparse.ArgumentParser) -> None:
    """Arguments of `revbench train nmt`."""
    parser.description = ("Train one attention encoder-decoder on Multi30K English-to-German (or a synthetic corpus) "
                          "with any training method, then report its test BLEU, greedy and beam search.")
    _common(parser)
    add_data_options(parser, NMT_CORPORA, _UNSET, "multi30k; synthetic for config tiny")
    add_model_options(parser, _UNSET, "revgru, in the encoder and the decoder",
                      method_choices=["reversible", "bptt", "checkpoint", "gruslys", "torch-checkpoint", "revolve"],
                      method_note="; checkpoint, gruslys, torch-checkpoint and revolve recompute each side from "
                                  "stored states (revbench.models.seq2seq)")
    parser.add_argument("--context", default=_UNSET,
                        help="attention context: 'h:D', 'emb', 'emb+h:D' (default emb+h:20) or 'all'")
    add_run_control(parser, "checkpoint, results, hypotheses", resume=True, progress=True)


def main_train(args: argparse.Namespace) -> int:
    """`revbench train nmt`: train one model, print test BLEU; exit 0 on success."""
    import torch

    from revbench.tasks.datasets import DataError
    from revbench.tasks.nmt.config import make_config
    from revbench.tasks.nmt.train import CheckpointError, train

    if args.threads:
        torch.set_num_threads(args.threads)
    over = given(args, {**FIELDS, "data": "data", "context": "context"}, _UNSET)
    try:
        over.update(model_overrides(args, _UNSET))
    except ValueError as exc:
        print(f"revbench train nmt: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if "method" not in over and over.get("cell") in ("gru", "lstm"):
        over["method"] = "bptt"
    if over.get("cell") in ("gru", "lstm"):
        over.setdefault("max_forget_bits", None)
        over.setdefault("context", "all")
    def run():
        cfg = make_config(args.config, **over)
        return cfg, train(cfg, args.out, resume=args.resume, data_dir=args.data_dir, verify=not args.no_verify,
                          progress=False if args.no_progress or args.quiet else None, log=say_quiet(args.quiet),
                          device=getattr(args, "device", None) or "cpu")

    done, rc = run_training("train nmt", args.out, (ValueError, FileNotFoundError, DataError, CheckpointError), run)
    if rc is not None:
        return rc
    cfg, res = done
    print(f"revbench train nmt: done: test BLEU greedy {res['test_bleu_greedy']:.2f}, beam {cfg.beam_size} "
          f"{res['test_bleu_beam']:.2f}; results in {args.out / 'results.json'}")
    return 0


def configure_reproduce(parser: argparse.ArgumentParser) -> None:
    """Arguments of `revbench reproduce nmt`."""
    parser.description = ("Train the grid of Table 3 (cells x attention contexts x forgetting limits) and write "
                          "its table, records and report; finished points are kept, a rerun continues.")
    _common(parser, 1, "%(default)s, as reproduce lm, so runs can share cores")
    add_data_options(parser, NMT_CORPORA, verify=False)
    add_run_control(parser, "runs/<point>/, grid.json, README.md, index.html", default_out=Path("reports/nmt"))
    parser.add_argument("--points", default=None,
                        help="comma-separated grid points cell/context[/k] in the order to run, e.g. "
                             "'revgru/emb+h:20/3,gru/all' (default: the configuration's priority list)")
    parser.add_argument("--force", action="store_true", help="retrain points that already have results")
    add_grid_control(parser, "grid point")


def main_reproduce(args: argparse.Namespace) -> int:
    """`revbench reproduce nmt`: run the Table 3 grid, write the report; exit 0 when every point completed."""
    import torch

    from revbench.tasks.datasets import DataError
    from revbench.tasks.nmt.grid import GridPoint, reproduce
    from revbench.tasks.nmt.train import CheckpointError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        points = None if not args.points else [GridPoint.parse(p) for p in args.points.split(",") if p.strip()]
        command = getattr(args, "_command", None) or command_line()
        summary = reproduce(args.config, args.out, points=points, data_dir=args.data_dir,
                            budget_minutes=args.budget_minutes, overrides=given(args, FIELDS, _UNSET),
                            force=args.force, command=command, keep_checkpoints=args.keep_checkpoints,
                            log=say_quiet(args.quiet))
    except (ValueError, FileNotFoundError, DataError, CheckpointError) as exc:
        print(f"revbench reproduce nmt: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    done = sum(e["status"].startswith("completed") for e in summary["points"])
    print(f"revbench reproduce nmt: {done} of {len(summary['points'])} grid points completed; "
          f"report in {args.out / 'README.md'} and {args.out / 'index.html'}")
    return 0 if done == len(summary["points"]) else EXIT_FAILED


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
