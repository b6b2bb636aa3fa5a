"""Language-model training (AWD-LSTM style) with any training method, checkpoints, resume and logs.

``train(cfg, out_dir, resume=False)`` trains ``RNNLM`` on PTB / WikiText-2 / the synthetic corpus:

- training: the stream is cut into ``batch_size`` columns (``revbench.tasks.data.batchify``) and into
  AWD-LSTM segments of variable length around ``bptt`` (``revbench.tasks.data.lm_segments``); the hidden
  state is carried from one segment to the next (reset at each epoch); each segment is one step of
  the chosen method (``revbench.methods.get(cfg.method).step``); then gradient clipping (global norm
  ``clip``) and SGD with weight decay, the learning rate scaled by ``seq_len / bptt`` for that
  segment (as AWD-LSTM does);
- after each epoch: validation perplexity; when it did not improve, lr /= ``lr_decay`` (4); the
  best model is kept in ``best.pt``;
- evaluation (``evaluate``): ``model.eval()`` (no dropout), forward only through
  ``Segment.advance(grad=False)`` under ``torch.no_grad``, fixed segment length ``bptt``, state
  carried; perplexity = exp(total cross-entropy / tokens);
- at the end: test perplexity of the best model; ``result.json``.

Files in ``out_dir``: ``log.jsonl`` (one JSON object per line: ``"event"`` is ``"start"``,
``"progress"`` every ``log_interval`` steps, ``"epoch"`` after each epoch, ``"end"``),
``checkpoint.pt`` (model, optimiser, epoch, step in epoch, RNG states, carried hidden state, lr,
best validation perplexity, running averages, log offset), ``best.pt`` and ``result.json``. Every
file is written to a temporary file and renamed into place (``os.replace``), so a crash never
corrupts the last good file. ``resume=True`` continues exactly where the checkpoint stopped: same
segments, same dropout masks, bitwise the same parameters as an uninterrupted run.

Memory figures per epoch (in the ``"epoch"`` records): the paper-style ``saving_actual`` /
``saving_ideal`` / ``buffer_efficiency`` aggregated over the epoch's steps as ratios of sums
(sum of baseline bits / sum of buffer bits, i.e. token-weighted), and the activation peak of one
metered training step per epoch (``revbench.measure.memory``: the live-tensor meter on CPU, the CUDA
allocator on a GPU). ``result.json`` adds ``final_memory``: one segment of the trained model
stepped by ``bptt`` and by the run's method with the same dropout masks, and their peak ratio
(``allocator_saving``).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from revbench.tasks import data as lmdata
from revbench import methods
from revbench.measure import memory
from revbench.util.atomic import atomic_write
from revbench.tasks.lm.configs import RUN_CONTROL_FIELDS, TrainConfig
from revbench.models.lm import RNNLM
from revbench.models.segment import Segment

CHECKPOINT_FORMAT = "revbench.lm-checkpoint/1"
RESULT_FORMAT = "revbench.lm-result/1"
_STAT_SUMS = ("state_bits_baseline", "buffer_bits_actual", "buffer_bits_ideal")


class CheckpointMismatchError(ValueError):
    """``--resume`` found a checkpoint made with a different configuration."""


class OutputExistsError(FileExistsError):
    """The output folder already holds a run and ``resume`` was not asked for."""


# ------------------------------------------------------------------------------------------- files
def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace`` onto ``path``.

    If anything fails (a crash, a full disk) ``path`` keeps its previous content and the temporary
    file is removed.
    """
    atomic_write(path, lambda fh: torch.save(obj, fh), binary=True, fsync=True)


def atomic_write_json(obj, path: Path) -> None:
    def write(fh):
        json.dump(obj, fh, indent=1, sort_keys=True, default=_json_default)
        fh.write("\n")
    atomic_write(path, write)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(x):
    """JSON has no inf/nan: map them to None (and keep ints/floats otherwise)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a revbench language-model checkpoint")
    return ckpt


def read_log(path: Path) -> list[dict]:
    """All records of a ``log.jsonl``."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ------------------------------------------------------------------------------------------- pieces
def load_data(cfg: TrainConfig) -> lmdata.Corpus:
    """The corpus of ``cfg`` (PTB / WikiText-2 from the data directory, or the synthetic corpus)."""
    if cfg.data == "synthetic":
        return lmdata.load_corpus("synthetic", vocab_size=cfg.synthetic_vocab, train_tokens=cfg.synthetic_tokens,
                                  seed=cfg.seed)
    return lmdata.load_corpus(cfg.data, cfg.data_dir, verify=cfg.verify)


