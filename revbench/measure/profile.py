"""Where one training step's time goes, per method: ``revbench profile`` (``revbench/cli/profile.py``).

Each method runs one language-model step of a configuration (``BenchConfig``; ``bptt-fused`` runs on the
ordinary cell of the configuration's family, as the fused reference of the benchmark records does). After a
warm-up step, ``repeats`` steps of every method are timed with ``time.perf_counter``, interleaved (method A, B,
C, A, B, C, ...) so that ratios taken in one run share the machine's load; then one step per method runs under
``torch.profiler`` (CPU activity, input shapes recorded) and its ops' self times are sorted into categories:

- ``cell_matmul``: the cells' matrix products (``mm``, ``addmm``, ``addmm_``, ...; the fused kernel's whole
  recurrent layer, ``mkldnn_rnn_layer``, counts here too);
- ``elementwise``: every other op of the step loop: gates, limits, quantisation, int64 conversions, the fixed-point
  update, masks, straight-through values, overflow checks;
- ``buffer``: ops inside the information buffer's ``buffered_mul`` / ``buffered_div`` (Algorithm 1 and the word
  stack's push and pop);
- ``output``: the output layer, the loss and the embedding lookup, forward and backward (ops in the step loop's
  ``revbench.output`` region or below the output layer's, the loss's or the embedding's autograd nodes; a
  matrix product with an input dimension equal to the vocabulary, where no cell dimension equals it);
- ``overhead``: the profiled step's wall time minus the self time of all ops: Python, the autograd engine and
  dispatch between ops.

Op counts are the ops called from outside an op (Python or the autograd engine), per time step of the segment.
The profiler slows each op by a few microseconds, so the profiled wall time exceeds the unprofiled median;
categories are shares of the profiled step.
"""
from __future__ import annotations

import statistics
import time

import torch

from revbench import methods
from revbench.measure.environment import cpu_model, pin_threads, restore_threads
from revbench.measure.fused_reference import FUSED_METHOD, fused_reference_cell, fused_reference_config
from revbench.measure.harness import BenchConfig, Workload

PROFILE_SCHEMA = "revbench.profile/1"
CATEGORIES = ("cell_matmul", "elementwise", "buffer", "output", "overhead")
CATEGORY_TITLES = {"cell_matmul": "cell matmuls", "elementwise": "gates+fixed point", "buffer": "buffer",
                   "output": "output+loss", "overhead": "Python overhead"}
DEFAULT_METHODS = ("bptt", "reversible", "bptt-fused")
PRESETS = {"paper": dict(cell="revlstm", hidden_size=650, batch_size=20, seq_len=70, vocab_size=10000,
                         max_forget_bits=3),
           "long": dict(cell="revlstm", hidden_size=256, batch_size=16, seq_len=1000, vocab_size=2000,
                        max_forget_bits=3)}
_MATMULS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
            "aten::addmv", "aten::mv", "aten::dot", "aten::mkldnn_rnn_layer", "aten::mkldnn_rnn_layer_backward",
            "aten::_addmm_activation"}
_OUTPUT_OPS = {"aten::log_softmax", "aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss",
               "aten::nll_loss_nd", "aten::nll_loss_forward", "aten::nll_loss_backward", "aten::cross_entropy_loss",
               "aten::embedding", "aten::embedding_backward", "aten::embedding_dense_backward"}
_OUTPUT_MARKS = ("revbench.output", "_OutputLoss", "LogSoftmaxBackward", "NllLossBackward", "_EmbeddingInto",
                 "EmbeddingBackward")
_BUFFER_MARK = "revbench.buffer"


def _is_op(name: str) -> bool:
    return name.startswith(("aten::", "prim::"))


def _ancestors(ev):
    p = ev.cpu_parent
    while p is not None:
        yield p
        p = p.cpu_parent


def _dims(ev) -> set:
    dims = set()
    for shape in getattr(ev, "input_shapes", None) or ():
        if isinstance(shape, (list, tuple)):
            dims.update(d for d in shape if isinstance(d, int))
    return dims


