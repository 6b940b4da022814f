"""Compiled forms of the losses' elementwise-and-reduction cores (``compiled=True``).

``torch.compile`` (Inductor: C++/OpenMP on CPUs, Triton on GPUs) fuses a core's passes over the
feature maps into a few kernels, near the memory-traffic bound that
``tools/analysis/benchmark_losses.py`` prints. Shapes are dynamic from the first call, so the
five FPN levels and every image size share one graph. Where compiling is not possible (no C++
compiler, an unsupported platform) the first call says why, once, and the eager form runs.

A scalar loss whose gradient w.r.t. the student map needs nothing but the forward's own
reductions can go further: :func:`value_and_grad` runs a core that returns the loss *and* that
gradient from one compiled pass (read the student and the teacher once, write the gradient
once: the bound), and the backward only hands the gradient on.
"""
from __future__ import annotations

import torch
from mmengine.logging import print_log
from torch import Tensor
from torch.autograd.function import once_differentiable


class CompiledFn:
    """``fn`` that runs compiled (``torch.compile(fn, dynamic=True)``) when asked, else eager.

    The compiled and the eager forms compute the same function (the tests check it in float64).
    Compiling happens on the first compiled call (forward) and on its first backward; the loss
    benchmark reports that time.
    """

    def __init__(self, fn) -> None:
        self.fn = fn
        self._compiled = None
        self.failed: str | None = None

    def __call__(self, *args, compiled: bool = False):
        if not compiled or self.failed is not None:
            return self.fn(*args)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=True)
        try:
            return self._compiled(*args)
        except Exception as err:  # compiling failed: say so once, then run eager
            self.failed = f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'
            print_log(f'{self.fn.__qualname__}: torch.compile failed ({self.failed}); running '
                      'the eager form', logger='current', level=30)
            return self.fn(*args)


def compiled(fn) -> CompiledFn:
    """Decorator: :class:`CompiledFn` of ``fn``."""
    return CompiledFn(fn)


def _detached(*args) -> tuple:
    """``args`` with tensors detached: the compiled core is guarded on ``requires_grad``, so
    this keeps one graph for student and teacher, with and without a gradient."""
    return tuple(a.detach() if isinstance(a, Tensor) else a for a in args)


class _ValueAndGrad(torch.autograd.Function):
    """Autograd node of :func:`value_and_grad`: the gradient was computed in the forward."""

    @staticmethod
    def forward(ctx, core: CompiledFn, use_compiled: bool, student: Tensor, *args):
        value, grad = core(*_detached(student, *args), True, compiled=use_compiled)
        ctx.save_for_backward(grad)
        ctx.num_args = len(args)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        grad, = ctx.saved_tensors
        # the usual case (the loss summed into the total) needs no pass over the gradient
        if not (grad_out.device.type == 'cpu' and float(grad_out) == 1.0):
            grad = grad.mul_(grad_out.to(grad.dtype))
        return (None, None, grad, *([None] * ctx.num_args))


def value_and_grad(core: CompiledFn, student: Tensor, *args, compiled: bool = False) -> Tensor:
    """``core``'s scalar value, differentiable w.r.t. ``student`` through the gradient ``core``
    computes itself.

    ``core(student, *args, want_grad)`` returns ``(value, d value / d student)`` (``grad`` None
    when ``want_grad`` is False); no other argument gets a gradient (the teacher's map is
    detached anyway). Without a gradient to compute (no grad mode, or ``student`` needs none)
    only the value is computed. Not twice differentiable. The backward multiplies the gradient
    in place by the incoming gradient unless that is 1 (the loss added to the total).
    """
    if torch.is_grad_enabled() and student.requires_grad:
        return _ValueAndGrad.apply(core, compiled, student, *args)
    return core(*_detached(student, *args), False, compiled=compiled)[0]


__all__ = ['CompiledFn', 'compiled', 'value_and_grad']
