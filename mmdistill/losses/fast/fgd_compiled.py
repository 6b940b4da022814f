"""FGD's passes over the ``(N, C, HW)`` maps as compiled kernels (``FGDLoss(compiled=True)``).

The same reductions as :mod:`mmdistill.losses.fast.fgd_blocked`, each a whole-level function
that Inductor turns into one fused loop nest: the forward reads ``S`` and ``T`` twice (channel
sums, then location sums) and the backward twice, writing ``dS`` once. What the passes compute
is described in :mod:`mmdistill.losses.fast.fgd`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from mmdistill.losses.fast.compiled import compiled


def _channel_sum(x: Tensor) -> Tensor:
    """``(N, C, HW) -> (N, HW)``: the sum over channels, in groups of 16 channels (or the largest
    power of two below that dividing C): compiled, the inner loop then walks 16 channel rows at a
    time instead of all C, an access pattern the hardware prefetchers follow."""
    n, c, hw = x.shape
    k = next(k for k in (16, 8, 4, 2, 1) if c % k == 0)
    return x.reshape(n, c // k, k, hw).sum(2).sum(1)


@compiled
def column_stats(S3: Tensor, T3: Tensor, w_s: Tensor,
                 w_t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(N, C, HW)`` maps, ``(C, 1)`` conv_mask weights -> ``(N, HW)`` each: ``sum_c |S|``,
    ``sum_c |T|``, ``w_s . S``, ``w_t . T``."""
    return (_channel_sum(S3.abs()), _channel_sum(T3.abs()), _channel_sum(S3 * w_s),
            _channel_sum(T3 * w_t))


@compiled
def row_stats(S3: Tensor, T3: Tensor, weight: Tensor, p_s: Tensor, p_t: Tensor,
              ones: Tensor) -> tuple[Tensor, ...]:
    """``(N, C, HW)`` maps, ``(N, 1, HW)`` weights -> ``(N, C)`` each: ``sum_hw |S|``,
    ``sum_hw |T|``, ``D``, ``Q2``, ``Q1``, ``ctx_s``, ``ctx_t``.

    ``ones`` (N, 1, HW) multiplies the unweighted sums so that all seven share the loop nest of
    the weighted ones: one pass over S and T instead of two."""
    d = S3 - T3
    d2 = d * d
    return ((S3.abs() * ones).sum(2), (T3.abs() * ones).sum(2), (d * ones).sum(2),
            (d2 * ones).sum(2), (d2 * weight).sum(2), (S3 * p_s).sum(2), (T3 * p_t).sum(2))


@compiled
def column_grads(S3: Tensor, T3: Tensor, g_ctx_s: Tensor,
                 g_ctx_t: Tensor) -> tuple[Tensor, Tensor]:
    """``(N, C, 1)`` context gradients -> ``(N, HW)``: their products with every column."""
    return _channel_sum(S3 * g_ctx_s), _channel_sum(T3 * g_ctx_t)


@compiled
def student_grad_and_rows(S3: Tensor, T3: Tensor, two_q2: Tensor, two_q1: Tensor, weight: Tensor,
                          g_sign_c: Tensor, g_sign_hw: Tensor, g_dsum: Tensor, w_s: Tensor,
                          g_ls: Tensor, g_ctx_s: Tensor, p_s: Tensor,
                          g_lt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """dS (N, C, HW) from ``(N, C, 1)`` and ``(N, 1, HW)`` coefficients (``w_s`` (C, 1)), and
    the per-image conv_mask weight gradients ``sum_hw g_l F`` (N, C) of S and T."""
    grad = ((S3 - T3) * (two_q2 + two_q1 * weight)
            + torch.sign(S3) * (g_sign_c + g_sign_hw)
            + g_dsum + w_s * g_ls + g_ctx_s * p_s)
    return grad, (S3 * g_ls).sum(2), (T3 * g_lt).sum(2)
