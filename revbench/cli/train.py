"""`revbench train lm|nmt`: train one model.

``revbench train lm`` trains a language model (``revbench.tasks.lm.training``) under a named config
(``paper``, ``small``, ``tiny``; see ``revbench.tasks.lm.configs``) or a JSON config file, with any
training method of ``revbench.methods``; ``--resume`` continues from ``OUT/checkpoint.pt``.
``revbench train nmt`` is ``revbench.cli.nmt``'s ``configure_train``/``main_train`` with ``--device``. Both refuse a
``--device`` this machine does not have (exit 2, one line) before anything is written.
"""
from __future__ import annotations

import argparse
import sys

from revbench.cli import nmt
from revbench.cli.options import (EXIT_BAD_INPUT, LM_CORPORA, add_data_options, add_device, add_tasks,
                                  add_epochs, add_model_options, add_overrides, add_run_control, add_seed,
                                  add_threads, count_int, given, model_overrides, non_negative_float,
                                  run_task, run_training, table_fields)

_UNSET = None   # argparse default for "not given": the config's value is kept

# flag -> (TrainConfig field, type, help); --epochs, --seed, --device and --threads come from revbench.cli.options
LM_OVERRIDES = {
    "--layers": ("num_layers", int, "number of recurrent layers"),
    "--emb-size": ("emb_size", int, "embedding size (= last layer's size when tied)"),
    "--hidden-size": ("hidden_size", int, "hidden size of the inner layers"),
    "--batch-size": ("batch_size", int, "training batch size"),
    "--eval-batch-size": ("eval_batch_size", int, "validation batch size"),
    "--test-batch-size": ("test_batch_size", int, "test batch size"),
    "--bptt": ("bptt", int, "mean segment length (AWD variable length around it)"),
    "--lr": ("lr", float, "SGD learning rate"),
    "--clip": ("clip", float, "gradient clipping (global norm)"),
    "--weight-decay": ("weight_decay", float, "SGD weight decay"),
    "--dropout-emb": ("dropout_emb", float, "embedding dropout (whole words)"),
    "--dropout-in": ("dropout_in", float, "locked dropout on the input"),
    "--dropout-h": ("dropout_h", float, "locked dropout between layers"),
    "--dropout-out": ("dropout_out", float, "locked dropout on the output"),
    "--weight-drop": ("weight_drop", float, "recurrent weight-drop (DropConnect)"),
    "--max-steps": ("max_steps", int, "stop (with a checkpoint) after this many training steps in total"),
    "--log-interval": ("log_interval", int, "steps between progress records"),
    "--checkpoint-every-steps": ("checkpoint_every_steps", count_int, "also checkpoint every N steps (0: off)"),
    "--checkpoint-every-minutes": ("checkpoint_every_minutes", non_negative_float,
                                   "also checkpoint every N minutes"),
}
RUN_FIELDS = {"epochs": "epochs", "seed": "seed", "device": "device", "threads": "threads"}   # dest -> field


def config_descriptions() -> dict:
    """One line per named LM config for ``--help``; the small config's sizes are read from the config itself."""
    from revbench.tasks.lm.configs import CONFIGS, DESCRIPTIONS

    small = CONFIGS["small"]
    return {**DESCRIPTIONS,
            "small": (f"CPU-sized: emb = hidden = {small['hidden_size']} tied, batch {small['batch_size']}, bptt "
                      f"{small['bptt']}, {small['epochs']} epochs, light dropout")}


