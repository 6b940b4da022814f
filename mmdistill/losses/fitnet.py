"""FitNets: hint-based feature regression.

Romero, Ballas, Kahou, Chassang, Gatta and Bengio, "FitNets: Hints for Thin Deep Nets",
ICLR 2015. Reference implementation followed here: megvii-research/mdistiller ``FitNet`` with its
``ConvReg`` regressor (also in HobbitLong/RepDistiller).

A learnable regressor (conv -> BatchNorm -> ReLU) maps the student's hint feature to the
teacher's shape, and the loss is the mean squared error to the teacher's feature::

    loss = mean((regressor(S) - T) ** 2)

The regressor is always used, also when the channel counts are equal (as in FitNets).
``kernel_size=3, use_bn=False, use_relu=False`` is the plain 3x3 conv regressor of the PyTorch
knowledge-distillation tutorial (its ``ModifiedLightNNRegressor``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.utils import HALF
from mmdistill.registry import DISTILL_LOSSES


@DISTILL_LOSSES.register_module()
class FitNetLoss(DistillLoss):
    """FitNets hint loss (Romero et al., ICLR 2015).

    Args:
        student_channels: Channels of the student hint ``Cs`` (required).
        teacher_channels: Channels of the teacher hint ``Ct`` (required).
        student_hw: ``(Hs, Ws)`` of the student hint, only needed when it differs from the
            teacher's; with ``teacher_hw`` it picks the regressor conv as mdistiller's
            ``ConvReg`` does: ``Hs == 2*Ht``: 3x3 conv, stride 2; ``2*Hs == Ht``: 4x4
            transposed conv, stride 2; ``Hs >= Ht``: conv with kernel
            ``(1 + Hs - Ht, 1 + Ws - Wt)``. Left out: a ``kernel_size`` conv (equal sizes).
        teacher_hw: ``(Ht, Wt)`` of the teacher hint; see ``student_hw``.
        use_relu: ReLU after the BatchNorm (mdistiller's FitNet: True).
        kernel_size: odd kernel of the regressor conv for equal sizes (padding keeps the size);
            mdistiller: 1.
        use_bn: BatchNorm after the conv (mdistiller: True).

    Shapes:
        preds_S: ``(N, Cs, Hs, Ws)`` student hint.
        preds_T: ``(N, Ct, Ht, Wt)`` teacher hint, never back-propagated into.
        Returns: scalar tensor (float32 for half-precision inputs).
    """

    channel_args = ('student_channels', 'teacher_channels')

    def __init__(self,
                 student_channels: int | None = None,
                 teacher_channels: int | None = None,
                 student_hw: tuple[int, int] | None = None,
                 teacher_hw: tuple[int, int] | None = None,
                 use_relu: bool = True,
                 kernel_size: int = 1,
                 use_bn: bool = True) -> None:
        super().__init__()
        if student_channels is None or teacher_channels is None:
            raise ValueError('FitNetLoss needs both student_channels and teacher_channels to '
                             f'build its regressor, got student_channels={student_channels}, '
                             f'teacher_channels={teacher_channels}')
        if (student_hw is None) != (teacher_hw is None):
            raise ValueError('FitNetLoss: give both student_hw and teacher_hw or neither, got '
                             f'student_hw={student_hw}, teacher_hw={teacher_hw}')
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.use_relu = use_relu

        s_C, t_C = student_channels, teacher_channels
        if student_hw is None:
            if kernel_size % 2 != 1:
                raise ValueError(f'FitNetLoss: kernel_size must be odd, got {kernel_size}')
            conv: nn.Module = nn.Conv2d(s_C, t_C, kernel_size, padding=kernel_size // 2)
        else:
            (s_H, s_W), (t_H, t_W) = student_hw, teacher_hw
            if s_H == 2 * t_H:
                conv = nn.Conv2d(s_C, t_C, kernel_size=3, stride=2, padding=1)
            elif s_H * 2 == t_H:
                conv = nn.ConvTranspose2d(s_C, t_C, kernel_size=4, stride=2, padding=1)
            elif s_H >= t_H and s_W >= t_W:
                conv = nn.Conv2d(s_C, t_C, kernel_size=(1 + s_H - t_H, 1 + s_W - t_W))
            else:
                raise ValueError('FitNetLoss cannot regress a student hint of size '
                                 f'{tuple(student_hw)} to a teacher hint of size '
                                 f'{tuple(teacher_hw)} (supported: equal, half, double, or a '
                                 'larger student)')
        self.conv = conv
        self.bn = nn.BatchNorm2d(t_C) if use_bn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def regressor(self, x: torch.Tensor) -> torch.Tensor:
        """conv (-> BN) (-> ReLU): ``(N, Cs, Hs, Ws) -> (N, Ct, H', W')``."""
        x = self.bn(self.conv(x))
        return self.relu(x) if self.use_relu else x

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the hint loss.

        Args:
            preds_S: ``(N, Cs, Hs, Ws)`` student hint.
            preds_T: ``(N, Ct, Ht, Wt)`` teacher hint.

        Returns:
            Scalar loss ``mean((regressor(S) - T) ** 2)``.
        """
        preds_T = preds_T.detach()
        weight = self.conv.weight
        if preds_S.dtype != weight.dtype:
            preds_S = preds_S.to(weight.dtype)
        f_s = self.regressor(preds_S)
        if f_s.shape != preds_T.shape:
            raise ValueError(f'FitNetLoss: regressed student hint {tuple(f_s.shape)} (from '
                             f'{tuple(preds_S.shape)}) does not match the teacher hint '
                             f'{tuple(preds_T.shape)}; for different spatial sizes set '
                             'student_hw and teacher_hw')
        if f_s.dtype in HALF:
            f_s = f_s.float()
        if preds_T.dtype in HALF:
            preds_T = preds_T.float()
        return F.mse_loss(f_s, preds_T)
