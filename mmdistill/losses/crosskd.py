"""CrossKD: Cross-Head Knowledge Distillation for Object Detection.

Wang, Jiabao; Chen, Yuming; Zheng, Zhaohui; Li, Xiang; Cheng, Ming-Ming; Hou, Qibin.
"CrossKD: Cross-Head Knowledge Distillation for Object Detection", CVPR 2024.
Official code: https://github.com/jbwang1997/CrossKD (``CrossKDGFL``, configs/crosskd).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdistill.losses.base import DistillLoss, ModelModules, as_model_modules
from mmdistill.losses.ld import box_distributions, distribution_kl
from mmdistill.losses.utils import sample_std, upcast
from mmdistill.registry import DISTILL_LOSSES


def align_scale(feat_S: Tensor, feat_T: Tensor, eps: float = 1e-6) -> Tensor:
    """Give the student's ``(N, C, H, W)`` map the teacher's per-channel mean and std (over
    N, H, W; unbiased std, ``eps`` on the student's), as CrossKD does before the teacher's head.
    A single value per channel (a one-pixel level of a batch of one) becomes the teacher's."""
    dims = (0, 2, 3)
    feat_T = feat_T.detach()
    normed = (feat_S - feat_S.mean(dims, keepdim=True)) / (sample_std(feat_S, dims) + eps)
    return normed * sample_std(feat_T, dims) + feat_T.mean(dims, keepdim=True)


def kd_quality_focal_loss(pred: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Elementwise ``BCE(pred, sigmoid(target)) * |sigmoid(pred) - sigmoid(target)|^beta``
    on logits (CrossKD's ``KDQualityFocalLoss``: QFL with the teacher's scores as soft labels)."""
    soft = target.detach().sigmoid()
    bce = F.binary_cross_entropy_with_logits(pred, soft, reduction='none')
    return bce * (pred.sigmoid() - soft).abs().pow(beta)


def distances(logits: Tensor, reg_max: int) -> Tensor:
    """Expected distance per side ``(N, 4, H, W)`` of box logits ``(N, 4*(reg_max+1), H, W)``
    (GFL's ``Integral``), in units of the level's stride."""
    probs = box_distributions(logits, reg_max, 'CrossKDLoss').softmax(2)
    bins = torch.arange(reg_max + 1, dtype=probs.dtype, device=probs.device)
    return torch.einsum('nkbhw,b->nkhw', probs, bins)


def giou_same_centre(d_pred: Tensor, d_target: Tensor, eps: float = 1e-6) -> Tensor:
    """GIoU of boxes given by their distances ``(N, 4, H, W)`` (left, top, right, bottom) from
    the same point (the location's centre; GIoU does not depend on where it is); mmdet's
    ``bbox_overlaps(mode='giou')``, eps included. Returns ``(N, H, W)``."""
    lo, hi = torch.minimum(d_pred, d_target), torch.maximum(d_pred, d_target)
    inter = (lo[:, 0] + lo[:, 2]) * (lo[:, 1] + lo[:, 3])
    area_p = (d_pred[:, 0] + d_pred[:, 2]) * (d_pred[:, 1] + d_pred[:, 3])
    area_t = (d_target[:, 0] + d_target[:, 2]) * (d_target[:, 1] + d_target[:, 3])
    union = (area_p + area_t - inter).clamp_min(eps)
    enclose = ((hi[:, 0] + hi[:, 2]) * (hi[:, 1] + hi[:, 3])).clamp_min(eps)
    return inter / union - (enclose - union) / enclose


@DISTILL_LOSSES.register_module()
class CrossKDLoss(DistillLoss):
    """CrossKD for GFL heads: the student's head features, run through the rest of the
    teacher's head, mimic the teacher's predictions.

    At a head layer (official ``reused_teacher_head_idx=3``: the pre-activation output of the
    third conv of each tower, ``bbox_head.{cls,reg}_convs.2.gn``) the student's feature ``s`` of
    every FPN level gets the teacher's per-channel statistics (:func:`align_scale`) and goes
    through the teacher's remaining layers (its ReLU, ``cls_convs.3``, ``gfl_cls``; and
    ``reg_convs.3``, ``gfl_reg``, the level's ``scales``): the cross-head predictions ``c``
    (scores) and ``b`` (box logits). With the teacher's own predictions ``t``, ``u`` and
    ``w = sigmoid(max_class t)`` per location, summed over levels and locations::

        cls = sum BCE(c, sigmoid(t)) * |sigmoid(c) - sigmoid(t)|^beta / num_pos
        reg = sum w * mean_side T^2 KL(softmax(u/T) || softmax(b/T)) / sum w
        box = sum w * (1 - GIoU(box(b), box(u))) / sum w
        loss = cls_weight * cls + reg_weight * reg + bbox_weight * box

    (official GFL config: ``KDQualityFocalLoss`` beta 1 weight 1, ``KnowledgeDistillationKLDivLoss``
    with the KL summed over the bins, T 1, weight 3, ``GIoULoss`` weight 2). The gradient
    reaches the student through the teacher's layers; the teacher's parameters get none.

    Differences from ``CrossKDGFL``: its ``num_pos`` is the number of ATSS positives of the
    batch (averaged over GPUs); a wrapper has no assigner, so here it is ``pos_per_gt`` x the
    number of gt boxes of the batch (ATSS keeps about 0.2 k L = 9 of its k L = 45 candidates per
    box), at least 1. Locations in the padding added to batch an image (the official code weights
    them 0) count like the others. The three terms are logged as one loss.

    The teacher's layers come from ``cls_branch`` and ``reg_branch``: module paths in the
    config, which the wrapper resolves in the teacher at build time into
    :class:`~mmdistill.losses.base.ModelModules` (not registered: the teacher's parameters stay
    out of this loss's parameters, state dict, optimizer and DDP). A ``ModuleList`` in a branch
    applies its module of the level (GFL's ``scales``).

    Args:
        cls_branch: Teacher modules from the tapped feature to the class scores.
        reg_branch: Teacher modules from the tapped feature to the box logits.
        cls_weight: Weight of the classification term (1.0).
        reg_weight: Weight of the box-distribution term (3.0).
        bbox_weight: Weight of the GIoU term (2.0).
        beta: Focusing exponent of the classification term (1.0).
        T: Temperature of the box-distribution KL (1.0).
        reg_max: Largest distance bin of the head (GFL: 16).
        pos_per_gt: Positives per gt box that stand for ATSS's count in ``num_pos`` (9.0).

    Shapes (L FPN levels, taps in this order; see configs/crosskd):
        preds_S: ``2L`` tensors: the student's cls-tower features of the L levels, then its
            reg-tower features, each ``(N, C, H_l, W_l)``.
        preds_T: ``4L`` tensors: the teacher's cls-tower and reg-tower features at the same
            layer (same shapes), its class logits ``(N, K, H_l, W_l)`` (``bbox_head.gfl_cls``)
            and its box logits ``(N, 4*(reg_max+1), H_l, W_l)`` (``bbox_head.scales.<l>``).
        gt_bboxes: N tensors ``(n_i, 4)`` (only their number is used).
        Returns: scalar tensor (float32 for half-precision inputs).
    """

    takes_all_levels = True
    extra_inputs: tuple[str, ...] = ('gt_bboxes',)
    module_args = {'cls_branch': 'teacher', 'reg_branch': 'teacher'}

    def __init__(self, cls_branch: ModelModules | Sequence, reg_branch: ModelModules | Sequence,
                 cls_weight: float = 1.0, reg_weight: float = 3.0, bbox_weight: float = 2.0,
                 beta: float = 1.0, T: float = 1.0, reg_max: int = 16,
                 pos_per_gt: float = 9.0) -> None:
        super().__init__()
        self.cls_branch = as_model_modules(cls_branch, 'CrossKDLoss.cls_branch')
        self.reg_branch = as_model_modules(reg_branch, 'CrossKDLoss.reg_branch')
        self.cls_weight, self.reg_weight, self.bbox_weight = cls_weight, reg_weight, bbox_weight
        self.beta, self.T, self.reg_max, self.pos_per_gt = beta, T, reg_max, pos_per_gt

    def cross_head(self, feat_S: Tensor, feat_T: Tensor, level: int) -> tuple[Tensor, Tensor]:
        """The cross-head class and box logits of one level from the two towers' features
        ``feat_S = (cls, reg)`` of the student and ``feat_T`` of the teacher."""
        return tuple(upcast(branch(align_scale(upcast(s), upcast(t)), level))
                     for branch, s, t in zip((self.cls_branch, self.reg_branch), feat_S, feat_T))

    def forward(self, preds_S: Sequence[Tensor], preds_T: Sequence[Tensor],
                gt_bboxes: Sequence[Tensor]) -> Tensor:
        num = len(preds_S) // 2
        if not preds_S or len(preds_S) % 2 or len(preds_T) != 4 * num:
            raise ValueError(
                f'CrossKDLoss: got {len(preds_S)} student and {len(preds_T)} teacher tensors; it '
                'takes 2L student tensors (cls-tower, then reg-tower features of the L levels) '
                'and 4L teacher tensors (the same features, then gfl_cls and the scales outputs)')
        cls_S, reg_S = preds_S[:num], preds_S[num:]
        cls_hold_T, reg_hold_T, cls_T, reg_T = (preds_T[i * num:(i + 1) * num] for i in range(4))
        cls_kd = reg_kd = box_kd = weight_sum = 0.
        for level in range(num):
            for s, t in ((cls_S[level], cls_hold_T[level]), (reg_S[level], reg_hold_T[level])):
                if s.shape != t.shape:
                    raise ValueError(f'CrossKDLoss (level {level}): student head feature '
                                     f'{tuple(s.shape)} and teacher\'s {tuple(t.shape)} differ; '
                                     "the student's head needs the teacher's feat_channels")
            cross_cls, cross_reg = self.cross_head(
                (cls_S[level], reg_S[level]), (cls_hold_T[level], reg_hold_T[level]), level)
            t_cls, t_reg = upcast(cls_T[level].detach()), upcast(reg_T[level].detach())
            if cross_cls.shape != t_cls.shape:
                raise ValueError(f'CrossKDLoss (level {level}): cross-head scores '
                                 f'{tuple(cross_cls.shape)}, teacher scores {tuple(t_cls.shape)}')
            weight = t_cls.max(1).values.sigmoid()  # (N, H, W)
            cls_kd = cls_kd + kd_quality_focal_loss(cross_cls, t_cls, self.beta).sum()
            kl = distribution_kl(box_distributions(cross_reg, self.reg_max, 'CrossKDLoss'),
                                 box_distributions(t_reg, self.reg_max, 'CrossKDLoss'),
                                 self.T, class_reduction='sum')  # (N, 4, H, W)
            reg_kd = reg_kd + (weight * kl.mean(1)).sum()
            giou = giou_same_centre(distances(cross_reg, self.reg_max),
                                    distances(t_reg, self.reg_max))
            box_kd = box_kd + (weight * (1 - giou)).sum()
            weight_sum = weight_sum + weight.sum()
        num_pos = max(self.pos_per_gt * sum(len(b) for b in gt_bboxes), 1.0)
        # all weights 0 (the teacher's scores underflow everywhere): the weighted sums are 0
        weight_sum = weight_sum.clamp_min(torch.finfo(weight_sum.dtype).tiny)
        return (self.cls_weight * cls_kd / num_pos
                + (self.reg_weight * reg_kd + self.bbox_weight * box_kd) / weight_sum)


__all__ = ['CrossKDLoss', 'align_scale', 'giou_same_centre', 'kd_quality_focal_loss']
