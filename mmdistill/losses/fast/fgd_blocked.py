"""FGD's eager passes over the ``(N, C, HW)`` maps, block by block on the CPU.

A pass reads the student ``S`` and the teacher ``T`` in blocks small enough that a block and its
temporaries stay in each core's cache: the maps are read from memory once per pass, however many
ops the pass runs on them. On other devices (CUDA) a pass is one set of whole-tensor ops. What
the passes compute is described in :mod:`mmdistill.losses.fast.fgd`.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
from torch import Tensor

# Elements per thread in a block on the CPU: a block of the student, the teacher and a few
# temporaries of this size stays in each core's cache, and the block is large enough that the
# per-op overhead (and the synchronisation of the threads of each op) stays small.
_CPU_BLOCK_PER_THREAD = 1 << 18


def _blocks(n: int, c: int, hw: int, device: torch.device) -> Iterator[tuple[slice, slice]]:
    """Slices ``(images, channels)`` that cover an ``(N, C, HW)`` tensor block by block.

    On the CPU, blocks of about ``_CPU_BLOCK_PER_THREAD`` elements per thread (several images
    when one image is smaller, else channel ranges of one image); elsewhere the whole tensor.
    """
    if device.type != 'cpu':
        yield slice(0, n), slice(0, c)
        return
    block = _CPU_BLOCK_PER_THREAD * max(1, torch.get_num_threads())
    if c * hw <= block:
        step = max(1, block // (c * hw))
        for i in range(0, n, step):
            yield slice(i, min(n, i + step)), slice(0, c)
    else:
        step = max(1, block // hw)
        for i in range(n):
            for j in range(0, c, step):
                yield slice(i, i + 1), slice(j, min(c, j + step))


def rowdot(x: Tensor, v: Tensor, out: Tensor | None = None) -> Tensor:
    """``(B, R, HW) x (B, HW) -> (B, R)``: the dot product of every row of ``x[b]`` with ``v[b]``.

    One matrix-vector product per image (``torch.mv`` reads the rows at full speed on the CPU,
    where ``bmm`` with a vector does not).
    """
    if out is None:
        out = x.new_empty(x.shape[:2])
    for i in range(x.shape[0]):
        torch.mv(x[i], v[i], out=out[i])
    return out


def _abs_sums_and_logits(x: Tensor, abs_c: Tensor, abs_hw: Tensor, logits: Tensor,
                         weight: Tensor, ones: Tensor) -> Tensor:
    """For a block ``x`` (B, R, HW): write ``sum_hw |x|`` to ``abs_c`` (B, R), add ``sum_r |x|`` to
    ``abs_hw`` and the 1x1 conv ``weight . x`` (no bias) to ``logits`` (B, 1, HW views), with
    ``weight`` and ``ones`` (B, 1, R); return ``|x|``."""
    value = x.abs()
    torch.sum(value, 2, out=abs_c)
    abs_hw.baddbmm_(ones, value)
    logits.baddbmm_(weight, x)
    return value


def teacher_pass(T3: Tensor, w_t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``T3`` (N, C, HW), ``w_t`` (N, 1, C) conv_mask weights -> ``sum_hw |T|`` (N, C),
    ``sum_c |T|`` (N, HW) and the context logits ``w_t . T`` without bias (N, HW)."""
    n, c, hw = T3.shape
    zeros = functools.partial(torch.zeros, dtype=T3.dtype, device=T3.device)
    ones = torch.ones(1, 1, c, dtype=T3.dtype, device=T3.device).expand(n, 1, c)
    at_c, at_hw, lt = zeros(n, c), zeros(n, 1, hw), zeros(n, 1, hw)
    for i, j in _blocks(n, c, hw, T3.device):
        _abs_sums_and_logits(T3[i, j], at_c[i, j], at_hw[i], lt[i], w_t[i, :, j], ones[i, :, j])
    return at_c, at_hw[:, 0], lt[:, 0]


def student_pass(S3: Tensor, T3: Tensor, w_s: Tensor,
                 weight: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``S3, T3`` (N, C, HW), ``w_s`` (N, 1, C), focal weights ``P`` (N, HW) -> ``sum_hw |S|``
    (N, C), ``sum_c |S|`` (N, HW), logits ``w_s . S`` (N, HW) and, with ``d = S - T``,
    ``Q1 = sum_hw d^2 P``, ``Q2 = sum_hw d^2``, ``D = sum_hw d`` (N, C each)."""
    n, c, hw = S3.shape
    zeros = functools.partial(torch.zeros, dtype=S3.dtype, device=S3.device)
    ones = torch.ones(1, 1, c, dtype=S3.dtype, device=S3.device).expand(n, 1, c)
    as_c, as_hw, ls = zeros(n, c), zeros(n, 1, hw), zeros(n, 1, hw)
    q1, q2, dsum = zeros(n, c), zeros(n, c), zeros(n, c)
    for i, j in _blocks(n, c, hw, S3.device):
        s, t = S3[i, j], T3[i, j]
        diff = _abs_sums_and_logits(s, as_c[i, j], as_hw[i], ls[i], w_s[i, :, j], ones[i, :, j])
        torch.sub(s, t, out=diff)
        torch.sum(diff, 2, out=dsum[i, j])
        diff.square_()
        rowdot(diff, weight[i], out=q1[i, j])
        torch.sum(diff, 2, out=q2[i, j])
    return as_c, as_hw[:, 0], ls[:, 0], q1, q2, dsum


def student_grad(S3: Tensor, T3: Tensor, g_q1: Tensor, g_q2: Tensor, weight: Tensor,
                 g_as_c: Tensor, g_as_hw: Tensor, g_dsum: Tensor, w_s: Tensor, g_ls: Tensor,
                 g_ctx_s: Tensor, p_s: Tensor) -> Tensor:
    """``dS`` (N, C, HW) in one pass, from (N, C) and (N, HW) coefficients and ``w_s`` (C,)::

        dS = 2 d (g_Q2 + g_Q1 P) + sign(S) (g_Ac + g_As) + g_D + w_s g_ls + g_ctx p_s
    """
    n, c, hw = S3.shape
    left = torch.stack([g_dsum, w_s.expand(n, c), g_ctx_s], dim=2)  # (N, C, 3)
    right = torch.stack([torch.ones_like(g_ls), g_ls, p_s], dim=1)  # (N, 3, HW)
    two_q1, two_q2 = (2 * g_q1)[..., None], (2 * g_q2)[..., None]
    g_as_c, g_as_hw, weight = g_as_c[..., None], g_as_hw[:, None], weight[:, None]
    grad_S = torch.empty_like(S3)
    for i, j in _blocks(n, c, hw, S3.device):
        s, g = S3[i, j], grad_S[i, j]
        torch.sub(s, T3[i, j], out=g)
        scale = torch.baddbmm(two_q2[i, j], two_q1[i, j], weight[i])
        g.mul_(scale)
        sign = torch.sign(s, out=scale)
        g.addcmul_(sign, g_as_c[i, j])
        g.addcmul_(sign, g_as_hw[i])
        g.baddbmm_(left[i, j], right[i])
    return grad_S
