"""Exactness on the device: every method's float64 gradients against bptt's, dropout on, on the check's device.

For each cell (RevLSTM, RevGRU, LSTM, GRU; 2 layers, emb = hidden = 16, batch 3, T = 23, vocab 50, every
dropout and weight-drop on) and every registered method that applies: zero the gradients, seed torch (so every
method draws the same dropout masks on the device), one step, and the largest relative error over the parameters,
||g - g_bptt|| / ||g_bptt||. The reversible method runs with ``verify=True``: its reversal must end with empty
buffers and the start state rebuilt bit for bit. Pass: below :data:`TOLERANCE`, as the CPU tests require.
"""
from __future__ import annotations

from typing import Any

import torch

from revbench import methods
from revbench.models.lm import RNNLM

TOLERANCE = 1e-9
CELLS = ("revlstm", "revgru", "lstm", "gru")
OPTIONS = {"gruslys": [{"budget": 0.2, "policy": "hsm"}, {"budget": 0.2, "policy": "mixed"}],
           "revolve": [{"budget": 0.2}], "torch-checkpoint": [{}, {"fused": True}], "checkpoint": [{}],
           "reversible": [{"verify": True}]}
NOT_HERE = {"compile-budget": "compiling one float64 graph per configuration takes tens of seconds; its gradients "
                              "are tested on the CPU (tests/test_compile_budget.py)"}
FUSED_CELLS = ("lstm", "gru")          # torch-checkpoint(fused=True) runs nn.LSTM / nn.GRU kernels
DROPOUT = dict(dropout_emb=0.1, dropout_in=0.2, dropout_h=0.2, dropout_out=0.3, weight_drop=0.3)


def _grads(method, model, x, y, seed: int = 3) -> dict:
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(seed)
    method.step(model, x, y, model.init_state(x.shape[1]))
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def max_rel_err(ref: dict, got: dict) -> float:
    if ref.keys() != got.keys():
        raise ValueError(f"gradients of other parameters: {sorted(set(ref) ^ set(got))}")
    return max(float((ref[n] - got[n]).norm() / ref[n].norm().clamp_min(1e-300)) for n in ref)


def gradient_check(device, cells=CELLS, T: int = 23, B: int = 3, size: int = 16, layers: int = 2,
                   available=None) -> list[dict[str, Any]]:
    """One row per (cell, method, options): ``max_rel_err`` against bptt and ``ok``; or ``reason`` where the
    method did not run or failed (``ok`` False for a failure, None for a method that did not run; ``applies``
    False where the method does not apply to the cell)."""
    names = sorted(set(methods.available() if available is None else available) - {"bptt"})
    rows = []
    for cell in cells:
        torch.manual_seed(1)
        rev = cell.startswith("rev")
        model = RNNLM(50, size, size, layers, cell=cell, max_forget_bits=3 if rev else None, **DROPOUT)
        model = model.to(device=device, dtype=torch.float64).train()
        g = torch.Generator().manual_seed(2)
        x, y = (torch.randint(0, 50, (T, B), generator=g).to(device) for _ in range(2))
        ref = _grads(methods.get("bptt"), model, x, y)
        for name in names:
            for opts in OPTIONS.get(name, [{}]):
                if opts.get("fused") and cell not in FUSED_CELLS:
                    continue
                row = {"device": str(device), "cell": cell, "method": name, "options": dict(opts), "T": T}
                rows.append(row)
                try:
                    ok, why = methods.supports(name, cell)
                except ImportError as exc:
                    ok, why = False, f"a package it needs is missing: {exc}"
                if name in NOT_HERE or not ok:
                    row.update(ok=None, applies=name in NOT_HERE, reason=NOT_HERE.get(name, why))
                    continue
                try:
                    err = max_rel_err(ref, _grads(methods.get(name, **opts), model, x, y))
                except methods.MethodUnavailable as exc:
                    row.update(ok=None, reason=str(exc).splitlines()[0])
                    continue
                except Exception as exc:        # a wrong reversal, a kernel error: a failure of this method here
                    row.update(ok=False, reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                    continue
                row.update(max_rel_err=err, ok=err < TOLERANCE)
    return rows
