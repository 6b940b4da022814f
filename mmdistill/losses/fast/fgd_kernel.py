"""FGD's loss of one level and all its gradients as one hand-tiled CPU kernel (``fgd_kernel.cpp``).

The kernel reads the student and teacher maps from memory twice (tiles of locations, all
channels, each read twice more from cache): once for the loss's reductions, once for the
student's gradient, where the eager and compiled forms read them four times
(:mod:`.fgd_blocked`, :mod:`.fgd_compiled`). The small steps between (softmaxes, the GcBlocks'
channel transforms and their backward, the sums over tasks) run in the kernel too: as torch ops
and autograd they cost more than the passes on the small levels. The gradients are computed
with the loss, in the forward (as :mod:`.value_and_grad` does), so the maps of a small level are
read the second time from cache. Built and loaded by
:class:`~mmdistill.losses.fast.cpu_kernel.CpuKernel`; float32 and float64 on the CPU.
"""
from __future__ import annotations

import ctypes
import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from mmdistill.losses.fast.cpu_kernel import CpuKernel, l2_bytes, ptr

_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
KERNEL = CpuKernel('fgd_kernel.cpp', dict(
    fgd_loss=lambda real: [_P] * 4 + [real] * 6 + [_L] * 5 + [_P] * 2 + [_I, _I],
    fgd_pixel_weights=lambda real: [_P] * 3 + [_L] * 3 + [real] * 2 + [_P, _I]),
    restypes=dict(fgd_loss=lambda real: real))
#: a student map of more bytes than this is taken to lie in memory, not in cache: it is read in
#: tiles of ``TILE_IN_MEMORY`` locations and its gradient written with non-temporal stores (to
#: memory, not read first: 10.5 against 11.1 ms at 8 x 256 x 15200 float32 on an AMD EPYC); a
#: smaller one in tiles of ``TILE_IN_CACHE``, its gradient in place (0.58 against 0.75 ms
#: streamed at 8 x 256 x 950)
IN_MEMORY_BYTES = 16 << 20
#: locations per tile for maps in cache: the tile's rows of S and T (256 channels: 512 KiB in
#: float32) stay in cache for the second sweep (8 x 256 x 950 on an AMD EPYC: 1.2 ms for the
#: loss and gradients against 1.5 at 128 locations)
TILE_IN_CACHE = 256
#: locations per tile for maps in memory, at most: the second sweep prefetches the next tile's
#: rows, and two tiles of S and T must fit in half the L2 (:func:`_tile`; 128 at 256 channels in
#: float32 with a 1 MiB L2; on an AMD EPYC, 8 x 256 x 15200: 15.5 ms at 128 locations against
#: 19.7 at 256 without the prefetch; 64 and 96 slower, 160 alike)
TILE_IN_MEMORY = 256


def available(x: Tensor) -> bool:
    """Whether the kernel runs on ``x`` (float32 or float64 on the CPU, the kernel built)."""
    return KERNEL.available(x)


def _in_memory(S3: Tensor) -> bool:
    """Whether the student map ``S3`` is taken to lie in memory (``IN_MEMORY_BYTES``)."""
    return S3.numel() * S3.element_size() > IN_MEMORY_BYTES


def _tile(S3: Tensor) -> int:
    """Locations per tile for the ``(N, C, HW)`` student map ``S3``: ``TILE_IN_CACHE`` where
    it may lie in cache, else the most locations, a multiple of 16 (at least 16), that put two
    tiles of S and T in half the L2, up to ``TILE_IN_MEMORY``."""
    if not _in_memory(S3):
        return TILE_IN_CACHE
    per_location = 2 * 2 * S3.shape[1] * S3.element_size()  # two tiles of S and T
    return min(TILE_IN_MEMORY, max(16, l2_bytes() // 2 // per_location // 16 * 16))


def _chunks(n: int, hw: int, tile: int) -> tuple[int, int]:
    """(locations per task, tasks per image): whole tiles of ``tile`` locations, at least four
    tasks per thread where the maps allow."""
    tasks_per_image = max(1, -(-4 * torch.get_num_threads() // n))
    per_task = -(-hw // tasks_per_image)
    chunk = max(tile, -(-per_task // tile) * tile)
    return chunk, -(-hw // chunk)


def loss_and_grads(S3: Tensor, T3: Tensor, pix_weight: Tensor, params: Sequence[Tensor],
                   eps: tuple[float, float], temp: float, gamma: float, lambda_: float,
                   want_grad: bool) -> tuple[Tensor, Tensor | None, list[Tensor] | None]:
    """FGD's loss of one level on contiguous ``(N, C, HW)`` maps and the ``(N, HW)``
    ``pix_weight``, with the loss's parameters ``params`` in the order of
    :func:`mmdistill.losses.fast.fgd._params` (all in the maps' dtype) and the LayerNorms'
    ``eps`` (student's, teacher's).

    Returns the loss (0-dim) and, with ``want_grad``, its gradient w.r.t. the student map
    ``(N, C, HW)`` and w.r.t. each parameter (for a loss gradient of 1); else None, None.
    """
    n, c, hw = S3.shape
    tile = _tile(S3)
    chunk, _ = _chunks(n, hw, tile)
    dtype = S3.dtype
    params = [p.detach().contiguous() for p in params]
    addresses = (ctypes.c_void_p * len(params))(*map(ptr, params))
    grad_S = torch.empty_like(S3) if want_grad else None
    grads = torch.empty(sum(p.numel() for p in params), dtype=dtype) if want_grad else None
    value = KERNEL.fn('fgd_loss', dtype)(
        ptr(S3), ptr(T3), ptr(pix_weight), addresses, *eps, 1.0 / (c * temp), 1.0 / (hw * temp),
        gamma, lambda_, n, c, hw, chunk, tile, None if grad_S is None else ptr(grad_S),
        None if grads is None else ptr(grads), int(_in_memory(S3)), torch.get_num_threads())
    value = torch.tensor(value, dtype=dtype)
    if not want_grad:
        return value, None, None
    return value, grad_S, [g.view_as(p) for g, p in
                           zip(grads.split([p.numel() for p in params]), params)]


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