def categorise(ev, vocab: int | None, cell_dims: set) -> str:
    """The category of one op event (see the module docstring)."""
    names = [ev.name] + [a.name for a in _ancestors(ev)]
    if ev.name in _OUTPUT_OPS or any(any(mark in n for mark in _OUTPUT_MARKS) for n in names):
        return "output"
    if any(n == _BUFFER_MARK for n in names):
        return "buffer"
    if ev.name in _MATMULS:
        if vocab is not None and vocab not in cell_dims and vocab in _dims(ev):
            return "output"
        return "cell_matmul"
    return "elementwise"


def summarise_events(events, wall_s: float, steps: int, vocab: int | None = None, cell_dims=()) -> dict:
    """Seconds and top-level op counts per category of a profiled step's events; ``overhead`` = ``wall_s`` minus
    the ops' self time."""
    secs = dict.fromkeys(CATEGORIES, 0.0)
    counts = dict.fromkeys(CATEGORIES[:-1], 0)
    cell_dims = set(cell_dims)
    for ev in events:
        if not _is_op(ev.name):
            continue
        cat = categorise(ev, vocab, cell_dims)
        secs[cat] += ev.self_cpu_time_total / 1e6
        if not any(_is_op(a.name) for a in _ancestors(ev)):
            counts[cat] += 1
    op_s = sum(secs[c] for c in CATEGORIES[:-1])
    secs["overhead"] = max(wall_s - op_s, 0.0)
    total_ops = sum(counts.values())
    return {"categories_s": secs, "ops_per_step": {c: n / steps for c, n in counts.items()},
            "ops_per_step_total": total_ops / steps, "op_self_s": op_s}


def _cell_dims(cfg: BenchConfig) -> set:
    h, e = cfg.hidden_size, cfg.emb_size
    n = h // 2
    return {h, e, n, 2 * n, 3 * h, 4 * h, 5 * n, cfg.batch_size}


def method_config(name: str, cfg: BenchConfig) -> tuple[BenchConfig | None, str]:
    """The configuration ``name`` runs on (``bptt-fused``: the fused reference's ordinary cell), or None and why."""
    if name == FUSED_METHOD:
        if fused_reference_cell(cfg.cell) is None:
            return None, f"no fused kernel for cell {cfg.cell!r}"
        cfg = fused_reference_config(cfg)
    ok, why = methods.supports(name, cfg.cell, kind="lm")
    return (cfg, "") if ok else (None, why)


PROFILE_STEPS = 200      # the profiled step's segment length at most: the profiler keeps ~3k op events per step


def profile_step(cfg: BenchConfig, method_names, repeats: int = 3, threads: int = 1,
                 profile_steps: int = PROFILE_STEPS, floor: bool = False) -> dict:
    """Profile one step of each method on ``cfg`` (see the module docstring). Returns a JSON-ready dict. The
    timed steps run the whole segment; the profiled step runs min(T, ``profile_steps``) time steps of the same
    model (the profiler's event list grows with every op; per-time-step figures do not depend on T).
    ``floor``: also time the matrix products each method needs per time step (``revbench.measure.floor``), in
    the same process and thread count, under the key ``"floor"``."""
    before = pin_threads(threads)
    try:
        result = _profile(cfg, list(method_names), repeats, threads, max(1, min(cfg.seq_len, profile_steps)))
        if floor:
            from revbench.measure.floor import matmul_floor
            result["floor"] = matmul_floor(Workload(cfg).model, cfg.seq_len, cfg.batch_size)
        return result
    finally:
        restore_threads(before)


