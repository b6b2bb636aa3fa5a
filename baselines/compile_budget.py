"""The whole segment's forward and loss under ``torch.compile`` with PyTorch's memory-for-time knob,
``torch._functorch.config.activation_memory_budget``; registered in ``revbench.methods`` as
``"compile-budget"``.

What runs: one function of tensors only (embedding with the segment's dropout masks, the ``lstm`` / ``gru``
step loop over ``T`` steps, unrolled, with locked dropout between layers and on the outputs, weight-dropped
recurrent weights, padding as in ``Segment.advance``, then the output layer and the summed cross-entropy of
the whole segment), compiled by ``torch.compile(fullgraph=True, dynamic=False)`` (TorchDynamo, AOTAutograd's
min-cut partitioner, Inductor). The equations are those of ``revbench.core.cells.GRUCell`` / ``LSTMCell``
with plain ``F.linear`` (the cells' in-place ``linear_into`` is a custom autograd function that writes
``.grad`` during backward, which a compiled graph cannot hold). Then ``loss.backward()``: the compiled
backward.

The budget: AOTAutograd partitions the joint forward-backward graph when the function is first compiled;
with ``activation_memory_budget = b`` (0 < b <= 1; 1 is the default partitioner) it keeps at most about ``b``
of the activation bytes the default would save for backward and recomputes the rest during backward,
choosing what to recompute by estimated runtime. The config is patched only around our compile and calls
(``torch._functorch.config.patch``), never globally.

Compiled functions are cached per (model, T, B, budget, the segment's dropout/padding pattern, dtype,
device), each with its own code object (so TorchDynamo's per-code recompile limit never makes a later
configuration fall back to eager). The step that compiled reports ``compile_time_s``: the time of its
compiling call (forward and backward: Inductor compiles the backward lazily on the first backward) minus
the time of the same call once compiled, run right after; every later step reports 0. The compiling step
therefore runs the segment twice (the first run's gradients are discarded).

Not available (``supports`` or a ``CompileBudgetUnavailable``, a ValueError, says why): the
encoder-decoder (per-step attention over a whole sequence: not this one-function form), reversible cells
(tried: ``torch.compile(fullgraph=True)`` over ``Segment.advance`` for revgru and nf-revlstm stops at the
first of the step's autograd Functions that add into ``.grad`` during backward, ``embedding_into``: "unsafe
side effect"; past that, the exact fixed-point update keeps Python-side word stacks), no C++ compiler for Inductor on the
CPU, a TorchDispatchMode active around the step (TorchDynamo refuses to run under one: revbench's
live-tensor meter cannot watch this method; the CUDA allocator, saved-tensor and RSS meters can), and
segments longer than ``max_steps`` (default 200: the graph is unrolled, so compile time grows with
T and layers; Inductor took 10-30 s for T = 8, one LSTM layer, on a busy 2-core CPU).
"""
from __future__ import annotations

import numbers
import os
import shutil
import time
import types
import weakref

import torch
import torch._functorch.config
import torch.nn.functional as F
from torch.utils import _python_dispatch

from revbench.core.functional import IGNORE
from revbench.core.protocol import ChainResult, Method, MethodUnavailable
from revbench.core.state import Carry, LayerState

_CELLS = ("lstm", "gru")
# "inductor": what a user runs (generated C++ / Triton kernels). "aot_eager_decomp_partition": the same
# decompositions and the same min-cut partitioner (so the same budget decisions) run by eager kernels, compiled
# in about a second: for tests and for machines without a C++ compiler.
_BACKENDS = ("inductor", "aot_eager_decomp_partition")


class CompileBudgetUnavailable(MethodUnavailable):
    """compile-budget cannot run this configuration (the message says why); a benchmark skips with it."""


def compiler_missing() -> str:
    """Why torch.compile cannot run here ("" when it can): Inductor needs a C++ compiler on the CPU."""
    if not torch._dynamo.is_dynamo_supported():
        return "TorchDynamo does not support this Python version"
    cxx = os.environ.get("CXX")
    if cxx and shutil.which(cxx):
        return ""
    if any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return ""
    return "no C++ compiler found (Inductor compiles CPU kernels with g++/clang++; set CXX)"