def configure_lm(p: argparse.ArgumentParser) -> None:
    from revbench.tasks.lm.configs import CONFIGS

    p.add_argument("--config", default="small", choices=list(CONFIGS),
                   help="named configuration (default: %(default)s): "
                        + "; ".join(f"{k}: {v}" for k, v in config_descriptions().items()))
    p.add_argument("--config-file", default=None,
                   help="JSON file of TrainConfig fields (as written by revbench reproduce); replaces --config")
    add_data_options(p, LM_CORPORA, _UNSET, "the config's, ptb for small/paper")
    add_model_options(p, _UNSET, "the config's, revlstm",
                      method_note="; one of revbench.methods: bptt, reversible, checkpoint, gruslys, revolve, "
                                  "torch-checkpoint, bptt-fused, compile-budget")
    add_epochs(p, _UNSET)
    add_seed(p, _UNSET)
    add_device(p)
    add_threads(p, _UNSET, "the config's")
    add_overrides(p, LM_OVERRIDES, _UNSET)
    p.add_argument("--no-carry-state", action="store_true",
                   help="start every segment from a zero state instead of carrying it (no-forgetting cells, whose "
                        "additive state grows without bound on a continuous stream)")
    p.add_argument("--no-memory", action="store_true", help="do not meter a step per epoch, nor the final comparison")
    add_run_control(p, "checkpoint.pt, best.pt, log.jsonl, result.json", resume=True, progress=True)


def lm_config_from_args(args):
    """TrainConfig from the parsed arguments (named config or --config-file, then explicit flags)."""
    import json

    from revbench.tasks.lm.configs import TrainConfig, get_config

    over = given(args, {"data": "data", "data_dir": "data_dir"}, _UNSET)
    if args.no_verify:
        over["verify"] = False
    over.update(model_overrides(args, _UNSET))
    over.update(given(args, {**table_fields(LM_OVERRIDES), **RUN_FIELDS}, _UNSET))
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
        except ValueError as exc:           # bad JSON, or bytes that are not UTF-8
            raise ValueError(f"config file {args.config_file!r} is not valid JSON: {exc}") from None
        except OSError as exc:              # a folder, no permission, ...
            raise ValueError(f"config file {args.config_file!r} cannot be read: {exc.strerror or exc}") from None
        if not isinstance(base, dict):
            raise ValueError(f"config file {args.config_file!r} holds a JSON {type(base).__name__}, not an object "
                             "of TrainConfig fields")
        try:
            return TrainConfig.from_dict({**base, **over}).validate()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config file {args.config_file!r}: {exc}") from None
    return get_config(args.config, **over)


def main_lm(args) -> int:
    from revbench.tasks.datasets import DataError, resolve_data_dir
    from revbench.tasks.lm.checkpoints import CheckpointMismatchError, OutputExistsError
    from revbench.tasks.lm.training import train

    def run():
        cfg = lm_config_from_args(args)
        _refuse_absent_device(cfg.device)
        if cfg.data != "synthetic":
            resolve_data_dir(cfg.data_dir)          # a clear error before any work
        return train(cfg, args.out, resume=args.resume, quiet=args.quiet,
                     progress=False if args.no_progress else None)

    res, rc = run_training("train lm", args.out, (ValueError, FileNotFoundError, FileExistsError, KeyError,
                                                  DataError, CheckpointMismatchError, OutputExistsError), run)
    if rc is not None:
        return rc
    if res.get("stopped"):
        print(f"revbench train lm: stopped at step {res['global_step']} (--max-steps); checkpoint in {args.out}")
    else:
        print(f"revbench train lm: valid ppl {res['valid_ppl']:.2f}, test ppl {res['test_ppl']:.2f}; "
              f"results in {args.out}/result.json")
    return 0


def _refuse_absent_device(device: str | None) -> None:
    """ValueError (exit 2 through ``run_training``) when ``device`` is not on this machine."""
    from revbench.measure.cuda import device_problem

    problem = device_problem(device or "cpu")
    if problem:
        raise ValueError(f"--device: {problem}")


def configure_nmt(p: argparse.ArgumentParser) -> None:
    nmt.configure_train(p)
    add_device(p, "cpu")


def main_nmt(args) -> int:
    try:
        _refuse_absent_device(getattr(args, "device", None))
    except ValueError as exc:
        print(f"revbench train nmt: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return nmt.main_train(args)


# ------------------------------------------------------------------------------------------- protocol
def configure(parser: argparse.ArgumentParser) -> None:
    add_tasks(parser, [
        ("lm", "train a language model (PTB, WikiText-2, synthetic)",
         "Train a language model AWD-style with any training method.", configure_lm, main_lm),
        ("nmt", "train an attention encoder-decoder (Multi30K, synthetic)", None, configure_nmt, main_nmt),
    ])


main = run_task
