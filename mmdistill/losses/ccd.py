"""CCD: Category Contrastive Distillation (class-prototype distillation).

Defined from the seed description in METHODS.md; no official code was found, so every detail
below is this implementation's definition (documented so it can be compared and changed).

Each sample's pooled feature is L2-normalised (the student's first mapped to the teacher's
dimension by a linear ``align`` when the channels differ). Per class, a teacher prototype
``P_t`` and a student prototype ``P_s`` (``num_classes x D``, unit rows) are kept and
momentum-updated from the batch class means. The student learns to reproduce the teacher's
similarity distribution over the teacher prototypes, and its own prototypes are pulled to the
teacher's:

``loss = T^2 * KL(softmax(t @ P_t^T / T) || softmax(s @ P_t^T / T)) + proto_weight * mse(P_s, P_t)``
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.utils import compute_dtype, global_pool
from mmdistill.registry import DISTILL_LOSSES


def momentum_update_prototypes(protos: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor,
                               momentum: float) -> torch.Tensor:
    """Prototypes after one momentum step with the batch class means (vectorised).

    For every class c present in ``labels``:
    ``P_c <- normalize(momentum * P_c + (1 - momentum) * mean_{i: y_i = c} feats_i)``;
    rows of absent classes are returned unchanged. Out-of-place and differentiable in
    ``feats`` (``protos`` is treated as a constant).

    Args:
        protos (Tensor): current prototypes, shape (K, D).
        feats (Tensor): batch embeddings, shape (N, D).
        labels (Tensor): LongTensor (N,) of class indices in [0, K).
        momentum (float): weight of the old prototype.

    Returns:
        Tensor: updated prototypes, shape (K, D).
    """
    num_classes = protos.shape[0]
    protos = protos.detach().to(feats.dtype)
    sums = torch.zeros_like(protos).index_add(0, labels, feats)
    counts = torch.bincount(labels, minlength=num_classes).to(feats.dtype)
    means = sums / counts.clamp(min=1).unsqueeze(1)
    updated = F.normalize(momentum * protos + (1 - momentum) * means, p=2, dim=1)
    return torch.where((counts > 0).unsqueeze(1), updated, protos)


@DISTILL_LOSSES.register_module()
class CCDLoss(DistillLoss):
    """Category contrastive distillation with momentum class prototypes.

    Definitions (ours; see the module docstring):
      * Embeddings: ``t = normalize(pool(feat_T))`` (teacher, no learnable part, so the target is
        fixed); ``s = normalize(align(pool(feat_S)))`` with ``align`` a ``Linear(Cs, Ct)`` when
        both channel counts are given and differ (identity otherwise). Pooling before the linear
        equals a 1x1 conv then pooling. Prototype dimension ``D = Ct`` (or ``Cs`` when equal).
      * Prototypes: buffers ``proto_t`` / ``proto_s`` (num_classes, D), zero-initialised (a
        class's first update therefore sets its prototype to its normalised batch mean; a class
        never seen keeps a zero row and so similarity 0 to everything). Updated every forward
        by :func:`momentum_update_prototypes` with the batch (hard labels; soft labels -> argmax).
        The loss uses the prototypes *after* this batch's update.
      * Gradient of the prototype term: the buffers carry no gradient, so the MSE uses the
        student prototypes as updated from the current batch, differentiable through the batch
        class means (rows of classes absent from the batch are constants). The buffer then
        stores the detached value. With momentum 0.999 this gradient is scaled by roughly
        ``1 - momentum`` except on a class's first appearance.
      * ``mse`` is ``F.mse_loss`` (mean over all K x D entries); KL is batchmean.

    Args:
        student_channels (int | None): student feature channels Cs.
        teacher_channels (int | None): teacher feature channels Ct. At least one is required
            (the prototype dimension).
        num_classes (int): number of classes K.
        temperature (float): softmax temperature T. Default: 0.1.
        momentum (float): prototype momentum. Default: 0.999.
        proto_weight (float): weight of ``mse(P_s, P_t)``. Default: 0.5.
    """

    extra_inputs: tuple[str, ...] = ('gt_labels',)
    channel_args = ('student_channels', 'teacher_channels')

    def __init__(self,
                 student_channels: int | None = None,
                 teacher_channels: int | None = None,
                 num_classes: int | None = None,
                 temperature: float = 0.1,
                 momentum: float = 0.999,
                 proto_weight: float = 0.5) -> None:
        super().__init__()
        if num_classes is None:
            raise ValueError('CCDLoss needs num_classes')
        dim = teacher_channels if teacher_channels is not None else student_channels
        if dim is None:
            raise ValueError('CCDLoss needs teacher_channels or student_channels (the '
                             'prototype dimension)')
        if student_channels is not None and teacher_channels is not None \
                and student_channels != teacher_channels:
            self.align: nn.Module = nn.Linear(student_channels, teacher_channels)
        else:
            self.align = nn.Identity()
        self.num_classes = int(num_classes)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.proto_weight = float(proto_weight)
        self.register_buffer('proto_s', torch.zeros(self.num_classes, int(dim)))
        self.register_buffer('proto_t', torch.zeros(self.num_classes, int(dim)))

    def forward(self,
                preds_S: torch.Tensor,
                preds_T: torch.Tensor,
                gt_labels: torch.Tensor) -> torch.Tensor:
        """Compute the CCD loss and update the prototypes.

        Args:
            preds_S (Tensor): student features, (N, Cs) or (N, Cs, H, W) (average-pooled).
            preds_T (Tensor): teacher features, (N, Ct) or (N, Ct, H, W). Not back-propagated.
            gt_labels (Tensor): hard labels (N,) or soft labels (N, K) (argmax is used).

        Returns:
            Tensor: scalar loss.
        """
        labels = gt_labels.argmax(dim=-1) if gt_labels.dim() != 1 else gt_labels
        labels = labels.long()
        s = self.align(global_pool(preds_S))
        dtype = compute_dtype(s)
        with torch.autocast(device_type=s.device.type, enabled=False):
            s = F.normalize(s.to(dtype), p=2, dim=1)
            t = F.normalize(global_pool(preds_T.detach()).to(dtype), p=2, dim=1)
            proto_t = momentum_update_prototypes(self.proto_t, t, labels, self.momentum)
            proto_s = momentum_update_prototypes(self.proto_s, s, labels, self.momentum)
            with torch.no_grad():
                self.proto_t.copy_(proto_t)
                self.proto_s.copy_(proto_s.detach())

            log_p_t = F.log_softmax(t @ proto_t.t() / self.temperature, dim=1)
            log_p_s = F.log_softmax(s @ proto_t.t() / self.temperature, dim=1)
            kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum() / s.shape[0]
            loss = self.temperature ** 2 * kl + \
                self.proto_weight * F.mse_loss(proto_s, proto_t)
        return loss