def build_model(cfg: TrainConfig, vocab_size: int) -> RNNLM:
    return RNNLM(vocab_size, cfg.emb_size, cfg.layer_sizes(), cfg.num_layers, cell=cfg.cell,
                 max_forget_bits=cfg.max_forget_bits if cfg.reversible else None,
                 dropout_emb=cfg.dropout_emb, dropout_in=cfg.dropout_in, dropout_h=cfg.dropout_h,
                 dropout_out=cfg.dropout_out, weight_drop=cfg.weight_drop, tie_weights=cfg.tie_weights,
                 init_range=cfg.init_range)


@torch.no_grad()
def evaluate(model: RNNLM, source: torch.Tensor, bptt: int, carry_state: bool = True) -> dict:
    """Perplexity of ``model`` on a batchified (N, B) stream: eval mode, forward only, state carried from
    segment to segment (or reset to zero for each segment with ``carry_state=False``).

    Returns ``{"loss": mean cross-entropy per token (nats), "ppl": exp(loss), "tokens": count}``.
    """
    was_training = model.training
    model.eval()
    try:
        state = model.init_state(source.size(1))
        total, tokens = 0.0, 0
        for inputs, targets in lmdata.lm_segments(source, bptt, variable=False):
            seg = Segment(model, inputs, targets)
            carry = seg.start(state if carry_state else model.init_state(source.size(1)))
            seg_loss = 0.0
            for t in range(seg.T):
                carry, loss_t = seg.advance(t, carry, grad=False)
                seg_loss += float(loss_t)
            total += seg_loss * seg.n_tokens
            tokens += seg.n_tokens
            state = seg.final_state(carry)
    finally:
        model.train(was_training)
    loss = total / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": tokens}


def measure_step(model, method, inputs, targets, state, seed: int, device: str) -> dict:
    """Meter one step of ``method`` (grads already allocated, zeroed in place; masks from ``seed``).

    Returns the record's memory figures (``peak_bytes``, ``live_peak_bytes``, ...) and the step's
    paper-style stats. Parameter gradients are left zeroed; the RNG state is restored afterwards.
    """
    rng = torch.get_rng_state()
    try:
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()
        torch.manual_seed(seed)
        outs = []
        figures = memory.measure(lambda: outs.append(method.step(model, inputs, targets, state)),
                                 memory.default_meters(device, list(model.parameters())))
        stats = outs[0].stats
        outs.clear()
        for p in model.parameters():
            p.grad.zero_()
    finally:
        torch.set_rng_state(rng)
    rec = {k: v for k, v in memory.peak_figures(figures).items()}
    for k in ("live_peak_bytes", "cuda_peak_allocated_bytes", "rss_peak_delta_bytes", "saved_bytes"):
        rec[k] = figures.get(k)
    for k in ("saving_actual", "saving_ideal", "buffer_efficiency", "state_bits_baseline", "buffer_bits_actual",
              "buffer_bits_ideal"):
        rec[k] = _finite(stats.get(k)) if k.startswith(("saving", "buffer_eff")) else stats.get(k)
    return rec


def compare_memory(model, method_name: str, method_options: dict, inputs, targets, seed: int, device: str) -> dict:
    """``bptt`` and ``method_name`` on the same segment of the same model with the same dropout masks.

    Returns ``{"segment": {T, B}, "bptt": figures, method_name: figures, "allocator_saving": bptt peak /
    method peak}`` (the saving is None for ordinary cells, whose method is bptt itself).
    """
    was = model.training
    model.train()
    try:
        state = model.init_state(inputs.size(1))
        out = {"segment": {"seq_len": int(inputs.size(0)), "batch_size": int(inputs.size(1))}}
        out["bptt"] = measure_step(model, methods.get("bptt"), inputs, targets, state, seed, device)
        if method_name != "bptt":
            out[method_name] = measure_step(model, methods.get(method_name, **method_options), inputs, targets,
                                            state, seed, device)
            a, b = out["bptt"].get("peak_bytes"), out[method_name].get("peak_bytes")
            out["allocator_saving"] = a / b if a and b else None
        else:
            out["allocator_saving"] = None
        out["method"] = method_name
    finally:
        model.train(was)
    return out


