"""`revbench profile`: where one language-model training step's time goes, per method (torch.profiler).

See ``revbench/measure/profile.py`` for how the step is timed and how ops are sorted into categories.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from revbench.cli.options import CELLS, EXIT_BAD_INPUT, EXIT_FAILED, forget_bits, positive_int

EPILOG = """\
Each method runs one step of the configuration (bptt-fused: nn.LSTM / nn.GRU's kernel on the ordinary
cell of the same family and width). The step is timed (median of --repeats interleaved steps after a
warm-up step), then run once more under torch.profiler; the ops' self times are sorted into
  cell matmuls        the cells' matrix products (the fused kernel's whole layer counts here)
  gates+fixed point   every other op of the step loop (gates, quantisation, int64 conversions, masks)
  buffer              the information buffer's push/pop and Algorithm 1 (buffered_mul / buffered_div)
  output+loss         output layer, cross-entropy and embedding, forward and backward
  Python overhead     the profiled step's wall time minus the ops' self time
with the ops called per time step. The profiled step runs min(T, --profile-steps) time steps (default 200):
per-time-step figures do not depend on T, the profiler's event list does.
--floor also times the matrix products each method needs per time step, alone and with the batch's rows
(bptt: forward, input gradient, weight gradient per weight; reversible: two forward products per cell weight),
and prints each method's floor beside its measured step and the fused step: the step if nothing else cost.
Presets: paper = RevLSTM 650/650, batch 20, T 70, vocab 10000; long = hidden 256, batch 16, T 1000,
vocab 2000 (explicit options override a preset).

exit status: 0 printed, 1 a step failed, 2 bad arguments (a size the model refuses, an unwritable --json)
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--preset", choices=["paper", "long"], default="paper",
                        help="the configuration the other options start from (default: %(default)s)")
    parser.add_argument("--cell", choices=CELLS, default=None, help="the model's cell (default: the preset's, revlstm)")
    parser.add_argument("--hidden-size", "--hidden", dest="hidden", metavar="N", type=positive_int, default=None, help="hidden size = embedding size")
    parser.add_argument("--batch-size", "--batch", dest="batch", metavar="N", type=positive_int, default=None, help="batch size")
    parser.add_argument("--seq-len", type=positive_int, default=None, help="segment length T")
    parser.add_argument("--vocab-size", "--vocab", dest="vocab", metavar="N", type=positive_int, default=None, help="vocabulary size")
    parser.add_argument("--max-forget-bits", type=forget_bits, default=None,
                        help="forgetting limit of reversible cells: 1..10 or none (default: the preset's, 3)")
    parser.add_argument("--method", action="append", default=None, metavar="NAME",
                        help="a method to profile; repeatable (default: bptt, reversible, bptt-fused)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch CPU threads (torch.set_num_threads; recorded; default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed steps per method (default: %(default)s)")
    parser.add_argument("--profile-steps", type=positive_int, default=200, metavar="N",
                        help="time steps of the profiled step: min(T, N) (the profiler keeps every op event; "
                             "default: %(default)s)")
    parser.add_argument("--floor", action="store_true",
                        help="also time the matrix products each method needs per time step alone (at the batch's "
                             "rows) and print each method's floor: its step if everything else were free")
    parser.add_argument("-o", "--output", "--json", dest="json", type=Path, default=None, metavar="FILE",
                        help="also write the result as JSON (written atomically)")


def _error(message: str, code: int) -> int:
    print(f"revbench profile: error: {message}", file=sys.stderr)
    return code


def main(args: argparse.Namespace) -> int:
    if args.json is not None and not args.json.parent.is_dir():
        return _error(f"--json {args.json}: folder {args.json.parent} does not exist", EXIT_BAD_INPUT)
    from revbench import methods
    from revbench.measure.harness import BenchConfig
    from revbench.measure.profile import DEFAULT_METHODS, PRESETS, format_profile, profile_step

    names = args.method or list(DEFAULT_METHODS)
    for name in names:
        if name not in methods.available():
            return _error(f"--method {name!r}: unknown; choose from {', '.join(methods.available())}", EXIT_BAD_INPUT)
    p = dict(PRESETS[args.preset])
    for key, value in (("cell", args.cell), ("hidden_size", args.hidden), ("batch_size", args.batch),
                       ("seq_len", args.seq_len), ("vocab_size", args.vocab)):
        if value is not None:
            p[key] = value
    if args.max_forget_bits is not None:
        p["max_forget_bits"] = None if args.max_forget_bits == "none" else args.max_forget_bits
    if p["cell"] not in ("revlstm", "revgru"):
        p["max_forget_bits"] = None
    cfg = BenchConfig(emb_size=p["hidden_size"], **p)
    try:
        if cfg.reversible and cfg.hidden_size % 2:
            raise ValueError(f"reversible cells need an even hidden size, got --hidden {cfg.hidden_size}")
        result = profile_step(cfg, names, repeats=args.repeats, threads=args.threads,
                              profile_steps=args.profile_steps, floor=args.floor)
    except (ValueError, TypeError) as exc:
        return _error(str(exc).splitlines()[0], EXIT_BAD_INPUT)
    except RuntimeError as exc:
        return _error(f"a step failed: {str(exc).splitlines()[0]}", EXIT_FAILED)
    print(format_profile(result))
    if args.json is not None:
        from revbench.util.atomic import atomic_write_json
        try:
            atomic_write_json(result, args.json)
        except OSError as exc:
            return _error(f"--json {args.json}: {exc.strerror or exc}", EXIT_BAD_INPUT)
        print(f"wrote {args.json}")
    return 0
