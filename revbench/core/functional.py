"""Small autograd functions the step loop needs.

- ``straight_through(ints, expr, dtype)``: the value of the exact fixed-point state,
  with the gradient of the real-valued expression (the paper's straight-through rule).
  Returning exactly the integers' value (not ``expr + (exact - expr).detach()``,
  which can differ by an ulp) keeps every method's trajectory bit-identical.
- ``embedding_into`` / ``linear_into``: embedding lookup and output layer whose
  weight gradients are accumulated in place into ``param.grad`` during backward.
  Autograd would materialise a dense [vocab, dim] gradient per call and then add
  it; per-step methods (reversible backprop, recomputation) call these once per
  time step, so the in-place form keeps a vocabulary-sized transient out of every
  step. All methods use the same functions, so comparisons stay fair.
- ``output_loss``: the output layer and the step's cross-entropy in one node whose softmax and its gradient
  share one [N, V] buffer (log_softmax, nll_loss and their backward would hold three at once).
- ``scope(name)``: a ``torch.profiler.record_function`` region while the profiler runs (``revbench profile``
  sorts an op's time by the region it ran in), else a shared no-op context (no cost in a normal step).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.autograd import Function

IGNORE = -100    # target id the cross-entropy ignores (padding)

_NO_SCOPE = contextlib.nullcontext()


def scope(name: str):
    """A profiler region named ``name`` while torch's profiler is enabled, else a no-op context manager."""
    if torch.autograd._profiler_enabled():
        return torch.profiler.record_function(name)
    return _NO_SCOPE


class _StraightThrough(Function):
    @staticmethod
    def forward(ctx, ints, expr, scale, dtype):
        return ints.to(dtype) / scale

    @staticmethod
    def backward(ctx, grad):
        return None, grad, None, None


