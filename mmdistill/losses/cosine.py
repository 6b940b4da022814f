"""Cosine hidden-representation loss.

The cosine term of the PyTorch knowledge-distillation tutorial ("Knowledge Distillation
Tutorial", pytorch.org/tutorials/beginner/knowledge_distillation_tutorial, its
``CosineEmbeddingLoss`` on flattened hidden representations), as in the hint losses of
Romero et al. (ICLR 2015) but on directions instead of values::

    loss = mean_n(1 - cos(flat(S_n), flat(T_n)))

which is ``nn.CosineEmbeddingLoss`` with target 1 (its mean reduction). ``pool=True`` averages
each map over space first, so only the channel direction of every image counts and the maps
may differ in size. Different channel counts get a learnable 1x1 ``align`` conv on the student.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.utils import upcast
from mmdistill.registry import DISTILL_LOSSES


@DISTILL_LOSSES.register_module()
class CosineLoss(DistillLoss):
    """1 - cosine similarity of the student's and the teacher's features, per example.

    Args:
        pool: Average (N, C, H, W) maps over H, W first (then the sizes may differ).
        student_channels: Channels of the student's map; with ``teacher_channels`` given and
            different, a 1x1 conv maps the student to the teacher's channels.
        teacher_channels: Channels of the teacher's map.
        eps: Floor of the norms (as ``F.cosine_similarity``).

    Shapes:
        preds_S: ``(N, ...)`` student features (maps or vectors).
        preds_T: ``(N, ...)`` teacher features with as many values per example (after
            ``pool`` and ``align``); never back-propagated into.
        Returns: scalar tensor (float32 for half-precision inputs).
    """

    channel_args = ('student_channels', 'teacher_channels')
    same_shape = False  # checked in forward: equal sizes, unless pool

    def __init__(self, pool: bool = False,
                 student_channels: int | None = None, teacher_channels: int | None = None,
                 eps: float = 1e-8) -> None:
        super().__init__()
        self.pool, self.eps = pool, eps
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.align = nn.Conv2d(student_channels, teacher_channels, 1) if (
            student_channels is not None and teacher_channels is not None
            and student_channels != teacher_channels) else None

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        """``mean over N of (1 - cos(S_n, T_n))``."""
        preds_T = upcast(preds_T.detach())
        preds_S = upcast(preds_S)
        if self.align is not None:
            preds_S = self.align(preds_S.to(self.align.weight.dtype))
        if self.pool and preds_S.dim() == 4:
            preds_S, preds_T = preds_S.mean((2, 3)), preds_T.mean((2, 3))
        s, t = preds_S.reshape(preds_S.shape[0], -1), preds_T.reshape(preds_T.shape[0], -1)
        if s.shape != t.shape:
            raise ValueError(f'CosineLoss: student {tuple(preds_S.shape)} and teacher '
                             f'{tuple(preds_T.shape)} differ; set student_channels and '
                             'teacher_channels, pool=True, or resize in the loss entry')
        return (1 - F.cosine_similarity(s, t, dim=1, eps=self.eps)).mean()


__all__ = ['CosineLoss']
