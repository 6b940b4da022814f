"""LD: Localization Distillation for Dense Object Detection.

Zheng, Zhaohui; Ye, Rongguang; Wang, Ping; Ren, Dongwei; Zuo, Wangmeng; Hou, Qibin; Cheng,
Ming-Ming. "Localization Distillation for Dense Object Detection", CVPR 2022.
Official code: https://github.com/HikariTJU/LD; in mmdet 3.x as ``LDHead`` with
``KnowledgeDistillationKLDivLoss`` (configs/ld).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.fgd import fgd_masks
from mmdistill.losses.utils import upcast
from mmdistill.registry import DISTILL_LOSSES


def box_distributions(pred: Tensor, reg_max: int, name: str = 'LDLoss') -> Tensor:
    """GFL box-distribution logits ``(N, 4*(reg_max+1), H, W)`` as ``(N, 4, reg_max+1, H, W)``
    (side-major channels, as GFLHead lays them out: left, top, right, bottom)."""
    c = pred.shape[1]
    if c % 4:
        raise ValueError(f'{name}: the tap gives {c} channels, not a multiple of 4; tap the '
                         'box branch of a GFL-style head (4*(reg_max+1) channels, e.g. '
                         '"bbox_head.scales.0")')
    if c != 4 * (reg_max + 1):
        raise ValueError(f'{name}: the tap gives {c} channels = 4 x {c // 4} bins, but '
                         f'reg_max={reg_max} means 4 x {reg_max + 1}; set reg_max={c // 4 - 1}')
    n, _, h, w = pred.shape
    return pred.reshape(n, 4, reg_max + 1, h, w)


def distribution_kl(preds_S: Tensor, preds_T: Tensor, T: float, dim: int = 2,
                    class_reduction: str = 'mean') -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` over ``dim``, which is reduced by its
    ``'mean'`` (mmdet's ``knowledge_distillation_kl_div_loss``) or ``'sum'`` (the KL itself)."""
    log_s = F.log_softmax(preds_S / T, dim=dim)
    log_t = F.log_softmax(preds_T.detach() / T, dim=dim)
    kl = F.kl_div(log_s, log_t, reduction='none', log_target=True)
    kl = kl.mean(dim) if class_reduction == 'mean' else kl.sum(dim)
    return kl * (T * T)


@DISTILL_LOSSES.register_module()
class LDLoss(DistillLoss):
    """Localization distillation of one FPN level's box distributions.

    Every location of a GFL-style head predicts, per side (left, top, right, bottom), logits
    over ``reg_max + 1`` distance bins; LD makes the student's softened distributions match the
    teacher's::

        kl(n, h, w, side) = T^2 * mean_bins softmax(t/T) * (log softmax(t/T) - log softmax(s/T))
        loss = sum_{n, h, w} M(n, h, w) * mean_side kl(n, h, w, side)

    ``mean_bins`` (KL / (reg_max+1)) is mmdet's ``knowledge_distillation_kl_div_loss``, and the
    mean over sides its ``avg_factor=4``, so the defaults (entry ``loss_weight=0.25``, ``T=10``,
    ``reg_max=16``) are those of mmdet's and the official LD configs.

    Region ``M``: mmdet's ``LDHead`` sums over the student's positive anchors (ATSS), each
    weighted by the student's max classification score (detached), and does not divide by their
    number. A distillation wrapper has no assigner, so here ``M`` is the foreground mask of FGD
    (:func:`~mmdistill.losses.fgd.fgd_masks`: the cells a gt box covers, with a margin of about
    one cell, on the padded batch input): with ``area_weight`` (default) each cell gets 1 /
    (cells of its box) (largest where boxes overlap), so every box adds about one location's
    KL per level however large it is, as ATSS gives every box a few positives; otherwise 1 in
    every box cell. It is a sum over the batch, like ``LDHead``'s. Images without boxes add 0.

    Tap the box logits after GFL's per-level ``Scale`` (``'bbox_head.scales.<i>'``), which
    ``LDHead`` distils; ``'bbox_head.gfl_reg'`` is before it.

    Args:
        T: Temperature (10).
        reg_max: Largest distance bin of the head (GFL: 16); channels = 4*(reg_max+1).
        area_weight: Weight box cells by 1 / box cells (True) or by 1.

    Shapes:
        preds_S: ``(N, 4*(reg_max+1), H, W)`` student box logits of one level.
        preds_T: the teacher's, same shape; never back-propagated into.
        gt_bboxes: N tensors ``(n_i, 4)``, xyxy in input pixels.
        img_shape: ``(H_in, W_in)`` of the padded batch input.
        Returns: scalar tensor (float32 for half-precision inputs).
    """

    extra_inputs: tuple[str, ...] = ('gt_bboxes', 'img_shape')
    def __init__(self, T: float = 10.0, reg_max: int = 16, area_weight: bool = True) -> None:
        super().__init__()
        self.T, self.reg_max = T, reg_max
        self.area_weight = area_weight

    def forward(self, preds_S: Tensor, preds_T: Tensor, gt_bboxes: Sequence[Tensor],
                img_shape: Sequence[int]) -> Tensor:
        if preds_S.shape != preds_T.shape:
            raise ValueError(f'LDLoss: student {tuple(preds_S.shape)} and teacher '
                             f'{tuple(preds_T.shape)} box logits differ in shape')
        s = box_distributions(upcast(preds_S), self.reg_max)
        t = box_distributions(upcast(preds_T.detach()), self.reg_max)
        n, _, _, h, w = s.shape
        mask, _ = fgd_masks(gt_bboxes, img_shape, h, w, s.dtype, s.device)
        if not self.area_weight:
            mask = (mask > 0).to(s.dtype)
        kl = distribution_kl(s, t, self.T).mean(1)  # (N, H, W)
        return (mask * kl).sum()


__all__ = ['LDLoss', 'box_distributions', 'distribution_kl']
