"""AT: Attention Transfer.

Zagoruyko and Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer", ICLR 2017. Official code:
https://github.com/szagoruyko/attention-transfer; this follows megvii-research/mdistiller's
``single_stage_at_loss`` (one tap per loss entry).

The attention map of a feature ``A`` (N, C, H, W) is its channel statistic ``Q = mean_c A_c^p``
(the paper's ``sum_c |A_c|^p``; mdistiller, as here, takes ``A^p`` and the mean, the same after
the normalisation for non-negative features), flattened to (N, H*W) and L2-normalised; the loss
is the mean squared difference of the student's and the teacher's maps::

    at(A) = Q(A) / ||Q(A)||_2
    loss  = mean((at(S) - at(T)) ** 2)

When the spatial sizes differ, the larger map is ``adaptive_avg_pool2d``-ed to the smaller one
first.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.fast.at import channel_mean_pow
from mmdistill.losses.utils import HALF
from mmdistill.registry import DISTILL_LOSSES


def attention_map(feat: torch.Tensor, p: float) -> torch.Tensor:
    """The paper's attention map ``at(A)``: ``(N, C, H, W) -> (N, H*W)``, the channel mean of
    ``feat ** p``, L2-normalised per sample."""
    return F.normalize(feat.pow(p).mean(1).reshape(feat.size(0), -1))


@DISTILL_LOSSES.register_module()
class ATLoss(DistillLoss):
    """Attention transfer loss (Zagoruyko & Komodakis, ICLR 2017).

    Args:
        p: Power applied to the activations before the channel mean (paper, mdistiller: 2).
        compiled: take the channel means and their gradient with compiled kernels (see
            :mod:`mmdistill.losses.fast.at`): the same values, one pass over each map, compiled
            once on first use; the eager form where compiling is not possible.

    Shapes:
        preds_S: ``(N, Cs, Hs, Ws)`` student feature.
        preds_T: ``(N, Ct, Ht, Wt)`` teacher feature (any channel count), never
            back-propagated into.
        Returns: scalar tensor (float32 for half-precision inputs).

    mdistiller compares heights only and pools to a square ``(H, H)``; here each spatial
    dimension is pooled to the smaller of the two, which is the same for square maps.

    The channel mean is taken by the fast form (:func:`~mmdistill.losses.fast.at.
    channel_mean_pow`, one pass backward) unless ``fast_form`` is False (then
    :func:`attention_map`, the definition, through autograd).
    """

    same_shape = False  # attention maps average over channels; the larger is pooled
    #: compute ``at(A)`` with the fast channel mean (False: :func:`attention_map`)
    fast_form: ClassVar[bool] = True

    def __init__(self, p: float = 2, compiled: bool = False) -> None:
        super().__init__()
        self.p = p
        self.compiled = compiled

    def attention(self, feat: torch.Tensor) -> torch.Tensor:
        """``at(feat)``: ``(N, C, H, W) -> (N, H*W)``, as :func:`attention_map`."""
        if not self.fast_form:
            return attention_map(feat, self.p)
        mean = channel_mean_pow(feat, self.p, compiled=self.compiled)
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
