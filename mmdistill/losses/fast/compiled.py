"""Compile-or-eager wrapper of the fast forms' cores (``compiled=True`` on a loss).

``torch.compile`` (Inductor: C++/OpenMP on CPUs, Triton on GPUs) fuses a core's passes over the
feature maps into a few kernels. Shapes are dynamic from the first call, so the five FPN levels
and every image size share one graph. Where compiling is not possible (no C++ compiler, an
unsupported platform) the first call says why, once, and the eager form runs.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from mmengine.logging import print_log


class CompiledFn:
    """``fn`` that runs compiled (``torch.compile(fn, dynamic=True)``) when asked, else eager.

    The compiled and the eager forms compute the same function (the tests check it in float64).
    Compiling happens on the first compiled call (forward) and on its first backward; the loss
    benchmark reports that time.
    """

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self._compiled: Callable | None = None
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


def compiled(fn: Callable) -> CompiledFn:
    """Decorator: :class:`CompiledFn` of ``fn``."""
    return CompiledFn(fn)


__all__ = ['CompiledFn', 'compiled']