def straight_through(ints: torch.Tensor, expr: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    return _StraightThrough.apply(ints, expr, scale, dtype)


def _grad_of(param: torch.Tensor) -> torch.Tensor:
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    return param.grad


class _EmbeddingInto(Function):
    @staticmethod
    def forward(ctx, weight, tokens, row_scale):
        ctx.weight = weight
        ctx.save_for_backward(tokens, row_scale)
        out = F.embedding(tokens, weight)
        return out if row_scale is None else out * row_scale[tokens].unsqueeze(-1)

    @staticmethod
    def backward(ctx, grad):
        tokens, row_scale = ctx.saved_tensors
        if row_scale is not None:
            grad = grad * row_scale[tokens].unsqueeze(-1)
        _grad_of(ctx.weight).index_add_(0, tokens.reshape(-1), grad.reshape(-1, grad.shape[-1]))
        return None, None, None


def embedding_into(weight: torch.Tensor, tokens: torch.Tensor, row_scale: torch.Tensor | None) -> torch.Tensor:
    """weight[tokens] * row_scale[tokens] (embedding dropout drops whole words); gradient added into weight.grad."""
    if not (torch.is_grad_enabled() and weight.requires_grad):
        out = F.embedding(tokens, weight)
        return out if row_scale is None else out * row_scale[tokens].unsqueeze(-1)
    return _EmbeddingInto.apply(weight, tokens, row_scale)


class _LinearInto(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.weight, ctx.bias = weight, bias
        ctx.save_for_backward(x)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        _grad_of(ctx.weight).addmm_(g2.t(), x.reshape(-1, x.shape[-1]))
        if ctx.bias is not None:
            _grad_of(ctx.bias).add_(g2.sum(0))
        grad_x = grad @ ctx.weight if ctx.needs_input_grad[0] else None
        return grad_x, None, None


def linear_into(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear whose weight/bias gradients are added in place into .grad during backward."""
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return F.linear(x, weight, bias)
    return _LinearInto.apply(x, weight, bias)


def _output_weight_grad(w: torch.Tensor) -> torch.Tensor:
    """The output layer's weight gradient, created on first use. On the CPU it is stored transposed (shape [V, H],
    strides (1, V)): the per-step update ``grad += g^T x`` with a batch of rows is then a GEMM whose output runs
    along the vocabulary, which MKL computes about 3x faster at V = 10000, H = 650, B = 20 than into a row-major
    [V, H] (same values up to the summation order inside the GEMM; same bytes). One that exists keeps its layout."""
    if w.grad is None and w.device.type == "cpu" and w.dim() == 2:
        w.grad = torch.zeros(w.shape[::-1], dtype=w.dtype, device=w.device).t()
    return _grad_of(w)


class Targets:
    """A step's target ids prepared for ``output_loss`` once (a segment prepares all its steps at once):
    ``index`` [N, 1] (the target, 0 on an ignored row), ``minus_one`` [N, 1] (-1, 0 on an ignored row: added at the
    target to turn the softmax into its gradient) and ``keep`` [N, 1] (1 or 0; None when no row is ignored).
    Without ignored rows ``index`` is a view of the ids and one [N, 1] of -1 serves every step: no memory per step."""

    __slots__ = ("index", "minus_one", "keep")

    def __init__(self, index: torch.Tensor, minus_one: torch.Tensor, keep: torch.Tensor | None):
        self.index, self.minus_one, self.keep = index, minus_one, keep

    @classmethod
    def of(cls, targets: torch.Tensor, dtype: torch.dtype) -> "Targets":
        """From target ids of any shape (IGNORE: the row counts nothing); the fields get a trailing 1-dim."""
        valid = targets != IGNORE
        if bool(valid.all()):
            return cls(targets.unsqueeze(-1), torch.full(targets.shape[-1:] + (1,), -1.0, dtype=dtype,
                                                         device=targets.device), None)
        keep = valid.to(dtype).unsqueeze(-1)
        return cls(torch.where(valid, targets, torch.zeros_like(targets)).unsqueeze(-1), keep.neg(), keep)

    def __getitem__(self, t) -> "Targets":
        """Step t's rows of a segment's (T, B, 1) preparation."""
        if self.keep is None:
            return Targets(self.index[t], self.minus_one, None)
        return Targets(self.index[t], self.minus_one[t], self.keep[t])


def _cross_entropy_in_place(logits: torch.Tensor, tg: Targets, keep_grad: bool):
    """The summed cross-entropy of ``logits`` [N, V] (rows whose target is IGNORE count nothing), computed in
    the logits' own buffer; with ``keep_grad`` the buffer ends holding d(sum)/d(logits) = softmax - one_hot
    (zero on ignored rows). One [N, V] buffer where log_softmax + nll_loss and their backward make three."""
    logits.sub_(logits.amax(1, keepdim=True))           # logits - max: exp below cannot overflow
    picked = logits.gather(1, tg.index)                 # the target's shifted logit
    total = logits.exp_().sum(1, keepdim=True)          # sum of exp over the vocabulary
    rows = total.log().sub_(picked)                     # -log softmax at the target, [N, 1]
    loss = (rows if tg.keep is None else rows.mul_(tg.keep)).sum()
    if keep_grad:
        logits.div_(total).scatter_add_(1, tg.index, tg.minus_one)   # softmax - one_hot(target)
        if tg.keep is not None:
            logits.mul_(tg.keep)                                      # ignored rows: no gradient
    return loss


class _OutputLoss(Function):
    """The output layer and the step's cross-entropy as one node. Forward leaves d(loss)/d(logits) in the logits'
    buffer (the only [N, V] tensor it keeps); backward scales it in place by the incoming gradient and forms the
    three products: the weight gradient added into ``.grad`` (``_output_weight_grad``: transposed on the CPU), the
    bias gradient, and the input's gradient. Its backward consumes the buffer, so it runs once."""

    @staticmethod
    def forward(ctx, x, weight, bias, targets, divisor):
        logits = F.linear(x, weight, bias)
        loss = _cross_entropy_in_place(logits, targets, keep_grad=True).div_(divisor)
        ctx.weight, ctx.bias, ctx.divisor, ctx.used = weight, bias, divisor, False
        # saved, not kept on ctx: saved-tensor hooks (torch.utils.checkpoint's recomputation, offloading, the
        # saved-tensors meter) must see the [N, V] buffer
        ctx.save_for_backward(x, logits)
        return loss

    @staticmethod
    def backward(ctx, grad):
        if ctx.used:
            raise RuntimeError("output_loss: backward ran twice through the same step (its buffer is consumed by "
                               "the first); build the step again instead of retain_graph=True")
        ctx.used = True
        x, g = ctx.saved_tensors
        g.mul_(grad / ctx.divisor)
        w = ctx.weight
        if w.requires_grad:
            _output_weight_grad(w).addmm_(g.t(), x)
        if ctx.bias is not None and ctx.bias.requires_grad:
            _grad_of(ctx.bias).add_(g.sum(0))
        grad_x = g @ w if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None, None


def output_loss(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets,
                divisor: float) -> torch.Tensor:
    """``F.cross_entropy(F.linear(x, weight, bias), targets, reduction="sum", ignore_index=IGNORE) / divisor``
    (x: [N, H], targets: [N]) computed in one [N, V] buffer, with the output layer's weight and bias gradients
    added in place into ``.grad`` (see ``_OutputLoss``). The loss has the same value with and without autograd.
    ``targets``: a LongTensor of ids or their ``Targets`` (prepared once per segment: fewer ops per step)."""
    if not isinstance(targets, Targets):
        targets = Targets.of(targets, x.dtype)
    if not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)):
        return _cross_entropy_in_place(F.linear(x, weight, bias), targets, keep_grad=False).div_(divisor)
    return _OutputLoss.apply(x, weight, bias, targets, divisor)


class _GatesInto(Function):
    """F.linear(x, wx, bx) + F.linear(h, wh, bh) as one autograd node (one backward call instead of three nodes);
    the same products, the sum formed in place; weight and bias gradients added in place into ``.grad``."""

    @staticmethod
    def forward(ctx, x, h, wx, wh, bx, bh):
        ctx.weights = (wx, wh, bx, bh)
        ctx.save_for_backward(x, h)
        return F.linear(x, wx, bx).add_(F.linear(h, wh, bh))

    @staticmethod
    def backward(ctx, grad):
        x, h = ctx.saved_tensors
        wx, wh, bx, bh = ctx.weights
        for w, inp in ((wx, x), (wh, h)):
            if w.requires_grad:
                _grad_of(w).addmm_(grad.t(), inp)
        for b in (bx, bh):
            if b is not None and b.requires_grad:
                _grad_of(b).add_(grad.sum(0))
        grad_x = grad @ wx if ctx.needs_input_grad[0] else None
        grad_h = grad @ wh if ctx.needs_input_grad[1] else None
        return grad_x, grad_h, None, None, None, None


def gates_into(x: torch.Tensor, h: torch.Tensor, wx: torch.Tensor, wh: torch.Tensor, bx: torch.Tensor | None = None,
               bh: torch.Tensor | None = None) -> torch.Tensor:
    """``linear_into(x, wx, bx) + linear_into(h, wh, bh)`` (2-D inputs) with the same values, in one node."""
    if not (torch.is_grad_enabled() and (wx.requires_grad or wh.requires_grad)):
        return F.linear(x, wx, bx).add_(F.linear(h, wh, bh))
    return _GatesInto.apply(x, h, wx, wh, bx, bh)