# ------------------------------------------------------------------------------------------ the traced function
def _gru(x, h, w_ih, w_hh, b_ih, b_hh):
    i_r, i_z, i_n = F.linear(x, w_ih, b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return ((1 - z) * n + z * h,)


def _lstm(x, h, c, w_ih, w_hh, b_ih, b_hh):
    gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return (torch.sigmoid(o) * torch.tanh(c), c)


def _segment_loss(kind, T, enc_w, dec_w, dec_b, weights, inputs, targets, emb_rows, in_mask, between, out_mask,
                  step_masks, n_tokens, start):
    """(the segment's summed loss, the final state's floats per layer): what ``Segment.advance`` computes over
    all T steps, for ordinary cells, as one function of tensors. ``kind`` and ``T`` are constants."""
    cell = _lstm if kind == "lstm" else _gru
    x_all = F.embedding(inputs, enc_w)
    if emb_rows is not None:
        x_all = x_all * emb_rows[inputs].unsqueeze(-1)
    if in_mask is not None:
        x_all = x_all * in_mask
    states = [tuple(s) for s in start]
    outs = []
    for t in range(T):
        x = x_all[t]
        keep = None if step_masks is None else step_masks[t].unsqueeze(1)
        for l, W in enumerate(weights):
            new = cell(x, *states[l], *W)
            if keep is not None:
                new = tuple(torch.where(keep, a, b) for a, b in zip(new, states[l]))
            states[l] = new
            x = new[0]
            if l < len(weights) - 1 and between[l] is not None:
                x = x * between[l]
        outs.append(x)
    y = torch.stack(outs)
    if out_mask is not None:
        y = y * out_mask
    logits = F.linear(y, dec_w, dec_b)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum",
                           ignore_index=IGNORE) / n_tokens
    return loss, states


def _fresh_function():
    """``_segment_loss`` with a code object of its own: TorchDynamo caches compiled graphs per code object
    (at most ``recompile_limit`` each), so one code object per cache entry keeps every entry compiled."""
    code = _segment_loss.__code__
    code = code.replace(co_name=f"_segment_loss_{next(_COUNTER)}")
    return types.FunctionType(code, _segment_loss.__globals__, code.co_name, _segment_loss.__defaults__)


def _counter():
    i = 0
    while True:
        i += 1
        yield i


_COUNTER = _counter()
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()     # model -> {key: compiled function}


def clear_cache() -> None:
    """Forget every compiled function (the next step of each configuration compiles again)."""
    _CACHE.clear()


