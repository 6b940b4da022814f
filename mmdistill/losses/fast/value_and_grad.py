"""A scalar loss whose core returns its value and its gradient w.r.t. the student together.

When the gradient needs nothing but the forward's own reductions, one compiled pass can read the
student and the teacher once and write the gradient once (the least memory traffic any form
needs); the backward then only hands that gradient on.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _detached(*args) -> tuple:
    """``args`` with tensors detached: the compiled core is guarded on ``requires_grad``, so
    this keeps one graph for student and teacher, with and without a gradient."""
    return tuple(a.detach() if isinstance(a, Tensor) else a for a in args)


class _ValueAndGrad(torch.autograd.Function):
    """Autograd node of :func:`value_and_grad`: the gradient was computed in the forward."""

    @staticmethod
    def forward(ctx, core: Callable, use_compiled: bool, student: Tensor, *args):
        value, grad = core(*_detached(student, *args), True, compiled=use_compiled)
        ctx.save_for_backward(grad)
        ctx.num_args = len(args)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        grad, = ctx.saved_tensors
        return (None, None, scale_saved_grad(grad, grad_out), *([None] * ctx.num_args))


def scale_saved_grad(grad: Tensor, grad_out: Tensor) -> Tensor:
    """A gradient computed in the forward for a loss gradient of 1, for ``grad_out``: the loss
    summed into the total needs no pass over it; a weighted one gets a new tensor, so that the
    saved gradient stays as it is for a second backward through a retained graph
    (DistillBalanceHook measures each loss's gradient that way)."""
    if grad_out.device.type == 'cpu' and float(grad_out) == 1.0:
        return grad
    return grad * grad_out.to(grad.dtype)


def value_and_grad(core: Callable, student: Tensor, *args, compiled: bool = False) -> Tensor:
    """``core``'s scalar value, differentiable w.r.t. ``student`` through the gradient ``core``
    computes itself.

    ``core(student, *args, want_grad)`` returns ``(value, d value / d student)`` (``grad`` None
    when ``want_grad`` is False); no other argument gets a gradient (the teacher's map is
    detached anyway). Without a gradient to compute (no grad mode, or ``student`` needs none)
    only the value is computed. Not twice differentiable. The backward multiplies the gradient
    by the incoming gradient unless that is 1 (the loss added to the total).
    """
    if torch.is_grad_enabled() and student.requires_grad:
        return _ValueAndGrad.apply(core, compiled, student, *args)
    return core(*_detached(student, *args), False, compiled=compiled)[0]


__all__ = ['scale_saved_grad', 'value_and_grad']
