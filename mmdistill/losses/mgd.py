"""MGD: Masked Generative Distillation.

Yang, Li, Shen, Yuan, Wei, Zhang, Shi, Xu, Xu, Yuan and Zhu, "Masked Generative Distillation",
ECCV 2022. Official code: https://github.com/yzd-v/MGD (``det``/``seg``: ``FeatureLoss``,
``cls``: ``MGDLoss``).

The student feature (aligned to the teacher's channels by a 1x1 conv when the widths differ) is
randomly masked and a small generation block has to regenerate the teacher's full feature from
what is left::

    M    = 0 where rand(N, 1, H, W) > 1 - lambda_mgd, else 1          (mask_type='spatial')
    M    = 0 where rand(N, C, 1, 1) < lambda_mgd,     else 1          (mask_type='channel')
    loss = alpha_mgd * sum((generation(align(S) * M) - T) ** 2) / N

The spatial mask is the official detection/segmentation loss, the channel mask the official
classification loss; each uses the official comparison, so a seeded run draws the same mask.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.utils import HALF
from mmdistill.registry import DISTILL_LOSSES


@DISTILL_LOSSES.register_module()
class MGDLoss(DistillLoss):
    """Masked Generative Distillation loss (Yang et al., ECCV 2022; yzd-v/MGD).

    Args:
        student_channels: Channels of the student feature ``Cs``. An ``align`` 1x1 conv
            ``Cs -> Ct`` is built when both channel counts are given and differ.
        teacher_channels: Channels of the teacher feature ``Ct`` (required: the generation
            block works on ``Ct`` channels).
        alpha_mgd: Weight of the generation loss. Official defaults: 2e-5 for detection
            (5e-7 for two-stage students with a cascade teacher) and segmentation, 7e-5 for
            classification.
        lambda_mgd: Masked ratio. Official: 0.65 detection (0.45 with a cascade teacher),
            0.75 segmentation, 0.15 classification.
        mask_type: ``'spatial'`` (det/seg: one random mask over ``(H, W)`` shared by all
            channels, ``rand(N, 1, H, W) > 1 - lambda_mgd`` is dropped) or ``'channel'``
            (classification: whole channels dropped, ``rand(N, C, 1, 1) < lambda_mgd``).

    Shapes:
        preds_S: ``(N, Cs, H, W)`` student feature (``(N, Cs)`` is taken as ``(N, Cs, 1, 1)``).
        preds_T: ``(N, Ct, H, W)`` teacher feature (same ``H, W``), never back-propagated into.
        Returns: scalar tensor (float32 for half-precision inputs).

    The mask is drawn from torch's global RNG on ``preds_S.device`` in float32, after the align
    conv and before the generation block, exactly once per call; ``torch.manual_seed`` makes it
    reproducible.
    """

    channel_args = ('student_channels', 'teacher_channels')

    def __init__(self,
                 student_channels: int | None = None,
                 teacher_channels: int | None = None,
                 alpha_mgd: float = 2e-5,
                 lambda_mgd: float = 0.65,
                 mask_type: str = 'spatial') -> None:
        super().__init__()
        if teacher_channels is None:
            raise ValueError('MGDLoss needs teacher_channels: its generation block maps '
                             'teacher_channels -> teacher_channels')
        if mask_type not in ('spatial', 'channel'):
            raise ValueError(f"MGDLoss mask_type must be 'spatial' or 'channel', got "
                             f'{mask_type!r}')
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.alpha_mgd = alpha_mgd
        self.lambda_mgd = lambda_mgd
        self.mask_type = mask_type

        if student_channels is not None and student_channels != teacher_channels:
            self.align: nn.Module | None = nn.Conv2d(
                student_channels, teacher_channels, kernel_size=1, stride=1, padding=0)
        else:
            self.align = None
        self.generation = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1))

    def random_mask(self, N: int, C: int, H: int, W: int,
                    device: torch.device) -> torch.Tensor:
        """Draw the keep-mask (1 = kept, 0 = masked), ``(N,1,H,W)`` or ``(N,C,1,1)``."""
        if self.mask_type == 'spatial':
            mat = torch.rand((N, 1, H, W), device=device)
            return torch.where(mat > 1 - self.lambda_mgd, 0, 1)
        mat = torch.rand((N, C, 1, 1), device=device)
        return torch.where(mat < self.lambda_mgd, 0, 1)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the MGD loss.

        Args:
            preds_S: ``(N, Cs, H, W)`` student feature.
            preds_T: ``(N, Ct, H, W)`` teacher feature.

        Returns:
            Scalar loss ``alpha_mgd * sum((generation(S * M) - T) ** 2) / N``.
        """
        if preds_S.dim() == 2:
            preds_S = preds_S[:, :, None, None]
        if preds_T.dim() == 2:
            preds_T = preds_T[:, :, None, None]
        if preds_S.shape[0] != preds_T.shape[0] or preds_S.shape[-2:] != preds_T.shape[-2:]:
            raise ValueError('MGDLoss needs student and teacher features of the same batch and '
                             f'spatial size, got student {tuple(preds_S.shape)} and teacher '
                             f'{tuple(preds_T.shape)}')
        preds_T = preds_T.detach()
        N, C, H, W = preds_T.shape

        weight = self.generation[0].weight
        if preds_S.dtype != weight.dtype:
            # e.g. fp16 features into the fp32 loss module outside autocast
            preds_S = preds_S.to(weight.dtype)
        if self.align is not None:
            preds_S = self.align(preds_S)
        if preds_S.shape[1] != C:
            raise ValueError(f'MGDLoss: student feature {tuple(preds_S.shape)} (after align) '
                             f'does not match teacher channels {C}; set student_channels and '
                             'teacher_channels')

        mask = self.random_mask(N, C, H, W, preds_S.device)
        new_fea = self.generation(preds_S * mask.to(preds_S.dtype))

        if new_fea.dtype in HALF:
            new_fea = new_fea.float()
        if preds_T.dtype in HALF:
            preds_T = preds_T.float()
        # one fused pass forward and one backward (no (N, C, H, W) temporaries for the
        # difference and its square)
        dis_loss = F.mse_loss(new_fea, preds_T, reduction='sum') / N
        return dis_loss * self.alpha_mgd