# ------------------------------------------------------------------------------------------- trainer
class _Bar:
    """tqdm when wanted and attached to a terminal; otherwise nothing."""

    def __init__(self, total, initial, desc, enabled):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="seg", leave=False, dynamic_ncols=True)

    def update(self, **postfix):
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _new_epoch_acc() -> dict:
    return {"loss_sum": 0.0, "tokens": 0, "steps": 0, "time_s": 0.0,
            **{k: 0.0 for k in _STAT_SUMS}, "with_buffer_steps": 0, "memory": None}


def _new_interval_acc() -> dict:
    return {"loss_sum": 0.0, "tokens": 0, "steps": 0, "time_s": 0.0}


class Trainer:
    """One training run. Use :func:`train` unless you need the pieces (tests drive ``max_steps``)."""

    def __init__(self, cfg: TrainConfig, out_dir, resume: bool = False, quiet: bool = False,
                 progress: bool | None = None):
        self.cfg = cfg.validate()
        self.out = Path(out_dir)
        self.resume = resume
        self.quiet = quiet
        self.progress = (not quiet and sys.stderr.isatty()) if progress is None else progress
        self.ckpt_path = self.out / "checkpoint.pt"
        self.best_path = self.out / "best.pt"
        self.log_path = self.out / "log.jsonl"
        self.result_path = self.out / "result.json"

    # ------------------------------------------------------------------ setup
    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    def _setup(self):
        cfg = self.cfg
        if cfg.threads and cfg.threads != torch.get_num_threads():
            torch.set_num_threads(cfg.threads)
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} was asked for but torch sees no CUDA device")
        self.method = methods.get(cfg.method, **cfg.method_options)
        self.corpus = load_data(cfg)
        dev = torch.device(cfg.device)
        self.train_data = lmdata.batchify(self.corpus.train, cfg.batch_size).to(dev)
        self.valid_data = lmdata.batchify(self.corpus.valid, cfg.eval_batch_size).to(dev)
        self.test_data = lmdata.batchify(self.corpus.test, cfg.test_batch_size).to(dev)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.corpus.vocab_size).to(dev)
        self.params = list(self.model.parameters())
        self.opt = torch.optim.SGD(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.seg_gen = torch.Generator().manual_seed(cfg.seed + 1)

    def _fresh_state(self):
        self.epoch, self.step_in_epoch, self.global_step = 1, 0, 0
        self.lr = self.cfg.lr
        self.best_valid_ppl, self.best_epoch = math.inf, None
        self.history: list[dict] = []
        self.epoch_gen_state = self.seg_gen.get_state()
        self.hidden = self.model.init_state(self.cfg.batch_size)
        self.epoch_acc, self.interval_acc = _new_epoch_acc(), _new_interval_acc()
        self.elapsed_before = 0.0
        self.finished = False

    def _check_compatible(self, saved: dict) -> None:
        now = self.cfg.to_dict()
        diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in now
                 if k not in RUN_CONTROL_FIELDS and saved.get(k) != now[k]]
        if diffs:
            raise CheckpointMismatchError(
                f"the checkpoint in {str(self.out)!r} was made with a different configuration ("
                + "; ".join(diffs) + "): use another --out folder, or drop --resume after removing it")

    def _restore(self, ckpt: dict) -> None:
        self._check_compatible(ckpt["config"])
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.epoch, self.step_in_epoch, self.global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
        self.lr = ckpt["lr"]
        self.best_valid_ppl, self.best_epoch = ckpt["best_valid_ppl"], ckpt["best_epoch"]
        self.history = ckpt["history"]
        self.epoch_gen_state = ckpt["segment_gen_state"]
        dev = torch.device(self.cfg.device)
        self.hidden = [tuple(p.to(dev) for p in layer) for layer in ckpt["hidden"]]
        self.epoch_acc, self.interval_acc = ckpt["epoch_acc"], ckpt["interval_acc"]
        self.elapsed_before = ckpt["elapsed_s"]
        self.finished = ckpt.get("finished", False)
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        # drop log lines written after this checkpoint (a crash between checkpoint and log would duplicate them)
        if self.log_path.exists() and self.log_path.stat().st_size > ckpt["log_offset"]:
            with open(self.log_path, "r+b") as fh:
                fh.truncate(ckpt["log_offset"])

    def _log(self, record: dict) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=_json_default) + "\n")

    def _log_offset(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def save_checkpoint(self) -> None:
        ckpt = {
            "format": CHECKPOINT_FORMAT, "config": self.cfg.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step, "lr": self.lr, "best_valid_ppl": self.best_valid_ppl,
            "best_epoch": self.best_epoch, "history": self.history, "segment_gen_state": self.epoch_gen_state,
            "hidden": [tuple(p.detach().cpu() for p in layer) for layer in self.hidden],
            "epoch_acc": self.epoch_acc, "interval_acc": self.interval_acc, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "log_offset": self._log_offset(), "elapsed_s": self._elapsed(), "finished": self.finished,
        }
        atomic_save(ckpt, self.ckpt_path)
        self._last_ckpt_time = time.monotonic()
        self._last_ckpt_step = self.global_step

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self._t_start)

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        """Train (or continue) to ``cfg.epochs`` (or ``cfg.max_steps``); return the result dict
        (``{"stopped": "max_steps", ...}`` when stopped early by ``max_steps``). ``cfg.threads`` applies
        during the run only (torch's thread count is restored afterwards)."""
        threads = torch.get_num_threads()
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.resume and (self.ckpt_path.exists() or self.result_path.exists()):
            raise OutputExistsError(f"{str(self.out)!r} already holds a training run (checkpoint.pt/result.json): "
                                    "pass --resume to continue it, or choose another --out folder")
        self._setup()
        resumed = self.resume and self.ckpt_path.exists()
        if resumed:
            self._fresh_state()
            self._restore(load_checkpoint(self.ckpt_path))
        else:
            self._fresh_state()
            if self.log_path.exists():
                self.log_path.unlink()
        self._t_start = time.monotonic()
        self._last_ckpt_time, self._last_ckpt_step = time.monotonic(), self.global_step
        cfg = self.cfg
        self._log({"event": "start", "resumed": resumed, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                   "global_step": self.global_step, "config": cfg.to_dict(), "vocab_size": self.corpus.vocab_size,
                   "parameters": sum(p.numel() for p in self.model.parameters()),
                   "environment": memory.environment_info(cfg.device), "time": time.time()})
        self._say(f"revbench train: {cfg.data} {cfg.cell} L{cfg.num_layers} {cfg.layer_sizes()} "
                  f"k={cfg.max_forget_bits if cfg.reversible else '-'} method={cfg.method} -> {self.out}"
                  + (f" (resumed at epoch {self.epoch}, step {self.step_in_epoch})" if resumed else ""))
        if self.finished and self.epoch > cfg.epochs and self.result_path.exists():
            self._say("already finished; result.json is up to date")
            with open(self.result_path, encoding="utf-8") as fh:
                return json.load(fh)
        while self.epoch <= cfg.epochs:
            stopped = self._train_epoch()
            if stopped:
                self.save_checkpoint()
                self._say(f"stopped after {self.global_step} steps (max_steps); checkpoint saved")
                return {"stopped": "max_steps", "global_step": self.global_step, "epoch": self.epoch,
                        "step_in_epoch": self.step_in_epoch}
            self._end_epoch()
        return self._finish()

    def _epoch_segments(self):
        self.seg_gen.set_state(self.epoch_gen_state)
        return list(lmdata.lm_segments(self.train_data, self.cfg.bptt, variable=self.cfg.variable_bptt,
                                       generator=self.seg_gen))

    def _train_epoch(self) -> bool:
        cfg = self.cfg
        segments = self._epoch_segments()
        self.model.train()
        measure_at = min(1, len(segments) - 1)     # the 2nd step: gradients already allocated
        bar = _Bar(len(segments), self.step_in_epoch, f"epoch {self.epoch}/{cfg.epochs}", self.progress)
        try:
            while self.step_in_epoch < len(segments):
                if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                    return True
                inputs, targets = segments[self.step_in_epoch]
                t0 = time.perf_counter()
                if cfg.measure_memory and self.step_in_epoch == measure_at and self.epoch_acc["memory"] is None:
                    outs = []
                    figs = memory.measure(lambda: outs.append(self._step(inputs, targets)),
                                          memory.default_meters(cfg.device, self.params))
                    out = outs.pop()
                    mem = memory.peak_figures(figs)
                    mem.update({k: figs.get(k) for k in ("live_peak_bytes", "cuda_peak_allocated_bytes",
                                                         "rss_peak_delta_bytes", "saved_bytes")})
                    self.epoch_acc["memory"] = mem
                else:
                    out = self._step(inputs, targets)
                dt = time.perf_counter() - t0
                loss = float(out.loss)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss} at epoch {self.epoch}, step "
                                             f"{self.step_in_epoch}: lower --lr or --clip")
                self.hidden = out.state
                n = inputs.numel()
                for acc in (self.epoch_acc, self.interval_acc):
                    acc["loss_sum"] += loss * n
                    acc["tokens"] += n
                    acc["steps"] += 1
                    acc["time_s"] += dt
                if out.stats.get("buffer_bits_actual") is not None:
                    self.epoch_acc["with_buffer_steps"] += 1
                    for k in _STAT_SUMS:
                        self.epoch_acc[k] += float(out.stats.get(k) or 0.0)
                self.step_in_epoch += 1
                self.global_step += 1
                bar.update(loss=f"{loss:.3f}", lr=f"{self.lr:g}")
                if self.interval_acc["steps"] >= cfg.log_interval:
                    self._log_progress(len(segments))
                if self._checkpoint_due():
                    self.save_checkpoint()
        finally:
            bar.close()
        return False

    def _step(self, inputs, targets):
        cfg = self.cfg
        self.opt.zero_grad(set_to_none=False)
        state = self.hidden if cfg.carry_state else self.model.init_state(cfg.batch_size)
        out = self.method.step(self.model, inputs, targets, state)
        torch.nn.utils.clip_grad_norm_(self.params, cfg.clip)
        for g in self.opt.param_groups:
            g["lr"] = self.lr * inputs.size(0) / cfg.bptt
        self.opt.step()
        for g in self.opt.param_groups:
            g["lr"] = self.lr
        return out

    def _checkpoint_due(self) -> bool:
        cfg = self.cfg
        if cfg.checkpoint_every_steps and self.global_step - self._last_ckpt_step >= cfg.checkpoint_every_steps:
            return True
        return (cfg.checkpoint_every_minutes is not None
                and time.monotonic() - self._last_ckpt_time >= 60.0 * cfg.checkpoint_every_minutes)

    def _log_progress(self, n_segments: int) -> None:
        a = self.interval_acc
        loss = a["loss_sum"] / max(a["tokens"], 1)
        self._log({"event": "progress", "epoch": self.epoch, "step": self.step_in_epoch, "steps": n_segments,
                   "global_step": self.global_step, "loss": loss, "ppl": math.exp(min(loss, 700.0)), "lr": self.lr,
                   "tokens_per_s": a["tokens"] / a["time_s"] if a["time_s"] else None,
                   "elapsed_s": round(self._elapsed(), 3)})
        if not self.progress:
            self._say(f"  epoch {self.epoch} step {self.step_in_epoch}/{n_segments}  loss {loss:.3f}  "
                      f"ppl {math.exp(min(loss, 700.0)):.1f}  lr {self.lr:g}")
        self.interval_acc = _new_interval_acc()

    def _end_epoch(self) -> None:
        cfg = self.cfg
        a = self.epoch_acc
        train_loss = a["loss_sum"] / max(a["tokens"], 1)
        t0 = time.perf_counter()
        val = evaluate(self.model, self.valid_data, cfg.bptt, cfg.carry_state)
        eval_s = time.perf_counter() - t0
        improved = val["ppl"] < self.best_valid_ppl
        rec = {"event": "epoch", "epoch": self.epoch, "step": a["steps"], "global_step": self.global_step,
               "loss": train_loss, "ppl": math.exp(min(train_loss, 700.0)), "train_loss": train_loss,
               "train_ppl": math.exp(min(train_loss, 700.0)),
               "valid_loss": val["loss"], "valid_ppl": val["ppl"], "lr": self.lr, "improved": improved,
               "tokens_per_s": a["tokens"] / a["time_s"] if a["time_s"] else None, "train_time_s": a["time_s"],
               "eval_time_s": eval_s}
        rec.update(self._epoch_savings(a))
        mem = a["memory"] or {}
        rec.update({f"step_{k}": v for k, v in mem.items()})
        if improved:
            self.best_valid_ppl, self.best_epoch = val["ppl"], self.epoch
            atomic_save({"model": self.model.state_dict(), "epoch": self.epoch, "valid_ppl": val["ppl"],
                         "config": cfg.to_dict()}, self.best_path)
        else:
            self.lr /= cfg.lr_decay
        rec["next_lr"] = self.lr
        rec["elapsed_s"] = round(self._elapsed(), 3)
        self.history.append({k: rec[k] for k in ("epoch", "train_ppl", "valid_ppl", "lr", "saving_actual",
                                                 "saving_ideal", "step_peak_bytes") if k in rec})
        self._log(rec)
        self._say(f"epoch {self.epoch}: train ppl {rec['train_ppl']:.2f}  valid ppl {val['ppl']:.2f}"
                  f"{'' if improved else ' (no improvement: lr -> %g)' % self.lr}  "
                  f"{rec['tokens_per_s'] or 0:.0f} tok/s"
                  + (f"  saving {rec['saving_actual']:.2f}x actual / {rec['saving_ideal']:.2f}x ideal"
                     if rec.get("saving_actual") and rec.get("saving_ideal") else ""))
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_gen_state = self.seg_gen.get_state()      # the generator has drawn this epoch's lengths
        self.hidden = self.model.init_state(cfg.batch_size)
        self.epoch_acc, self.interval_acc = _new_epoch_acc(), _new_interval_acc()
        self.save_checkpoint()

    @staticmethod
    def _epoch_savings(a: dict) -> dict:
        if not a["with_buffer_steps"]:
            return {"saving_actual": None, "saving_ideal": None, "buffer_efficiency": None}
        base, act, ideal = a["state_bits_baseline"], a["buffer_bits_actual"], a["buffer_bits_ideal"]
        return {"saving_actual": base / act if act else None, "saving_ideal": base / ideal if ideal else None,
                "buffer_efficiency": act / ideal if ideal else None}

    def _finish(self) -> dict:
        cfg = self.cfg
        if self.best_path.exists():
            best = torch.load(self.best_path, map_location=cfg.device, weights_only=False)
            self.model.load_state_dict(best["model"])
        t0 = time.perf_counter()
        val = evaluate(self.model, self.valid_data, cfg.bptt, cfg.carry_state)
        test = evaluate(self.model, self.test_data, cfg.bptt, cfg.carry_state)
        eval_s = time.perf_counter() - t0
        final_memory = None
        if cfg.final_memory:
            seg_len = min(cfg.bptt, self.train_data.size(0) - 1)
            final_memory = compare_memory(self.model, cfg.method, cfg.method_options,
                                          self.train_data[:seg_len], self.train_data[1:seg_len + 1],
                                          seed=cfg.seed + 2, device=cfg.device)
        epochs = [h for h in self.history]
        last = epochs[-1] if epochs else {}
        result = {
            "format": RESULT_FORMAT, "config": cfg.to_dict(), "data": cfg.data, "cell": cfg.cell,
            "num_layers": cfg.num_layers, "layer_sizes": cfg.layer_sizes(), "emb_size": cfg.emb_size,
            "max_forget_bits": cfg.max_forget_bits if cfg.reversible else None, "method": cfg.method,
            "vocab_size": self.corpus.vocab_size, "parameters": sum(p.numel() for p in self.model.parameters()),
            "epochs": len(epochs), "global_steps": self.global_step, "best_epoch": self.best_epoch,
            "valid_ppl": val["ppl"], "test_ppl": test["ppl"], "valid_loss": val["loss"], "test_loss": test["loss"],
            "saving_actual": _finite(last.get("saving_actual")), "saving_ideal": _finite(last.get("saving_ideal")),
            "saving_actual_by_epoch": [_finite(h.get("saving_actual")) for h in epochs],
            "saving_ideal_by_epoch": [_finite(h.get("saving_ideal")) for h in epochs],
            "history": epochs, "final_memory": final_memory,
            "allocator_saving": final_memory.get("allocator_saving") if final_memory else None,
            "train_time_s": round(self._elapsed(), 3), "final_eval_time_s": round(eval_s, 3),
            "environment": memory.environment_info(cfg.device), "finished_at": time.time(),
        }
        if cfg.data == "synthetic":
            result["perplexity_floor"] = self.corpus.info.get("perplexity_floor")
        atomic_write_json(result, self.result_path)
        self.finished = True
        self._log({"event": "end", "valid_ppl": val["ppl"], "test_ppl": test["ppl"], "best_epoch": self.best_epoch,
                   "allocator_saving": result["allocator_saving"], "elapsed_s": round(self._elapsed(), 3)})
        self.save_checkpoint()
        self._say(f"done: valid ppl {val['ppl']:.2f}  test ppl {test['ppl']:.2f}  (best epoch {self.best_epoch})"
                  + (f"  allocator saving {result['allocator_saving']:.2f}x" if result["allocator_saving"] else ""))
        return result


def train(cfg: TrainConfig, out_dir, resume: bool = False, quiet: bool = False, progress: bool | None = None) -> dict:
    """Train a language model as described in the module docstring; returns the result dict."""
    return Trainer(cfg, out_dir, resume=resume, quiet=quiet, progress=progress).run()
