"""Fast form of AT's channel mean ``feat.pow(p).mean(1)``: a one-pass backward.

Autograd through ``pow`` and ``mean`` writes the expanded gradient, ``feat^(p-1)`` and two
products, each a full ``(N, C, H, W)`` tensor; the backward here writes only the result
``p * feat^(p-1) * grad / C``. Eager, the forward for ``p = 2`` is one pass too (``vector_norm``
over the channels, squared, instead of a written and re-read ``feat ** 2``); compiled, both
directions are one fused pass with the channel sum accumulated in registers.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmdistill.losses.fast.compiled import compiled


@compiled
def _pow_mean(feat: Tensor, p: float) -> Tensor:
    """``(N, C, H, W) -> (N, H, W)``: ``feat.pow(p).mean(1)``."""
    if p == 2:
        return (feat * feat).mean(1)
    return feat.pow(p).mean(1)


@compiled
def _pow_mean_grad(feat: Tensor, grad: Tensor, p: float) -> Tensor:
    """Gradient of ``feat.pow(p).mean(1)`` at ``feat`` (N, C, H, W) for ``grad`` (N, H, W)."""
    scale = (grad * (p / feat.shape[1]))[:, None]
    if p == 2:
        return feat * scale
    return feat.pow(p - 1).mul_(scale)


class _ChannelMeanPow(torch.autograd.Function):
    """``feat.pow(p).mean(1)`` with the one-pass backward. Not twice differentiable."""

    @staticmethod
    def forward(ctx, feat: Tensor, p: float, use_compiled: bool) -> Tensor:
        ctx.save_for_backward(feat)
        ctx.p, ctx.use_compiled = p, use_compiled
        if use_compiled:
            return _pow_mean(feat.detach(), p, compiled=True)  # one graph, teacher or student
        if p == 2:
            return torch.linalg.vector_norm(feat, 2, dim=1).square_().div_(feat.shape[1])
        return feat.pow(p).mean(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        feat, = ctx.saved_tensors
        return _pow_mean_grad(feat, grad, ctx.p, compiled=ctx.use_compiled), None, None


def channel_mean_pow(feat: Tensor, p: float, compiled: bool = False) -> Tensor:
    """``(N, C, H, W) -> (N, H, W)``: ``feat.pow(p).mean(1)``, its backward in one pass;
    ``compiled``: both directions as compiled kernels."""
    return _ChannelMeanPow.apply(feat, p, compiled)


__all__ = ['channel_mean_pow']
