"""FGD's passes as one hand-tiled CPU kernel forward and one backward (``fgd_kernel.cpp``).

The kernel reads the student and teacher maps from memory once forward and once backward (tiles
of locations, all channels, read twice from cache), where the eager and compiled forms read them
four times (:mod:`.fgd_blocked`, :mod:`.fgd_compiled`). It also does the small steps around the
passes (the attentions' and contexts' softmaxes, the sums of the focal and attention terms, the
attention loss's gradient), which as torch ops cost more than the passes on the small levels;
the caller runs only the GcBlocks' channel transforms. Built and loaded by
:class:`~mmdistill.losses.fast.cpu_kernel.CpuKernel`; float32 and float64 maps on the CPU.
"""
from __future__ import annotations

import ctypes
import itertools

import torch
from torch import Tensor

from mmdistill.losses.fast.cpu_kernel import CpuKernel, ptr

_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
KERNEL = CpuKernel('fgd_kernel.cpp', dict(
    fgd_forward=lambda real: [_P] * 4 + [real] * 2 + [_P] + [real] * 4 + [_L] * 5 + [_P] * 5
    + [_I],
    fgd_backward=lambda real: [_P] * 9 + [real] * 5 + [_L] * 5 + [_P] * 4 + [_L, _I],
    fgd_pixel_weights=lambda real: [_P] * 3 + [_L] * 3 + [real] * 2 + [_P, _I]))
#: locations per tile: the tile's rows of S and T (256 channels, 512 KiB in float32) stay in
#: cache for the second sweep (256 measured faster than 128 and 512 on an AMD EPYC)
TILE = 256
#: a student gradient of more bytes than this is written with non-temporal stores (to memory,
#: not read first: 10.5 against 11.1 ms at 8 x 256 x 15200 float32 on an AMD EPYC); a smaller
#: one, which may stay in cache, in place (0.58 against 0.75 ms streamed at 8 x 256 x 950)
STREAM_BYTES = 16 << 20


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


def _weights(c: int, hw: int, temp: float, gamma: float, lambda_: float) -> tuple[float, ...]:
    """The kernel's ``a_scale = 1 / (C temp)``, ``c_scale = 1 / (HW temp)``, gamma, lambda."""
    return 1.0 / (c * temp), 1.0 / (hw * temp), gamma, lambda_


def forward(S3: Tensor, T3: Tensor, w_s: Tensor, w_t: Tensor, b_s: float, b_t: float,
            pix_weight: Tensor, temp: float, gamma: float,
            lambda_: float) -> tuple[Tensor, Tensor, Tensor]:
    """The kernel's forward on contiguous ``(N, C, HW)`` maps, the ``(C,)`` conv_mask weights
    and biases of both GcBlocks and the ``(N, HW)`` ``pix_weight``.

    Returns ``maps`` (4, N, HW): ``spatial_s, spatial_t`` (the attentions ``A^S``), ``p_s, p_t``
    (the contexts' softmax weights); ``vecs`` (7, N, C): ``channel_s, channel_t`` (``A^C``),
    ``dsum = sum_hw d``, ``q2 = sum_hw d^2``, ``q1 = sum_hw d^2 A^S_t pix_weight``
    (``d = S - T``), ``ctx_s, ctx_t``; ``terms`` (N,): per image, the loss times N less the
    channel transforms' terms: ``sum_c A^C_t q1 + gamma (attention loss) + lambda sum_c q2``.
    """
    n, c, hw = S3.shape
    chunk, chunks = _chunks(n, hw)
    dtype = S3.dtype
    maps = torch.empty(4, n, hw, dtype=dtype)
    vecs = torch.empty(7, n, c, dtype=dtype)
    terms = torch.empty(n, dtype=dtype)
    work_rows = torch.empty(n * chunks * 7 * c, dtype=dtype)
    work_max = torch.empty(n * chunks * 3, dtype=dtype)
    KERNEL.fn('fgd_forward', dtype)(
        ptr(S3), ptr(T3), ptr(w_s), ptr(w_t), b_s, b_t, ptr(pix_weight),
        *_weights(c, hw, temp, gamma, lambda_), n, c, hw, chunk, TILE, ptr(maps), ptr(vecs),
        ptr(terms), ptr(work_rows), ptr(work_max), torch.get_num_threads())
    return maps, vecs, terms


def backward(S3: Tensor, T3: Tensor, maps: Tensor, vecs: Tensor, pix_weight: Tensor,
             g_ctx_s: Tensor, g_ctx_t: Tensor, g_dsum: Tensor, w_s: Tensor, temp: float,
             gamma: float, lambda_: float, grad_out: float) -> tuple[Tensor, Tensor, Tensor]:
    """The kernel's backward: ``dS`` (N, C, HW), the conv_mask weight gradients (2, C) and bias
    gradients (2,) of both GcBlocks, from :func:`forward`'s ``maps`` and ``vecs``, the
    gradients of the contexts and of ``dsum`` (N, C) through the channel transforms, and the
    loss's gradient ``grad_out``."""
    n, c, hw = S3.shape
    chunk, chunks = _chunks(n, hw)
    dtype = S3.dtype
    small = [x.to(dtype).contiguous() for x in (g_ctx_s, g_ctx_t, g_dsum, w_s)]
    grad_S = torch.empty_like(S3)
    conv_grads = torch.empty(2, c, dtype=dtype)
    bias_grads = torch.empty(2, dtype=dtype)
    work = torch.empty(n * chunks * 2 * (c + 1), dtype=dtype)
    KERNEL.fn('fgd_backward', dtype)(
        ptr(S3), ptr(T3), ptr(maps), ptr(vecs), ptr(pix_weight), *map(ptr, small),
        *_weights(c, hw, temp, gamma, lambda_), grad_out, n, c, hw, chunk, TILE, ptr(grad_S),
        ptr(conv_grads), ptr(bias_grads), ptr(work), STREAM_BYTES, torch.get_num_threads())
    return grad_S, conv_grads, bias_grads


def pixel_weights(counts: list[int], bounds: Tensor, value: Tensor, height: int, width: int,
                  alpha: float, beta: float) -> Tensor:
    """FGD's ``alpha M_fg + beta M_bg`` (N, H * W) in ``value``'s dtype from the boxes' cells
    (:func:`~mmdistill.losses.fgd.box_cells`: boxes per image, ranges, values): the masks of
    :func:`~mmdistill.losses.fgd.fgd_masks` painted box by box."""
    dtype = value.dtype
    pix = torch.empty(len(counts), height * width, dtype=dtype)
    ends = torch.tensor(list(itertools.accumulate(counts)), dtype=torch.long)
    bounds = bounds.to(torch.float64).contiguous()
    value = value.contiguous()
    KERNEL.fn('fgd_pixel_weights', dtype)(
        ptr(ends), ptr(bounds), ptr(value), len(counts), height, width, alpha, beta, ptr(pix),
        torch.get_num_threads())
    return pix
