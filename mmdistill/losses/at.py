"""AT: Attention Transfer.

Zagoruyko and Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer", ICLR 2017. Official code:
https://github.com/szagoruyko/attention-transfer; this follows megvii-research/mdistiller's
``single_stage_at_loss`` (one tap per loss entry)::

    at(F) = normalize(F.pow(p).mean(1).view(N, -1))          # L2-normalised attention map
    loss  = mean((at(S) - at(T)) ** 2)

When the spatial sizes differ, the larger map is ``adaptive_avg_pool2d``-ed to the smaller one
before the attention maps are taken.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.compiled import compiled
from mmdistill.losses.utils import HALF
from mmdistill.registry import DISTILL_LOSSES


def _pow_mean(feat: torch.Tensor, p: float) -> torch.Tensor:
    """``(N, C, H, W) -> (N, H, W)``: ``feat.pow(p).mean(1)``."""
    if p == 2:
        return (feat * feat).mean(1)
    return feat.pow(p).mean(1)


def _pow_mean_grad(feat: torch.Tensor, grad: torch.Tensor, p: float) -> torch.Tensor:
    """Gradient of :func:`_pow_mean` at ``feat`` (N, C, H, W) for ``grad`` (N, H, W)."""
    scale = (grad * (p / feat.shape[1]))[:, None]
    if p == 2:
        return feat * scale
    return feat.pow(p - 1).mul_(scale)


#: compiled forms (``ATLoss(compiled=True)``): one pass over the map each, the channel sum
#: accumulated in registers along the locations
pow_mean = compiled(_pow_mean)
pow_mean_grad = compiled(_pow_mean_grad)


class _ChannelMeanPow(torch.autograd.Function):
    """``feat.pow(p).mean(1)`` with a one-pass backward ``p * feat^(p-1) * grad / C``.

    Autograd through ``pow`` and ``mean`` materialises the expanded gradient, ``feat^(p-1)``
    and two products, each a full ``(N, C, H, W)`` tensor; this writes only the result. Eager,
    the forward for ``p = 2`` is one pass too (``vector_norm`` over the channels, squared, not a
    written and re-read ``feat ** 2``); compiled (``use_compiled``), both directions are one
    fused pass. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, feat: torch.Tensor, p: float, use_compiled: bool) -> torch.Tensor:
        ctx.save_for_backward(feat)
        ctx.p, ctx.use_compiled = p, use_compiled
        if use_compiled:
            return pow_mean(feat.detach(), p, compiled=True)  # one graph, teacher or student
        if p == 2:
            return torch.linalg.vector_norm(feat, 2, dim=1).square_().div_(feat.shape[1])
        return feat.pow(p).mean(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        feat, = ctx.saved_tensors
        return pow_mean_grad(feat, grad, ctx.p, compiled=ctx.use_compiled), None, None


@DISTILL_LOSSES.register_module()
class ATLoss(DistillLoss):
    """Attention transfer loss (Zagoruyko & Komodakis, ICLR 2017).

    Args:
        p: Power applied to the activations before the channel mean (paper, mdistiller: 2).
        compiled: take the channel means and their gradient with compiled kernels (see
            :mod:`mmdistill.losses.compiled`): the same values, one pass over each map, compiled
            once on first use; the eager form where compiling is not possible.

    Shapes:
        preds_S: ``(N, Cs, Hs, Ws)`` student feature.
        preds_T: ``(N, Ct, Ht, Wt)`` teacher feature (any channel count), never
            back-propagated into.
        Returns: scalar tensor (float32 for half-precision inputs).

    mdistiller compares heights only and pools to a square ``(H, H)``; here each spatial
    dimension is pooled to the smaller of the two, which is the same for square maps.
    """

    same_shape = False  # attention maps average over channels; the larger is pooled

    def __init__(self, p: float = 2, compiled: bool = False) -> None:
        super().__init__()
        self.p = p
        self.compiled = compiled

    def attention(self, feat: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, H*W)``: L2-normalised channel mean of ``feat ** p``."""
        mean = _ChannelMeanPow.apply(feat, self.p, self.compiled)
        return F.normalize(mean.reshape(feat.size(0), -1))

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the attention-transfer loss.

        Args:
            preds_S: ``(N, Cs, Hs, Ws)`` student feature.
            preds_T: ``(N, Ct, Ht, Wt)`` teacher feature.

        Returns:
            Scalar loss ``mean((at(S) - at(T)) ** 2)``.
        """
        if preds_S.dim() != 4 or preds_T.dim() != 4 or preds_S.shape[0] != preds_T.shape[0]:
            raise ValueError('ATLoss needs (N, C, H, W) features with the same N, got student '
                             f'{tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)}')
        preds_T = preds_T.detach()
        if preds_S.dtype in HALF:
            preds_S = preds_S.float()
        if preds_T.dtype in HALF:
            preds_T = preds_T.float()
        size = (min(preds_S.shape[2], preds_T.shape[2]), min(preds_S.shape[3], preds_T.shape[3]))
        if tuple(preds_S.shape[2:]) != size:
            preds_S = F.adaptive_avg_pool2d(preds_S, size)
        if tuple(preds_T.shape[2:]) != size:
            preds_T = F.adaptive_avg_pool2d(preds_T, size)
        diff = self.attention(preds_S) - self.attention(preds_T)
        return diff.pow(2).mean()
