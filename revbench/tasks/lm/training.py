"""Language-model training (AWD-LSTM style) with any training method, checkpoints, resume and logs.

``train(cfg, out_dir, resume=False)`` trains ``RNNLM`` on PTB / WikiText-2 / the synthetic corpus:

- training: the stream is cut into ``batch_size`` columns (``revbench.tasks.lm.corpus.batchify``) and into
  AWD-LSTM segments of variable length around ``bptt`` (``revbench.tasks.lm.corpus.lm_segments``); the hidden
  state is carried from one segment to the next (reset at each epoch); each segment is one step of
  the chosen method (``revbench.methods.get(cfg.method).step``); then gradient clipping (global norm
  ``clip``) and SGD with weight decay, the learning rate scaled by ``seq_len / bptt`` for that
  segment (as AWD-LSTM does);
- after each epoch: validation perplexity; when it did not improve, lr /= ``lr_decay`` (4); the
  best model is kept in ``best.pt``;
- evaluation (``revbench.tasks.lm.evaluation.evaluate``): ``model.eval()`` (no dropout), forward only through
  ``Segment.advance(grad=False)`` under ``torch.no_grad``, fixed segment length ``bptt``, state
  carried; perplexity = exp(total cross-entropy / tokens);
- at the end: test perplexity of the best model; ``result.json``.

Files in ``out_dir``: ``log.jsonl`` (one JSON object per line: ``"event"`` is ``"start"``,
``"progress"`` every ``log_interval`` steps, ``"epoch"`` after each epoch, ``"end"``),
``checkpoint.pt`` (model, optimiser, epoch, step in epoch, RNG states, carried hidden state, lr,
best validation perplexity, running averages, log offset), ``best.pt`` and ``result.json``. Every
file is written to a temporary file and renamed into place (``os.replace``), so a crash never
corrupts the last good file; a run removes the temporary files of its own that a kill left in ``out_dir``
(and says so). ``checkpoint.pt`` and ``best.pt`` carry a SHA-256 of their contents
(``revbench.tasks.integrity``), checked whenever they are read: a damaged file is refused, never trained on.
``resume=True`` continues exactly where the checkpoint stopped: same segments, same dropout masks, bitwise the
same parameters as an uninterrupted run.

Memory figures per epoch (in the ``"epoch"`` records): the paper-style ``saving_actual`` /
``saving_ideal`` / ``buffer_efficiency`` aggregated over the epoch's steps as ratios of sums
(sum of baseline bits / sum of buffer bits, i.e. token-weighted), and the activation peak of one
metered training step per epoch (``revbench.measure.memory``: the live-tensor meter on CPU, the CUDA
allocator on a GPU). ``result.json`` adds ``final_memory``
(``revbench.tasks.lm.memory_probe.compare_memory``): one segment of the trained model
stepped by ``bptt`` and by the run's method with the same dropout masks, and their peak ratio
(``allocator_saving``).
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

from revbench.measure import memory
from revbench.measure.cuda import device_problem
from revbench.measure.environment import environment_info
from revbench.util.atomic import atomic_write_json, remove_stale_temporaries, stale_removal_note
from revbench.util.runlock import run_lock
from revbench.tasks.integrity import load_model_state, save_sealed
from revbench.tasks.jsonio import finite, json_default
from revbench.tasks.lm.build import build_model, load_data
from revbench.tasks.lm.checkpoints import (BEST_FORMAT, OutputExistsError, checkpoint_payload, load_best,
                                           load_checkpoint, restore)
from revbench.tasks.lm.configs import TrainConfig, check_run_fields
from revbench.tasks.lm.corpus import batchify, lm_segments
from revbench.tasks.lm.evaluation import evaluate
from revbench.tasks.lm.memory_probe import compare_memory
from revbench.tasks.lm.progress import Bar
from revbench.tasks.lm.running_sums import STAT_SUMS, epoch_savings, new_epoch_acc, new_interval_acc
from revbench.tasks.run_options import configured_method

RESULT_FORMAT = "revbench.lm-result/1"
OWN_FILES = ("checkpoint.pt", "best.pt", "result.json")      # written through util.atomic (their litter is ours)


# ------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run. Use :func:`train` unless you need the pieces (tests drive ``max_steps``)."""

    def __init__(self, cfg: TrainConfig, out_dir, resume: bool = False, quiet: bool = False,
                 progress: bool | None = None):
        self.cfg = cfg.validate()
        check_run_fields(self.cfg)
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
        problem = device_problem(cfg.device)
        if problem:
            raise ValueError(problem)
        self.method = configured_method(cfg.method, cfg.method_options)
        self.corpus = load_data(cfg)
        dev = torch.device(cfg.device)
        self.train_data = batchify(self.corpus.train, cfg.batch_size).to(dev)
        self.valid_data = batchify(self.corpus.valid, cfg.eval_batch_size).to(dev)
        self.test_data = batchify(self.corpus.test, cfg.test_batch_size).to(dev)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.corpus.vocab_size, dev)
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
        self.epoch_acc, self.interval_acc = new_epoch_acc(), new_interval_acc()
        self.elapsed_before = 0.0
        self.finished = False

    def _log(self, record: dict) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=json_default) + "\n")

    def _log_offset(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def save_checkpoint(self) -> None:
        save_sealed(checkpoint_payload(self), self.ckpt_path)
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
            with run_lock(self.out):          # one process per run folder (a second one is refused: exit 2)
                return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.resume and (self.ckpt_path.exists() or self.result_path.exists()):
            raise OutputExistsError(f"{str(self.out)!r} already holds a training run (checkpoint.pt/result.json): "
                                    "pass --resume to continue it, or choose another --out folder")
        note = stale_removal_note(remove_stale_temporaries(self.out, OWN_FILES))
        if note:
            self._say(note)
        self._setup()
        resumed = self.resume and self.ckpt_path.exists()
        if resumed:
            self._fresh_state()
            restore(self, load_checkpoint(self.ckpt_path))
            if self.best_path.exists():
                load_best(self.best_path)             # verified now, not after training on
        else:
            self._fresh_state()
            if self.log_path.exists():
                self.log_path.unlink()
        self._t_start = time.monotonic()
        self._last_ckpt_time, self._last_ckpt_step = time.monotonic(), self.global_step
        cfg = self.cfg
        # the code this process runs is the checkout's at its start: a commit made while it trains is not in it
        self.environment = environment_info(cfg.device)
        self._log({"event": "start", "resumed": resumed, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                   "global_step": self.global_step, "config": cfg.to_dict(), "vocab_size": self.corpus.vocab_size,
                   "parameters": sum(p.numel() for p in self.model.parameters()),
                   "environment": self.environment, "time": time.time()})
        self._say(f"revbench train: {cfg.data} {cfg.cell} L{cfg.num_layers} {cfg.layer_sizes()} "
                  f"k={cfg.max_forget_bits if cfg.reversible else '-'} method={cfg.method} -> {self.out}"
                  + (f" (resumed at epoch {self.epoch}, step {self.step_in_epoch})" if resumed else ""))
        if self.finished and self.epoch > cfg.epochs and self.result_path.exists():
            self._say("already finished; result.json is up to date")
            with open(self.result_path, encoding="utf-8") as fh:
                return json.load(fh)
        if not resumed:
            self._probe_memory()                      # the untrained model: where the saving starts
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
        return list(lm_segments(self.train_data, self.cfg.bptt, variable=self.cfg.variable_bptt,
                                generator=self.seg_gen))

    def _train_epoch(self) -> bool:
        cfg = self.cfg
        segments = self._epoch_segments()
        self.model.train()
        measure_at = min(1, len(segments) - 1)     # the 2nd step: gradients already allocated
        bar = Bar(len(segments), self.step_in_epoch, f"epoch {self.epoch}/{cfg.epochs}", self.progress)
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
                    for acc in (self.epoch_acc, self.interval_acc):
                        acc["with_buffer_steps"] = acc.get("with_buffer_steps", 0) + 1
                        for k in STAT_SUMS:
                            acc[k] = acc.get(k, 0.0) + float(out.stats.get(k) or 0.0)
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
                   **epoch_savings(a), "elapsed_s": round(self._elapsed(), 3)})
        if not self.progress:
            self._say(f"  epoch {self.epoch} step {self.step_in_epoch}/{n_segments}  loss {loss:.3f}  "
                      f"ppl {math.exp(min(loss, 700.0)):.1f}  lr {self.lr:g}")
        self.interval_acc = new_interval_acc()

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
        rec.update(epoch_savings(a))
        self._probe_memory()
        mem = a["memory"] or {}
        rec.update({f"step_{k}": v for k, v in mem.items()})
        if improved:
            self.best_valid_ppl, self.best_epoch = val["ppl"], self.epoch
            save_sealed({"format": BEST_FORMAT, "model": self.model.state_dict(), "epoch": self.epoch,
                         "valid_ppl": val["ppl"], "config": cfg.to_dict()}, self.best_path)
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
        self.epoch_acc, self.interval_acc = new_epoch_acc(), new_interval_acc()
        self.save_checkpoint()

    def _compare_memory(self, model=None) -> dict:
        """bptt and the run's method on the first segment of the training data (always the same one, with the
        same dropout masks): what ``final_memory`` and the per-epoch memory records measure."""
        cfg = self.cfg
        seg_len = min(cfg.bptt, self.train_data.size(0) - 1)
        return compare_memory(self.model if model is None else model, cfg.method, cfg.method_options,
                              self.train_data[:seg_len], self.train_data[1:seg_len + 1], seed=cfg.seed + 2,
                              device=cfg.device)

    def _probe_memory(self) -> None:
        """A ``"memory"`` log record: the allocator saving and the step's paper-style savings of the model as it
        is now, on ``_compare_memory``'s segment (before training and after each epoch: the saving moves as the
        gates learn how much to forget). Only for a method that saves memory (not bptt). It steps a copy of the
        model (the RNG state is restored too), so the run trains exactly as without it."""
        cfg = self.cfg
        if not (cfg.measure_memory and cfg.method != "bptt"):
            return
        fm = self._compare_memory(copy.deepcopy(self.model))
        own = fm.get(cfg.method) or {}
        self._log({"event": "memory", "epoch": self.epoch, "global_step": self.global_step,
                   "allocator_saving": fm.get("allocator_saving"),
                   "bptt_peak_bytes": (fm.get("bptt") or {}).get("peak_bytes"),
                   "method_peak_bytes": own.get("peak_bytes"), "peak_bytes_meter": own.get("peak_bytes_meter"),
                   "saving_actual": own.get("saving_actual"), "saving_ideal": own.get("saving_ideal"),
                   "segment": fm.get("segment")})

    def _finish(self) -> dict:
        cfg = self.cfg
        if self.best_path.exists():
            best = load_best(self.best_path)
            load_model_state(self.model, best["model"], f"best model {str(self.best_path)!r}")
        t0 = time.perf_counter()
        val = evaluate(self.model, self.valid_data, cfg.bptt, cfg.carry_state)
        test = evaluate(self.model, self.test_data, cfg.bptt, cfg.carry_state)
        eval_s = time.perf_counter() - t0
        final_memory = self._compare_memory() if cfg.final_memory else None
        epochs = [h for h in self.history]
        last = epochs[-1] if epochs else {}
        result = {
            "format": RESULT_FORMAT, "config": cfg.to_dict(), "data": cfg.data, "cell": cfg.cell,
            "num_layers": cfg.num_layers, "layer_sizes": cfg.layer_sizes(), "emb_size": cfg.emb_size,
            "max_forget_bits": cfg.max_forget_bits if cfg.reversible else None, "method": cfg.method,
            "vocab_size": self.corpus.vocab_size, "parameters": sum(p.numel() for p in self.model.parameters()),
            "epochs": len(epochs), "global_steps": self.global_step, "best_epoch": self.best_epoch,
            "valid_ppl": val["ppl"], "test_ppl": test["ppl"], "valid_loss": val["loss"], "test_loss": test["loss"],
            "saving_actual": finite(last.get("saving_actual")), "saving_ideal": finite(last.get("saving_ideal")),
            "saving_actual_by_epoch": [finite(h.get("saving_actual")) for h in epochs],
            "saving_ideal_by_epoch": [finite(h.get("saving_ideal")) for h in epochs],
            "history": epochs, "final_memory": final_memory,
            "allocator_saving": final_memory.get("allocator_saving") if final_memory else None,
            "train_time_s": round(self._elapsed(), 3), "final_eval_time_s": round(eval_s, 3),
            "environment": self.environment, "finished_at": time.time(),
        }
        if cfg.data == "synthetic":
            result["perplexity_floor"] = self.corpus.info.get("perplexity_floor")
        atomic_write_json(result, self.result_path, default=json_default)
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