# ---------------------------------------------------------------------------------------------- the method
class CompileBudget(Method):
    """The language model's whole segment (forward + loss) under ``torch.compile`` with
    ``torch._functorch.config.activation_memory_budget = budget``. See the module docstring."""

    name = "compile-budget"

    def __init__(self, budget: float = 1.0, max_steps: int = 200, backend: str = "inductor"):
        if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not (0 < float(budget) <= 1):
            raise ValueError(f"compile-budget: budget must be a number with 0 < budget <= 1 (the fraction of the "
                             f"default partitioner's saved activation bytes torch.compile may keep), got {budget!r}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1:
            raise ValueError(f"compile-budget: max_steps must be a positive int (the longest segment it compiles), "
                             f"got {max_steps!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"compile-budget: backend must be one of {', '.join(map(repr, _BACKENDS))}, got "
                             f"{backend!r}")
        self.budget, self.max_steps, self.backend = float(budget), int(max_steps), backend

    def options(self):
        opts = {"budget": self.budget}
        if self.max_steps != 200:
            opts["max_steps"] = self.max_steps
        if self.backend != "inductor":
            opts["backend"] = self.backend
        return opts

    @classmethod
    def supports(cls, cell, kind="lm", backend: str = "inductor"):
        if kind != "lm":
            return False, ("method 'compile-budget' compiles one language-model segment as one function; the "
                           "encoder-decoder (two chains joined by per-step attention) is not available; use "
                           "'bptt', 'checkpoint', 'gruslys', 'torch-checkpoint' or 'reversible'")
        if cell not in _CELLS:
            return False, (f"method 'compile-budget' traces the ordinary 'lstm' / 'gru' equations; cell {cell!r} "
                           f"is not available: a reversible cell's step (autograd Functions that add into .grad, "
                           f"Python-side information-buffer stacks) is not one graph TorchDynamo can capture")
        why = compiler_missing() if backend == "inductor" else ""
        if why:
            return False, f"method 'compile-budget' needs torch.compile with Inductor: {why}"
        return True, ""

    def check_model(self, model) -> None:
        ok, why = self.supports(getattr(model, "cell_type", ""), getattr(model, "kind", "lm"), backend=self.backend)
        if not ok:
            raise CompileBudgetUnavailable(why)

    def _compiled(self, seg, dtype, device):
        masks = seg.masks
        pattern = (masks.emb_rows is not None, masks.inputs is not None,
                   tuple(m is not None for m in masks.between), masks.outputs is not None,
                   seg.step_masks is not None, tuple(tuple(sorted(w)) for w in masks.weights),
                   seg.model.training, torch.is_grad_enabled())
        key = (seg.T, seg.B, self.budget, self.backend, pattern, dtype, str(device))
        per_model = _CACHE.setdefault(seg.model, {})
        fn = per_model.get(key)
        if fn is None:
            fn = torch.compile(_fresh_function(), fullgraph=True, dynamic=False, backend=self.backend)
            per_model[key] = fn
            return fn, True
        return fn, False

    def _run(self, fn, args):
        with torch._functorch.config.patch(activation_memory_budget=self.budget):
            loss, finals = fn(*args)
            loss.backward()
        return loss, finals

    def run_chain(self, seg, carry, *, end=None, grad_end=None, grad_start=False):
        if grad_end is not None or grad_start:
            raise ValueError("method 'compile-budget' runs one whole language-model segment; it cannot take or "
                             "return gradients at the segment's ends")
        model = seg.model
        self.check_model(model)
        if _python_dispatch._get_current_dispatch_mode() is not None:
            raise CompileBudgetUnavailable(
                "method 'compile-budget': torch.compile does not run under a TorchDispatchMode (TorchDynamo skips "
                "every frame, e.g. under revbench's live-tensor meter, LiveTensorMeter); measure it with the CUDA "
                "allocator, saved-tensor or RSS meters")
        L = len(model.cells)
        if seg.T * L > self.max_steps:
            raise CompileBudgetUnavailable(
                f"method 'compile-budget' unrolls the segment into one graph: T={seg.T} x {L} layer(s) = "
                f"{seg.T * L} cell steps exceeds max_steps={self.max_steps} (compile time grows with the graph: "
                f"10-30 s for 8 steps of one layer on a 2-core CPU); pass max_steps= to try anyway")
        masks = seg.masks
        weights = [tuple(seg.weight_leaves[l][n] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                   for l in range(L)]
        n_tokens = torch.tensor(float(seg.n_tokens), dtype=seg.dtype, device=seg.device)
        start = [tuple(ls.floats) for ls in carry.layers]
        t0 = time.perf_counter()                      # torch.compile's first call imports Inductor: compile time
        fn, fresh = self._compiled(seg, seg.dtype, seg.device)
        args = (model.cell_type, seg.T, model.encoder.weight, model.decoder.weight, model.decoder.bias, weights,
                seg.inputs, seg.targets, masks.emb_rows, masks.inputs, list(masks.between), masks.outputs,
                seg.step_masks, n_tokens, start)
        compile_time = 0.0
        if fresh:
            leaves = _detached(args)                  # the compiling run: its gradients are thrown away
            try:
                self._run(fn, leaves)
            except Exception as exc:                  # noqa: BLE001: a compiler failure becomes a clear refusal
                del _CACHE[model][next(k for k, v in _CACHE[model].items() if v is fn)]
                raise CompileBudgetUnavailable(f"method 'compile-budget': torch.compile failed on this segment "
                                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})") from exc
            warm = time.perf_counter() - t0
            del leaves
            t0 = time.perf_counter()
            loss, finals = self._run(fn, args)
            compile_time = max(0.0, warm - (time.perf_counter() - t0))
        else:
            loss, finals = self._run(fn, args)
        final = Carry(tuple(LayerState(None, tuple(f.detach() for f in fs), None) for fs in finals))
        T = seg.T
        seg.counters["forward_steps"] += T
        return ChainResult(loss=loss.detach(), final=final,
                           stats={"forward_steps": T, "graph_steps_peak": T, "compile_time_s": compile_time,
                                  "budget": self.budget})


def _detached(args):
    """The same arguments with every float tensor replaced by a fresh leaf of the same value (and the same
    requires_grad; aliases stay aliases: tied embeddings), so a throw-away run accumulates no gradient into the
    model and compiles the graph the real run uses."""
    seen = {}

    def leaf(v):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            if id(v) not in seen:
                c = v.detach().clone()          # same Python type too: TorchDynamo guards on it
                seen[id(v)] = (torch.nn.Parameter(c, v.requires_grad) if isinstance(v, torch.nn.Parameter)
                               else c.requires_grad_(v.requires_grad))
            return seen[id(v)]
        if isinstance(v, (list, tuple)):
            return type(v)(leaf(u) for u in v)
        return v
    return tuple(leaf(a) for a in args)


__all__ = ["CompileBudget", "CompileBudgetUnavailable", "clear_cache", "compiler_missing"]
