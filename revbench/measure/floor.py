"""The matrix-product floor of a step: what a method's step costs at least, if everything but its matrix products
were free (``revbench profile --floor``).

A method's memory profile fixes which matrix products it does per time step, and with how many rows:

- ``bptt``: per weight W of every cell and of the output layer, one forward product ``x W^T``, one input-gradient
  product ``g W`` and one weight-gradient product ``W.grad += g^T x``.
- ``reversible``: the same for the output layer (its forward pass skips it); per cell weight, *two* forward products
  (the forward pass, and the reverse pass that recomputes the gates to undo the update; the replay that builds the
  graph could reuse the reverse pass's products, so it is not counted) and the two gradient products.

Every product has ``batch`` rows: a step-loop method keeps one time step's activations at a time, so it cannot
batch the T steps of a segment into one product of T x batch rows as the fused kernel does for its input
projection and its output layer. At a small batch (the paper's 20) these products are bound by reading the weight
(and writing its gradient) once per time step, which is why this floor is far above the fused step's share of
the same arithmetic.

Each product is timed alone (median of ``repeats`` runs of ``calls`` calls, 1 thread by default, after a warm-up),
with its bias where the step loop has one, and the weight gradient in both layouts (row-major, and the transposed
layout the step loop gives the output layer on the CPU), the faster one counted. The floor of a method is
T x the sum over its products per time step.
"""
from __future__ import annotations

import statistics
import time

import torch

FLOOR_SCHEMA = "revbench.floor/1"
_KINDS = ("forward", "input_grad", "weight_grad")


def _timed(fn, repeats: int, calls: int) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - t0) / calls)
    return statistics.median(runs)


def product_times(out_features: int, in_features: int, rows: int, bias: bool, dtype=torch.float32,
                  repeats: int = 5, calls: int = 20) -> dict:
    """Seconds per call of the three products of one weight [out, in] with ``rows`` rows (see the module docstring)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(out_features, in_features, generator=g, dtype=dtype)
    b = torch.randn(out_features, generator=g, dtype=dtype) if bias else None
    x = torch.randn(rows, in_features, generator=g, dtype=dtype)
    gy = torch.randn(rows, out_features, generator=g, dtype=dtype)
    grad_rows = torch.zeros(out_features, in_features, dtype=dtype)
    grad_cols = torch.zeros(in_features, out_features, dtype=dtype)      # the transposed layout, seen as [out, in]
    fwd = (lambda: torch.addmm(b, x, w.t())) if bias else (lambda: torch.mm(x, w.t()))
    rows_s = _timed(lambda: grad_rows.addmm_(gy.t(), x), repeats, calls)
    cols_s = _timed(lambda: grad_cols.addmm_(x.t(), gy), repeats, calls)
    return {"forward": _timed(fwd, repeats, calls),
            "input_grad": _timed(lambda: torch.mm(gy, w), repeats, calls),
            "weight_grad": min(rows_s, cols_s), "weight_grad_row_major": rows_s, "weight_grad_transposed": cols_s}


def _cell_weights(model) -> list[tuple[str, int, int, bool]]:
    """(name, out, in, has a bias) of every 2-D weight of the model's cells. Reversible cells add their bias to the
    input product (``w*_x`` / ``u*_x``; the recurrent ``*_h`` product goes into the same sum); ordinary cells have
    torch.nn's two biases."""
    found = []
    for l, cell in enumerate(model.cells):
        for name, p in cell.named_parameters():
            if p.dim() == 2:
                found.append((f"cells.{l}.{name}", p.shape[0], p.shape[1],
                              name.endswith("_x") or name.startswith("weight_")))
    return found


def matmul_floor(model, seq_len: int, batch_size: int, repeats: int = 5, calls: int = 20) -> dict:
    """The floor of ``bptt`` and ``reversible`` on ``model`` (an ``RNNLM``) for segments of ``seq_len`` x
    ``batch_size``: per product its seconds and count per time step, and per method T x the sum."""
    dtype = model.encoder.weight.dtype
    V, H = model.decoder.weight.shape
    weights = _cell_weights(model) + [("decoder.weight", V, H, model.decoder.bias is not None)]
    rows = []
    for name, out_f, in_f, bias in weights:
        times = product_times(out_f, in_f, batch_size, bias, dtype, repeats, calls)
        cell = name != "decoder.weight"
        counts = {"bptt": {"forward": 1, "input_grad": 1, "weight_grad": 1},
                  "reversible": {"forward": 2 if cell else 1, "input_grad": 1, "weight_grad": 1}}
        rows.append({"weight": name, "shape": [out_f, in_f], "rows": batch_size, "seconds": times,
                     "per_time_step": counts})
    methods = {}
    for m in ("bptt", "reversible"):
        per_t = sum(r["seconds"][k] * r["per_time_step"][m][k] for r in rows for k in _KINDS)
        out_t = sum(r["seconds"][k] * r["per_time_step"][m][k] for r in rows if r["weight"] == "decoder.weight"
                    for k in _KINDS)
        methods[m] = {"floor_s": seq_len * per_t, "output_layer_s": seq_len * out_t}
    return {"schema": FLOOR_SCHEMA, "seq_len": seq_len, "batch_size": batch_size, "repeats": repeats,
            "calls": calls, "products": rows, "methods": methods,
            "timer": f"time.perf_counter, median of {repeats} runs of {calls} calls per product after one warm-up "
                     "call; the faster of the two weight-gradient layouts"}


def format_floor(floor: dict, walls: dict) -> str:
    """Lines for ``revbench profile --floor``: each method's floor beside its measured step and the fused step's."""
    fused = walls.get("bptt-fused")
    out = floor["products"][-1]["seconds"]
    layouts = (f"output weight gradient: row-major {out['weight_grad_row_major'] * 1e6:.0f} us, transposed "
               f"{out['weight_grad_transposed'] * 1e6:.0f} us per step")
    lines = ["", f"matrix-product floor ({floor['timer']}): T = {floor['seq_len']}, {floor['batch_size']} rows per "
             "product; the step if everything but its products were free",
             f"{'method':<12} {'floor ms':>9} {'of which output':>16} {'measured ms':>12} {'floor/measured':>15} "
             f"{'floor/fused':>12}"]
    for m, f in floor["methods"].items():
        wall = walls.get(m)
        lines.append(f"{m:<12} {f['floor_s'] * 1e3:9.1f} {f['output_layer_s'] * 1e3:16.1f} "
                     f"{(wall or float('nan')) * 1e3:12.1f} {f['floor_s'] / wall if wall else float('nan'):15.2f} "
                     f"{f['floor_s'] / fused if fused else float('nan'):12.2f}")
    return "\n".join(lines + [layouts])