def _profile(cfg, names, repeats, threads, profile_steps):
    runs, rows = [], {}
    for name in names:
        mcfg, why = method_config(name, cfg)
        if mcfg is None:
            rows[name] = {"method": name, "reason": why}
            continue
        method = methods.get(name)
        wl = Workload(mcfg)
        wl.warm_up(method)
        wl.step(method)                     # one full step untimed: allocations and caches as in training
        runs.append((name, method, wl))
        rows[name] = {"method": name, "config_id": mcfg.config_id, "times_s": []}
    for _ in range(repeats):                # interleaved: every method sees the same stretch of load
        for name, method, wl in runs:
            t0 = time.perf_counter()
            wl.step(method)
            rows[name]["times_s"].append(time.perf_counter() - t0)
    for name, method, wl in runs:
        row = rows[name]
        row["wall_s"] = statistics.median(row["times_s"])
        if profile_steps < wl.cfg.seq_len:
            wl = Workload(wl.cfg.with_(seq_len=profile_steps))
            wl.warm_up(method)
            wl.step(method)
        row["profiled_seq_len"] = wl.cfg.seq_len
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            t0 = time.perf_counter()
            wl.step(method)
            row["profiled_wall_s"] = time.perf_counter() - t0
        row.update(summarise_events(prof.events(), row["profiled_wall_s"], wl.cfg.seq_len, cfg.vocab_size,
                                    _cell_dims(wl.cfg)))
    walls = {n: r.get("wall_s") for n, r in rows.items()}
    ratios = {}
    for a, b in (("reversible", "bptt"), ("bptt", FUSED_METHOD), ("reversible", FUSED_METHOD)):
        if walls.get(a) and walls.get(b):
            ratios[f"{a}/{b}"] = walls[a] / walls[b]
    return {"schema": PROFILE_SCHEMA, "config_id": cfg.config_id, "config": _config_dict(cfg),
            "torch_num_threads": torch.get_num_threads(), "threads_requested": threads,
            "cpu_model": cpu_model(), "torch_version": torch.__version__, "repeats": repeats,
            "profiled_seq_len": profile_steps,
            "timer": f"time.perf_counter, median of {repeats} interleaved steps after a warm-up step; categories "
                     f"from one more step of {profile_steps} time steps under torch.profiler (CPU, self time per op)",
            "methods": [rows[n] for n in names], "ratios": ratios}


def _config_dict(cfg: BenchConfig) -> dict:
    return {"cell": cfg.cell, "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "emb_size": cfg.emb_size,
            "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "vocab_size": cfg.vocab_size,
            "max_forget_bits": cfg.max_forget_bits, "device": cfg.device, "dtype": cfg.dtype}


def format_profile(result: dict) -> str:
    """The text table ``revbench profile`` prints: per method, the step's median, then per time step of the profiled
    step the microseconds and share of each category and the ops called."""
    cfg = result["config"]
    cpu = result["cpu_model"] or "CPU n/a"
    lines = [f"{result['config_id']}: {result['torch_num_threads']} torch thread(s), {cpu}, "
             f"torch {result['torch_version']}",
             f"step: {result['timer']}",
             f"'step ms': the whole segment of T = {cfg['seq_len']}; categories: us per time step of the profiled "
             f"step, share of it, ops per time step", ""]
    head = f"{'method':<12} {'step ms':>9} {'us/t prof':>9} " + " ".join(
        f"{CATEGORY_TITLES[c]:>17}" for c in CATEGORIES)
    lines += [head + f" {'ops/t':>6}", "-" * (len(head) + 7)]
    for row in result["methods"]:
        if "reason" in row:
            lines.append(f"{row['method']:<12} n/a: {row['reason']}")
            continue
        wall, n = row["profiled_wall_s"], row["profiled_seq_len"]
        cells = []
        for c in CATEGORIES:
            sec = row["categories_s"][c]
            ops = "" if c == "overhead" else f" {row['ops_per_step'][c]:.0f}op"
            cells.append(f"{sec / n * 1e6:7.0f} {100 * sec / wall:3.0f}%{ops:>6}")
        lines.append(f"{row['method']:<12} {row['wall_s'] * 1e3:9.1f} {wall / n * 1e6:9.0f} " + " ".join(
            f"{x:>17}" for x in cells) + f" {row['ops_per_step_total']:6.0f}")
    if result["ratios"]:
        lines += ["", "ratios of the step medians: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items())]
    if result.get("floor"):
        from revbench.measure.floor import format_floor
        lines.append(format_floor(result["floor"], {r["method"]: r.get("wall_s") for r in result["methods"]}))
    return "\n".join(lines)
