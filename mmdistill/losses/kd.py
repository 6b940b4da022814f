"""KD: vanilla logit distillation, optionally with logit standardization.

* Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network". NIPS Deep Learning
  Workshop, 2015. Reference implementation: megvii-research/mdistiller
  (``mdistiller/distillers/KD.py``).
* Sun, Ren, Li, Wang, Cao. "Logit Standardization in Knowledge Distillation". CVPR 2024.
  Official code: https://github.com/sunshangquan/logit-standardization-KD.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.utils import upcast
from mmdistill.registry import DISTILL_LOSSES

Temperature = float | torch.Tensor


def as_temperature(temperature: Temperature) -> Temperature:
    """A python number stays as is; a tensor (0-dim or one element) becomes 0-dim."""
    if isinstance(temperature, torch.Tensor):
        return temperature.reshape(())
    return temperature


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score of the logits over the class dimension (Sun et al., CVPR 2024).

    ``z = (l - mean(l)) / (eps + std(l))`` with the unbiased standard deviation, computed over
    the last dimension, as in the official ``normalize``.

    Args:
        logits: (..., K) logits.
        eps: added to the standard deviation.

    Returns:
        (..., K) standardized logits.
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (eps + std)


def kd_loss(logits_S: torch.Tensor,
            logits_T: torch.Tensor,
            temperature: Temperature,
            logit_stand: bool = False,
            class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Temperature-scaled KL divergence, ``T^2 * mean_n sum_k KL(p_T || p_S)``.

    Equal to mdistiller's ``kd_loss``:
    ``F.kl_div(log_softmax(s/T), softmax(t/T), reduction='none').sum(1).mean() * T**2``.

    Args:
        logits_S: (N, K) student logits.
        logits_T: (N, K) teacher logits (no gradient is taken through them).
        temperature: a python number, or a 0-dim / one-element tensor (a learnable temperature,
            e.g. CTKD's, receives gradients through both softmaxes and the ``T^2`` factor).
        logit_stand: standardize both logits over the classes first.
        class_weight: (K,) weights of the classes' terms of the KL sum,
            ``T^2 * mean_n sum_k w_k p_T,k (log p_T,k - log p_S,k)``; None: all 1.

    Returns:
        Scalar (0-dim) loss, float32 for half-precision inputs, else the inputs' dtype.
    """
    logits_S = upcast(logits_S)
    logits_T = upcast(logits_T.detach())
    if logit_stand:
        logits_S = standardize_logits(logits_S)
        logits_T = standardize_logits(logits_T)
    T = as_temperature(temperature)
    log_p_S = F.log_softmax(logits_S / T, dim=1)
    # the teacher's log-probabilities as the target: the same KL, and its gradient in a
    # learnable T stays finite where a teacher probability underflows to 0
    log_p_T = F.log_softmax(logits_T / T, dim=1)
    terms = F.kl_div(log_p_S, log_p_T, reduction='none', log_target=True)
    if class_weight is not None:
        terms = terms * class_weight.to(terms)
    return terms.sum(1).mean() * T**2


@DISTILL_LOSSES.register_module()
class KDLoss(DistillLoss):
    """Knowledge distillation on classification logits (Hinton et al., 2015).

    ``loss = T^2 * mean over the batch of sum over classes KL(softmax(t/T) || softmax(s/T))``.
    With ``logit_stand=True`` both logits are first standardized over the classes,
    ``z = (l - mean) / (1e-7 + std)`` (Sun et al., CVPR 2024, "Logit Standardization in Knowledge
    Distillation", sunshangquan/logit-standardization-KD; its recipe uses T=2 and kd weight 9).

    Args:
        temperature: softmax temperature T (CIFAR 4, ImageNet 1).
        logit_stand: apply logit standardization to student and teacher logits.
        class_weight: per-class weights ``w_k`` of the KL terms (a list of K numbers), e.g.
            larger for rare classes (class-balanced KD); None: plain KD.

    Inputs:
        logits_S: (N, K) student logits.
        logits_T: (N, K) teacher logits.

    Returns:
        Scalar loss.
    """


    def __init__(self, temperature: float = 4.0, logit_stand: bool = False,
                 class_weight: list[float] | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.logit_stand = logit_stand
        self.class_weight: torch.Tensor | None
        self.register_buffer('class_weight', None if class_weight is None else
                             torch.as_tensor(class_weight, dtype=torch.float32), persistent=False)

    def forward(self, logits_S: torch.Tensor, logits_T: torch.Tensor) -> torch.Tensor:
        if self.class_weight is not None and self.class_weight.numel() != logits_S.shape[1]:
            raise ValueError(f'KDLoss: class_weight has {self.class_weight.numel()} entries for '
                             f'{logits_S.shape[1]} classes')
        return kd_loss(logits_S, logits_T, self.temperature, self.logit_stand,
                       self.class_weight)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature}, logit_stand={self.logit_stand}'
