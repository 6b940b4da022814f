"""DKD: Decoupled Knowledge Distillation.

Zhao, Cui, Song, Qiu, Liang. "Decoupled Knowledge Distillation". CVPR 2022.
Official code: https://github.com/megvii-research/mdistiller (``mdistiller/distillers/DKD.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.kd import Temperature, as_temperature
from mmdistill.losses.utils import upcast
from mmdistill.registry import DISTILL_LOSSES


def hard_labels(gt_labels: torch.Tensor) -> torch.Tensor:
    """(N,) class indices from hard labels (N,) or soft / mixed labels (N, K) (argmax)."""
    if gt_labels.dim() == 2:
        return gt_labels.argmax(dim=1)
    return gt_labels.reshape(-1).long()


def _cat_mask(p: torch.Tensor, gt_mask: torch.Tensor, other_mask: torch.Tensor) -> torch.Tensor:
    """(N, K) probabilities -> (N, 2) binary distribution [p_gt, sum of the others]."""
    p_gt = (p * gt_mask).sum(dim=1, keepdim=True)
    p_other = (p * other_mask).sum(dim=1, keepdim=True)
    return torch.cat([p_gt, p_other], dim=1)


def dkd_loss(logits_S: torch.Tensor,
             logits_T: torch.Tensor,
             target: torch.Tensor,
             alpha: float,
             beta: float,
             temperature: Temperature) -> torch.Tensor:
    """``alpha * TCKD + beta * NCKD`` (mdistiller's ``dkd_loss``; no warmup factor).

    TCKD is the KL divergence of the binary [target, non-target] distributions; NCKD the KL
    divergence of the distributions over the non-target classes, obtained by subtracting
    ``1000`` from the target logit (after dividing by T), as mdistiller. Both are summed over
    the batch and multiplied by ``T^2 / N``. One numerical difference: the log of the
    student's binary distribution is computed with log-sum-exp instead of ``torch.log`` of the
    summed probabilities, which is the same value (to rounding) but stays finite when the
    target probability underflows (large logits / small T), where mdistiller gives inf or nan.

    Args:
        logits_S: (N, K) student logits.
        logits_T: (N, K) teacher logits (no gradient is taken through them).
        target: (N,) class indices, or (N, K) soft labels (argmax is the target class).
        alpha: TCKD weight.
        beta: NCKD weight.
        temperature: python number or 0-dim / one-element tensor (learnable, e.g. CTKD).

    Returns:
        Scalar (0-dim) loss.
    """
    logits_S = upcast(logits_S)
    logits_T = upcast(logits_T.detach())
    target = hard_labels(target)
    T = as_temperature(temperature)
    n = target.shape[0]

    gt_mask = torch.zeros_like(logits_S).scatter_(1, target.unsqueeze(1), 1.0)
    gt_bool = gt_mask.bool()
    other_bool = ~gt_bool

    z_S = logits_S / T
    p_T = F.softmax(logits_T / T, dim=1)
    b_T = _cat_mask(p_T, gt_bool, other_bool)
    # log of the student's binary distribution [p_gt, sum of the others], via log-sum-exp so
    # that it stays finite when p_gt underflows (mdistiller takes torch.log of the sums).
    lse_all = torch.logsumexp(z_S, dim=1, keepdim=True)
    log_b_S = torch.cat([
        z_S.gather(1, target.unsqueeze(1)),
        torch.logsumexp(z_S.masked_fill(gt_bool, float('-inf')), dim=1, keepdim=True),
    ], dim=1) - lse_all
    tckd = F.kl_div(log_b_S, b_T, reduction='sum') * T**2 / n

    log_q_S = F.log_softmax(z_S - 1000.0 * gt_mask, dim=1)
    q_T = F.softmax(logits_T / T - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(log_q_S, q_T, reduction='sum') * T**2 / n
    return alpha * tckd + beta * nckd


@DISTILL_LOSSES.register_module()
class DKDLoss(DistillLoss):
    """Decoupled Knowledge Distillation (Zhao et al., CVPR 2022; megvii-research/mdistiller).

    ``loss = alpha * TCKD + beta * NCKD``, see :func:`dkd_loss`. DKD's warm-up
    ``min(epoch / warmup, 1)`` (epochs counted from 1) is the entry's
    ``weight_schedule=dict(warmup=<epochs>, by_epoch=True)`` (``by_epoch=False``: iterations),
    as in ``configs/dkd``.

    Args:
        alpha: TCKD weight.
        beta: NCKD weight (CIFAR 8; ImageNet R34->R18 0.5).
        temperature: softmax temperature (CIFAR 4, ImageNet 1).

    Inputs:
        logits_S: (N, K) student logits.
        logits_T: (N, K) teacher logits.
        gt_labels: (N,) long labels or (N, K) soft labels (argmax gives the target class).

    Returns:
        Scalar loss.
    """

    extra_inputs = ('gt_labels', )

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature

    def forward(self, logits_S: torch.Tensor, logits_T: torch.Tensor,
                gt_labels: torch.Tensor) -> torch.Tensor:
        return dkd_loss(logits_S, logits_T, gt_labels, self.alpha, self.beta, self.temperature)

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}'
