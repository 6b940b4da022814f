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
    the batch and multiplied by ``T^2 / N``. Numerical differences (the same values, to
    rounding): the logs of the binary distributions are computed with log-sum-exp instead of
    ``torch.log`` of the summed probabilities, which stays finite when the target probability
    underflows (large logits / small T), where mdistiller gives inf or nan; and the KLs take the
    teacher's log-probabilities, so that a learnable T (CTKD) gets a finite gradient.

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

    z_S = logits_S / T
    z_T = logits_T / T

    def log_binary(z: torch.Tensor) -> torch.Tensor:
        """log of the binary distribution [p_gt, sum of the others] of logits ``z``, via
        log-sum-exp so that it stays finite when p_gt underflows (mdistiller takes torch.log
        of the summed probabilities)."""
        return torch.cat([
            z.gather(1, target.unsqueeze(1)),
            torch.logsumexp(z.masked_fill(gt_bool, float('-inf')), dim=1, keepdim=True),
        ], dim=1) - torch.logsumexp(z, dim=1, keepdim=True)

    # the teacher's log-probabilities as the targets: the same KLs, and their gradients in a
    # learnable T stay finite where a teacher probability is 0 (NCKD's target class always is)
    tckd = F.kl_div(log_binary(z_S), log_binary(z_T), reduction='sum',
                    log_target=True) * T**2 / n

    log_q_S = F.log_softmax(z_S - 1000.0 * gt_mask, dim=1)
    log_q_T = F.log_softmax(z_T - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(log_q_S, log_q_T, reduction='sum', log_target=True) * T**2 / n
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
