"""CTKD: Curriculum Temperature for Knowledge Distillation (global temperature).

Li, Li, Yang, Zhang, Lin, Yang, Li. "Curriculum Temperature for Knowledge Distillation".
AAAI 2023. Official code: https://github.com/zhengli97/CTKD (``models/temp_global.py``,
``helper/loops.py``, ``train_student.py``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.dkd import dkd_loss
from mmdistill.losses.kd import kd_loss
from mmdistill.losses.sdd import (Classifiers, as_classifiers, check_region_taps, check_scales,
                                  region_logits, sdd_kd_loss)
from mmdistill.registry import DISTILL_LOSSES


class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by ``-lambda_`` backwards.

    (Ganin & Lempitsky, ICML 2015.) The official CTKD layer multiplies by ``lambda_`` and is fed
    values in [-1, 0] (``--decay_min -1 --decay_max 0``); here ``lambda_`` is in [0, 1] and the
    sign is in the layer, which gives the same gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambda_ * grad, None


class GlobalTemperature(nn.Module):
    """CTKD's global learnable temperature.

    ``T = t_start + t_end * sigmoid(GRL(theta))``: one scalar parameter ``theta``
    (initialised to 1, as the official ``Global_T``) behind a gradient-reversal layer, so the
    temperature is trained adversarially (to increase the distillation loss) with strength
    ``lambda_``. ``lambda_`` is set from outside by
    :class:`mmdistill.hooks.CTKDTemperatureHook` (cosine curriculum 0 -> 1); it starts at 0.

    Args:
        t_start: lower end of the temperature range.
        t_end: width of the range; T lies in (t_start, t_start + t_end).

    Returns (forward):
        0-dim temperature tensor (dtype of ``theta``).
    """

    def __init__(self, t_start: float = 1.0, t_end: float = 20.0) -> None:
        super().__init__()
        self.t_start = t_start
        self.t_end = t_end
        self.theta = nn.Parameter(torch.ones(1))
        self.lambda_: float = 0.0

    def forward(self) -> torch.Tensor:
        theta = GradientReversal.apply(self.theta, self.lambda_)
        return (self.t_start + self.t_end * torch.sigmoid(theta)).reshape(())

    def extra_repr(self) -> str:
        return f't_start={self.t_start}, t_end={self.t_end}, lambda_={self.lambda_}'


_BASE_KWARGS = {
    'kd': {'logit_stand': False},
    'dkd': {'alpha': 1.0, 'beta': 8.0},
    'sdd': {'scales': (1, 2, 4)},
}


@DISTILL_LOSSES.register_module()
class CTKDLoss(DistillLoss):
    """Curriculum Temperature KD (Li et al., AAAI 2023; zhengli97/CTKD), global version.

    A base logit loss computed with the learnable temperature of :class:`GlobalTemperature`:

    * ``base='kd'``: ``T^2 * KL`` batchmean (official ``DistillKL``), optional
      ``logit_stand`` (the logit-standardization paper's CTKD variant).
    * ``base='dkd'``: :func:`mmdistill.losses.dkd.dkd_loss` (``alpha``, ``beta``; official CTKD
      applies no warm-up; DKD's is the entry's ``weight_schedule=dict(warmup=20,
      by_epoch=True)``).
    * ``base='sdd'``: :func:`mmdistill.losses.sdd.sdd_kd_loss` (``scales``) on the region
      logits of :func:`mmdistill.losses.sdd.region_logits` (``classifier`` as SDDLoss's).

    The temperature's ``lambda_`` follows a cosine curriculum set by
    :class:`mmdistill.hooks.CTKDTemperatureHook`; add that hook to the config. The parameter
    ``global_temperature.theta`` must reach the optimizer (it is a parameter of this loss).

    Args:
        base: 'kd', 'dkd' or 'sdd'.
        t_start: lower end of the temperature range (official default 1).
        t_end: width of the temperature range (official default 20).
        classifier: 'sdd' only: the classifier path of both models (see SDDLoss).
        **base_kwargs: the base loss's hyperparameters (see above).

    Inputs:
        preds_S: (N, K) student logits; for 'sdd' the last feature map or region logits.
        preds_T: the teacher's, as ``preds_S``.
        gt_labels: (N,) long or (N, K) soft labels (unused by 'kd').

    Returns:
        Scalar loss.
    """

    extra_inputs = ('gt_labels', )
    same_shape = False  # logits (classes checked by the wrapper) or SDD feature maps
    module_args = {'classifier': ('student', 'teacher')}

    def __init__(self,
                 base: str = 'kd',
                 t_start: float = 1.0,
                 t_end: float = 20.0,
                 classifier: str | Classifiers | None = None,
                 **base_kwargs: Any) -> None:
        super().__init__()
        if base not in _BASE_KWARGS:
            raise ValueError(f'CTKDLoss base must be one of {sorted(_BASE_KWARGS)}, got {base!r}')
        unknown = set(base_kwargs) - set(_BASE_KWARGS[base])
        if unknown:
            raise TypeError(f'CTKDLoss(base={base!r}) got unexpected arguments {sorted(unknown)}; '
                            f'allowed: {sorted(_BASE_KWARGS[base])}')
        self.base = base
        self.base_kwargs = {**_BASE_KWARGS[base], **base_kwargs}
        self.global_temperature = GlobalTemperature(t_start, t_end)
        if classifier is not None and base != 'sdd':
            raise TypeError(f"CTKDLoss(base={base!r}) takes no classifier (only base='sdd')")
        self.classifiers = as_classifiers(classifier)
        if base == 'sdd':
            self.scales = check_scales(self.base_kwargs['scales'])
            self.num_regions = sum(s * s for s in self.scales)
            self.base_kwargs['scales'] = self.scales

    def check_taps(self, preds_S: list[torch.Tensor], preds_T: list[torch.Tensor]) -> None:
        if self.base == 'sdd':
            check_region_taps(preds_S, preds_T, self.classifiers, self.num_regions)

    @property
    def lambda_(self) -> float:
        """Gradient-reversal strength of the temperature (set by CTKDTemperatureHook)."""
        return self.global_temperature.lambda_

    @lambda_.setter
    def lambda_(self, value: float) -> None:
        self.global_temperature.lambda_ = float(value)

    def forward(self,
                preds_S: torch.Tensor,
                preds_T: torch.Tensor,
                gt_labels: torch.Tensor | None = None) -> torch.Tensor:
        T = self.global_temperature()
        if self.base == 'kd':
            return kd_loss(preds_S, preds_T, T, self.base_kwargs['logit_stand'])
        if gt_labels is None:
            raise ValueError(f'CTKDLoss(base={self.base!r}) needs gt_labels')
        kw = self.base_kwargs
        if self.base == 'dkd':
            return dkd_loss(preds_S, preds_T, gt_labels, kw['alpha'], kw['beta'], T)
        preds_S, preds_T = region_logits(preds_S, preds_T, self.classifiers, self.scales)
        if preds_S.dim() != 3 or preds_S.shape[2] != self.num_regions:
            raise ValueError(f'CTKDLoss(base=sdd) expects (N, K, {self.num_regions}) logits, '
                             f'got {tuple(preds_S.shape)}')
        return sdd_kd_loss(preds_S, preds_T, gt_labels, T)

    def extra_repr(self) -> str:
        return f'base={self.base!r}, base_kwargs={self.base_kwargs}'
