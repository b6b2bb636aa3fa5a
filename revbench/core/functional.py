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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd import Function

IGNORE = -100    # target id the cross-entropy ignores (padding)


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

