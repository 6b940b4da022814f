"""In-batch contrastive distillation (InfoNCE).

The student's embedding of an image is pulled towards the teacher's embedding of the same image
and pushed from the teacher's embeddings of the other images of the batch, as in SimCLR's
NT-Xent (Chen et al., ICML 2020) with the teacher as the second view, and as CRD (Tian et al.,
ICLR 2020) without its memory bank::

    z_S = normalize(align(pool(S))),  z_T = normalize(pool(T))          # (N, D)
    loss = mean_n -log softmax_m(z_S,n . z_T,m / tau)[n]
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.utils import global_pool, upcast
from mmdistill.registry import DISTILL_LOSSES


@DISTILL_LOSSES.register_module()
class InfoNCELoss(DistillLoss):
    """InfoNCE between student and teacher embeddings of a batch; positives: the same image.

    Args:
        temperature: ``tau`` of the similarity softmax (SimCLR: 0.1 to 0.5).
        student_channels: Embedding size of the student ``Cs``; with ``teacher_channels``
            given and different, a linear layer maps the student to ``Ct``.
        teacher_channels: Embedding size of the teacher ``Ct``.

    Shapes:
        preds_S: ``(N, Cs)`` embeddings or ``(N, Cs, H, W)`` maps (averaged over space).
        preds_T: ``(N, Ct)`` or ``(N, Ct, H, W)``, never back-propagated into.
        Returns: scalar tensor (float32 for half-precision inputs).
    """

    channel_args = ('student_channels', 'teacher_channels')
    same_shape = False  # embeddings: maps are pooled

    def __init__(self, temperature: float = 0.1,
                 student_channels: int | None = None,
                 teacher_channels: int | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.align = nn.Linear(student_channels, teacher_channels) if (
            student_channels is not None and teacher_channels is not None
            and student_channels != teacher_channels) else None

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        """``CE(z_S z_T^T / tau, arange(N))``; 0 for a batch of one (the positive is the
        only candidate: nothing to contrast, e.g. the last batch of an epoch)."""
        if preds_S.shape[0] != preds_T.shape[0]:
            raise ValueError('InfoNCELoss needs the same batch on both sides, got '
                             f'{tuple(preds_S.shape)} and {tuple(preds_T.shape)}')
        s = global_pool(upcast(preds_S))
        t = global_pool(upcast(preds_T.detach()))
        if self.align is not None:
            s = self.align(s.to(self.align.weight.dtype))
        if s.shape != t.shape:
            raise ValueError(f'InfoNCELoss: student embeddings {tuple(s.shape)} and teacher '
                             f'{tuple(t.shape)} differ; set student_channels and '
                             'teacher_channels')
        logits = F.normalize(s, dim=1) @ F.normalize(t, dim=1).T / self.temperature
        target = torch.arange(s.shape[0], device=s.device)
        return F.cross_entropy(logits, target)


__all__ = ['InfoNCELoss']
