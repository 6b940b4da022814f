"""FGD's passes as one hand-tiled CPU kernel forward and one backward (``fgd_kernel.cpp``).

The kernel reads the student and teacher maps from memory once forward and once backward (tiles
of locations, all channels, read twice from cache), where the eager and compiled forms read them
four times (:mod:`.fgd_blocked`, :mod:`.fgd_compiled`). Built and loaded by
:class:`~mmdistill.losses.fast.cpu_kernel.CpuKernel`; float32 and float64 maps on the CPU.

What the passes compute is described in :mod:`mmdistill.losses.fast.fgd`; this module turns
the kernel's per-task partial sums into the same reductions the other forms return.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from mmdistill.losses.fast.cpu_kernel import CpuKernel, ptr

_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
KERNEL = CpuKernel('fgd_kernel.cpp', dict(
    fgd_forward=lambda real: [_P] * 4 + [real] * 2 + [_P, real] + [_L] * 5 + [_P] * 6 + [_I],
    fgd_backward=lambda real: [_P] * 15 + [_L] * 5 + [_P] * 4 + [_I]))
#: locations per tile: the tile's rows of S and T (256 channels, 512 KiB in float32) stay in
#: cache for the second sweep (256 measured faster than 128 and 512 on an AMD EPYC)
TILE = 256


def available(x: Tensor) -> bool:
    """Whether the kernel runs on ``x`` (float32 or float64 on the CPU, the kernel built)."""
    return KERNEL.available(x)


def _chunks(n: int, hw: int) -> tuple[int, int]:
    """(locations per task, tasks per image): whole tiles, at least four tasks per thread where
    the maps allow."""
    tasks_per_image = max(1, -(-4 * torch.get_num_threads() // n))
    per_task = -(-hw // tasks_per_image)
    chunk = max(TILE, -(-per_task // TILE) * TILE)
    return chunk, -(-hw // chunk)


def forward_sums(S3: Tensor, T3: Tensor, w_s: Tensor, w_t: Tensor, b_s: float, b_t: float,
                 pix_weight: Tensor, a_scale: float) -> tuple[Tensor, ...]:
    """The kernel's forward on contiguous ``(N, C, HW)`` maps, ``(C,)`` conv_mask weights and
    biases, ``(N, HW)`` ``pix_weight``; ``a_scale = 1 / (C temp)``.

    Returns ``as_hw, at_hw, ls, lt`` (N, HW) and ``as_c, at_c, dsum, q2`` (N, C), and the
    softmax numerator sums ``q1_e, ctx_s_e, ctx_t_e`` (N, C) against ``max_a, max_s, max_t``
    (N, 1): the maxima over the image's locations of ``at_hw * a_scale``, ``ls`` and ``lt``.
    """
    n, c, hw = S3.shape
    chunk, chunks = _chunks(n, hw)
    dtype = S3.dtype
    cols = torch.empty(4, n, hw, dtype=dtype)
    rows = torch.zeros(n, chunks, 7, c, dtype=dtype)
    maxima = torch.empty(n, chunks, 3, dtype=dtype)
    w_s, w_t = w_s.to(dtype).contiguous(), w_t.to(dtype).contiguous()
    pix_weight = pix_weight.contiguous()
    KERNEL.fn('fgd_forward', dtype)(
        ptr(S3), ptr(T3), ptr(w_s), ptr(w_t), b_s, b_t, ptr(pix_weight), a_scale, n, c, hw,
        chunk, TILE, *map(ptr, cols), ptr(rows), ptr(maxima), torch.get_num_threads())
    top = maxima.amax(1, keepdim=True)  # (N, 1, 3)
    rescaled = rows[:, :, 4:] * torch.exp(maxima - top)[..., None]  # (N, chunks, 3, C)
    sums = rows[:, :, :4].sum(1)
    return (*cols, *sums.unbind(1), *rescaled.sum(1).unbind(1), *top[:, 0, :, None].unbind(1))


def backward_pass(S3: Tensor, T3: Tensor, two_q2: Tensor, two_q1: Tensor, g_as_c: Tensor,
                  g_dsum: Tensor, g_ctx_s: Tensor, g_ctx_t: Tensor, w_s: Tensor, weight: Tensor,
                  g_as_hw: Tensor, p_s: Tensor, p_t: Tensor, k_s: Tensor,
                  k_t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The kernel's backward: ``dS`` (N, C, HW), ``g_ls, g_lt`` (N, HW) and the conv_mask
    weight gradients ``sum_n sum_hw g_l F`` (C,) of S and T, from (N, C) coefficients, ``w_s``
    (C,), (N, HW) maps and the (N,) ``k = sum_c g_ctx ctx``."""
    n, c, hw = S3.shape
    chunk, chunks = _chunks(n, hw)
    dtype = S3.dtype
    small = [x.to(dtype).contiguous() for x in (two_q2, two_q1, g_as_c, g_dsum, g_ctx_s,
                                                 g_ctx_t, w_s, weight, g_as_hw, p_s, p_t,
                                                 k_s, k_t)]
    grad_S = torch.empty_like(S3)
    g_l = torch.empty(2, n, hw, dtype=dtype)
    rows = torch.zeros(n * chunks, 2, c, dtype=dtype)
    KERNEL.fn('fgd_backward', dtype)(
        ptr(S3), ptr(T3), *map(ptr, small), n, c, hw, chunk, TILE, ptr(grad_S), ptr(g_l[0]),
        ptr(g_l[1]), ptr(rows), torch.get_num_threads())
    rows = rows.sum(0)
    return grad_S, g_l[0], g_l[1], rows[0], rows[1]
