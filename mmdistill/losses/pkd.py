"""PKD: feature distillation by the Pearson correlation coefficient.

Cao, Li, Zhang, Liu, Liang, Lu, Liu, Lin, Gu, "PKD: General Distillation Framework for Object
Detectors via Pearson Correlation Coefficient", NeurIPS 2022. The released code is mmrazor's
``PKDLoss`` (``configs/distill/mmdet/pkd``).

Every channel of the student and teacher maps is standardised over (N, H, W) (mean, unbiased
std + 1e-6); the loss is half the mean squared difference of the standardised maps, which is
``1 - r`` per channel (r: Pearson correlation) up to the std's ``n / (n - 1)`` factor, averaged::

    z(F)[:, c] = (F[:, c] - mean_nhw F[:, c]) / (std_nhw F[:, c] + 1e-6)
    loss = mean((z(S) - z(T))^2) / 2

It has no learnable part unless the channels differ (then a 1x1 conv, as mmyolo's RTMDet recipe
puts a conv + BN connector in front; the BN's affine map would be undone by ``z``), and it is
invariant to each channel's scale and shift, so it suits heterogeneous pairs.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.utils import HALF, sample_std
from mmdistill.registry import DISTILL_LOSSES


def pearson_standardise(feat: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise every channel of ``feat`` (N, C, H, W) over (N, H, W), unbiased std + eps
    (a single value per channel, a 1x1 map of a batch of one, standardises to 0)."""
    mean = feat.mean(dim=(0, 2, 3), keepdim=True)
    std = sample_std(feat, (0, 2, 3))
    return (feat - mean) / (std + eps)


@DISTILL_LOSSES.register_module()
class PKDLoss(DistillLoss):
    """Pearson-correlation feature distillation (Cao et al., NeurIPS 2022) for one level.

    Args:
        resize_stu: When the maps differ in size, resize the student to the teacher's size
            (bilinear); else the teacher to the student's.
        student_channels: Channels ``Cs`` of the student map; with ``teacher_channels`` given and
            different, a 1x1 conv (no bias) maps the student to ``Ct`` channels first.
        teacher_channels: Channels ``Ct`` of the teacher map.

    Shapes:
        preds_S: ``(N, Cs, Hs, Ws)`` student map.
        preds_T: ``(N, Ct, Ht, Wt)`` teacher map (never back-propagated into).
        Returns: scalar tensor (float32 for half-precision inputs).
    """

    channel_args = ('student_channels', 'teacher_channels')
    same_shape = False  # the loss resizes by ``resize_stu`` itself

    def __init__(self, resize_stu: bool = True,
                 student_channels: int | None = None,
                 teacher_channels: int | None = None) -> None:
        super().__init__()
        self.resize_stu = resize_stu
        self.align: nn.Module | None = None
        if (student_channels is not None and teacher_channels is not None
                and student_channels != teacher_channels):
            self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        """Compute ``mse(z(S), z(T)) / 2`` (see the module docstring)."""
        preds_T = preds_T.detach()
        if self.align is not None:
            preds_S = self.align(preds_S.to(self.align.weight.dtype))
        if preds_S.dtype in HALF:
            preds_S = preds_S.float()
        if preds_T.dtype in HALF:
            preds_T = preds_T.float()
        if preds_S.shape[2:] != preds_T.shape[2:]:
            if self.resize_stu:
                preds_S = F.interpolate(preds_S, preds_T.shape[2:], mode='bilinear')
            else:
                preds_T = F.interpolate(preds_T, preds_S.shape[2:], mode='bilinear')
        if preds_S.shape != preds_T.shape:
            raise ValueError(f'PKDLoss: student {tuple(preds_S.shape)} and teacher '
                             f'{tuple(preds_T.shape)} differ in channels; set student_channels '
                             'and teacher_channels to add a 1x1 align conv')
        diff = pearson_standardise(preds_S) - pearson_standardise(preds_T.to(preds_S.dtype))
        return diff.square().mean() / 2
