"""DKD: Decoupled Knowledge Distillation.

Zhao, Cui, Song, Qiu, Liang. "Decoupled Knowledge Distillation". CVPR 2022.
Official code: https://github.com/megvii-research/mdistiller (``mdistiller/distillers/DKD.py``).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.kd import Temperature, as_temperature
from mmdistill.losses.utils import upcast
from mmdistill.registry import DISTILL_LOSSES
from mmdistill.schedule import hub_progress


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


def warmup_factor(warmup: float, warmup_by: str = 'epoch',
                  epoch: int | None = None) -> tuple[float, bool]:
    """DKD's warmup factor ``min(progress / warmup, 1)`` with ``progress`` counted from 1.

    ``progress`` is ``epoch`` when given (1-based), else read from the message hub
    (:func:`hub_progress`). Returns ``(factor, missing)``: ``missing`` is True when no progress
    was available, in which case the factor is 1. ``warmup <= 0`` gives ``(1.0, False)``.
    """
    if warmup <= 0:
        return 1.0, False
    progress = epoch if epoch is not None else hub_progress(warmup_by)
    if progress is None:
        return 1.0, True
    return min(float(progress) / warmup, 1.0), False


@DISTILL_LOSSES.register_module()
class DKDLoss(DistillLoss):
    """Decoupled Knowledge Distillation (Zhao et al., CVPR 2022; megvii-research/mdistiller).

    ``loss = min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD)`` with epochs counted from 1,
    see :func:`dkd_loss`.

    The epoch is read from mmengine's ``MessageHub`` (``get_info('epoch')`` is 0-based, so the
    factor uses ``epoch + 1``). With ``warmup_by='iter'`` (iteration-based runners) the warmup
    runs over ``warmup`` iterations using ``get_info('iter') + 1``. An explicit ``epoch``
    argument to :meth:`forward` overrides the hub (1-based; iterations for ``'iter'``).
    Without hub information and without ``epoch`` (bare tensors, a custom loop) the warmup is
    treated as finished (factor 1) and a warning is issued once: a factor frozen at
    ``1 / warmup`` would silently shrink the loss for the whole run.

    Args:
        alpha: TCKD weight.
        beta: NCKD weight (CIFAR 8; ImageNet R34->R18 0.5).
        temperature: softmax temperature (CIFAR 4, ImageNet 1).
        warmup: warmup length in epochs (or iterations); 0 disables it.
        warmup_by: 'epoch' or 'iter'.

    Inputs:
        logits_S: (N, K) student logits.
        logits_T: (N, K) teacher logits.
        gt_labels: (N,) long labels or (N, K) soft labels (argmax gives the target class).
        epoch: optional 1-based progress overriding the message hub.

    Returns:
        Scalar loss.
    """

    extra_inputs: tuple[str, ...] = ('gt_labels', )

    def __init__(self,
                 alpha: float = 1.0,
                 beta: float = 8.0,
                 temperature: float = 4.0,
                 warmup: float = 20,
                 warmup_by: str = 'epoch') -> None:
        super().__init__()
        if warmup_by not in ('epoch', 'iter'):
            raise ValueError(f"warmup_by must be 'epoch' or 'iter', got {warmup_by!r}")
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.warmup = warmup
        self.warmup_by = warmup_by
        self._warned = False

    def get_warmup_factor(self, epoch: int | None = None) -> float:
        """The warmup factor for an explicit 1-based ``epoch``, else from the message hub."""
        factor, missing = warmup_factor(self.warmup, self.warmup_by, epoch)
        if missing and not self._warned:
            warnings.warn(
                f'{type(self).__name__}: no {self.warmup_by!r} in the MessageHub and no `epoch` '
                'given; the warmup factor is taken as 1.')
            self._warned = True
        return factor

    def forward(self,
                logits_S: torch.Tensor,
                logits_T: torch.Tensor,
                gt_labels: torch.Tensor,
                epoch: int | None = None) -> torch.Tensor:
        factor = self.get_warmup_factor(epoch)
        return factor * dkd_loss(logits_S, logits_T, gt_labels, self.alpha, self.beta,
                                 self.temperature)

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, '
                f'warmup={self.warmup}, warmup_by={self.warmup_by!r}')
