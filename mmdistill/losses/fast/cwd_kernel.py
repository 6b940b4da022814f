"""CWD's divergence and its gradient as one CPU kernel (``cwd_kernel.cpp``).

Each row (a channel of an image) is read from memory once and the gradient written once, as in
the compiled form (:mod:`.cwd`), but its exponentials in float32 are a polynomial of degree 7
(under float32's rounding; float64: the C library's ``exp``), which the compiler vectorises
in-line where torch's vectorised ``exp`` costs about as much as a pass over memory. Built and
loaded by :class:`~mmdistill.losses.fast.cpu_kernel.CpuKernel`.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from mmdistill.losses.fast.cpu_kernel import CpuKernel, ptr

_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
KERNEL = CpuKernel('cwd_kernel.cpp', dict(
    cwd_rows=lambda real: [_P, _P, _L, _L, real, real, _P, _P, _I]))


def available(x: Tensor) -> bool:
    """Whether the kernel runs on ``x`` (float32 or float64 on the CPU, the kernel built)."""
    return KERNEL.available(x)


def channel_kl_and_grad_cpu(logits_S: Tensor, logits_T: Tensor, tau: float, scale: float,
                            want_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``scale * channel_kl(S, T, tau)`` and its gradient w.r.t. ``S`` (None unless
    ``want_grad``) of ``(N*C, H*W)`` logits, by the kernel (:func:`available` first);
    ``tau > 0``, as :class:`~mmdistill.losses.cwd.CWDLoss` checks at build."""
    dtype = logits_S.dtype
    s, t = logits_S.contiguous(), logits_T.to(dtype).contiguous()
    rows, hw = s.shape
    kl = torch.empty(rows, dtype=dtype)
    grad = torch.empty_like(s) if want_grad else None
    KERNEL.fn('cwd_rows', dtype)(ptr(s), ptr(t), rows, hw, 1.0 / tau, scale / tau, ptr(kl),
                                 None if grad is None else ptr(grad), torch.get_num_threads())
    return kl.sum() * scale, grad


__all__ = ['available', 'channel_kl_and_grad_cpu']
