"""SDD: Scale Decoupled Distillation (SD-KD).

Wei, Luo, Luo. "Scale Decoupled Distillation". CVPR 2024.
Official code: https://github.com/shicaiwei123/SDD-CVPR2024 (``mdistiller/distillers/KD.py``,
``sdd_kd_loss``; pooling in ``mdistiller/models/cifar/utils.py``, ``SPP``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdistill.losses.base import DistillLoss, ModelModules, as_model_modules
from mmdistill.losses.dkd import hard_labels
from mmdistill.losses.kd import Temperature, as_temperature
from mmdistill.losses.utils import upcast
from mmdistill.registry import DISTILL_LOSSES


def _pool_grid(scales: Sequence[int]) -> int:
    """Side of the grid every region is pooled from: 4 (as the official ``SPP``) when all
    scales divide 4, else the largest scale, which every scale must divide."""
    base = 4 if all(4 % s == 0 for s in scales) else max(scales)
    if any(base % s for s in scales):
        raise ValueError(f'every scale must divide the largest one, got {tuple(scales)}')
    return base


def multi_scale_pool(feat: torch.Tensor, scales: Sequence[int] = (1, 2, 4)) -> torch.Tensor:
    """Multi-scale average pooling of a feature map, as the official ``SPP``.

    The map is adaptively average-pooled to 4x4 first; each scale ``s`` is then pooled from
    that 4x4 grid to ``s x s`` and flattened row-major. Regions are concatenated in the order
    of ``scales`` (official: [1x1, 2x2, 4x4], M = 21). For scales that do not divide 4 the
    first grid is ``max(scales)``.

    Args:
        feat: (N, C, H, W) last feature map.
        scales: grid sizes, the first one 1 (the global region).

    Returns:
        (N, C, M) pooled features, M = sum(s * s).
    """
    grid = F.adaptive_avg_pool2d(feat, _pool_grid(scales))
    regions = [F.adaptive_avg_pool2d(grid, s).flatten(2) for s in scales]
    return torch.cat(regions, dim=2)


def check_scales(scales: Sequence[int]) -> tuple[int, ...]:
    """Validate pooling scales (first 1 = global region, all dividing the pooling grid)."""
    scales = tuple(int(s) for s in scales)
    if not scales or scales[0] != 1 or any(s < 1 for s in scales):
        raise ValueError(f'scales must start with 1 (the global region), got {scales}')
    _pool_grid(scales)
    return scales


def sdd_region_weights(local_T: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Consistent / complementary weights of every (sample, region) pair.

    With the teacher's argmax per region compared with the label: 1 where the global region
    (index 0) and the local region are both right or both wrong (consistent), 2 where exactly
    one of them is right (complementary). The global region always gets 1.

    Args:
        local_T: (N, K, M) teacher multi-scale logits, region 0 global.
        target: (N,) class indices.

    Returns:
        (N, M) weights in ``local_T``'s dtype.
    """
    correct = local_T.argmax(dim=1) == target.unsqueeze(1)  # (N, M)
    complementary = correct != correct[:, :1]
    return 1.0 + complementary.to(local_T.dtype)


def sdd_kd_loss(local_S: torch.Tensor,
                local_T: torch.Tensor,
                target: torch.Tensor,
                temperature: Temperature) -> torch.Tensor:
    """SD-KD loss: ``sum_{n,m} w[n,m] * kl[n,m] / (M * N)``.

    ``kl[n,m] = T^2 * sum_k KL(softmax(t[n,:,m]/T) || softmax(s[n,:,m]/T))`` and ``w`` from
    :func:`sdd_region_weights`. Elementwise NaNs of the KL (a zero teacher probability against
    a ``-inf`` student log-probability) count as 0, as in the official code.

    Args:
        local_S: (N, K, M) student multi-scale logits (region 0 global).
        local_T: (N, K, M) teacher multi-scale logits (no gradient is taken through them).
        target: (N,) class indices or (N, K) soft labels (argmax).
        temperature: python number or 0-dim / one-element tensor.

    Returns:
        Scalar (0-dim) loss.
    """
    local_S = upcast(local_S)
    local_T = upcast(local_T.detach())
    target = hard_labels(target)
    T = as_temperature(temperature)
    n, _, m = local_S.shape

    log_p_S = F.log_softmax(local_S / T, dim=1)
    # the teacher's log-probabilities as the target: the same KL, and its gradient in a
    # learnable T stays finite where a teacher probability underflows to 0
    log_p_T = F.log_softmax(local_T / T, dim=1)
    kl = F.kl_div(log_p_S, log_p_T, reduction='none', log_target=True) * T**2
    kl = torch.where(torch.isnan(kl), torch.zeros_like(kl), kl).sum(dim=1)  # (N, M)
    weights = sdd_region_weights(local_T, target)
    return (kl * weights).sum() / (m * n)


Classifiers = tuple[ModelModules, ModelModules]


def as_classifiers(value: Any) -> Classifiers | None:
    """The (student, teacher) classifier layers that the wrapper resolved from the loss's
    ``classifier`` path; None when the inputs are region logits already (no classifier)."""
    if value is None:
        return None
    if isinstance(value, str) or all(isinstance(v, str) for v in value):
        raise ValueError(f'classifier: {value!r} is a module path, which the distillation '
                         'wrapper resolves; outside a wrapper leave it None and give (N, K, M) '
                         'region logits')
    layers = tuple(as_model_modules(v, 'classifier') for v in value)
    for owner, layer in zip(('student', 'teacher'), layers):
        if len(layer.modules) != 1 or not isinstance(layer.modules[0], nn.Linear):
            raise ValueError(f'classifier: {list(layer.paths)} of the {owner} is '
                             f'{[type(m).__name__ for m in layer.modules]}, not the nn.Linear '
                             'classifier layer SDD applies to each region')
    k_s, k_t = (layer.modules[0].out_features for layer in layers)
    if k_s != k_t:
        raise ValueError(f'classifier: the student predicts {k_s} classes and the teacher {k_t}; '
                         'SDD needs the same classes')
    return layers


def region_logits(preds_S: Tensor, preds_T: Tensor, classifiers: Classifiers | None,
                  scales: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(N, K, M) region logits of both models: each model's last feature map (N, C, H, W) pooled
    to the regions (:func:`multi_scale_pool`) and passed through its own classifier (the
    teacher's without gradient); the inputs themselves when ``classifiers`` is None."""
    if classifiers is None:
        return preds_S, preds_T
    fc_s, fc_t = classifiers
    local_S = fc_s(multi_scale_pool(preds_S, scales).transpose(1, 2)).transpose(1, 2)
    with torch.no_grad():
        local_T = fc_t(multi_scale_pool(preds_T, scales).transpose(1, 2)).transpose(1, 2)
    return local_S, local_T


def check_region_taps(preds_S: list[Tensor], preds_T: list[Tensor],
                      classifiers: Classifiers | None, num_regions: int) -> None:
    """Build-time check of the tapped tensors: the last feature maps the classifiers read, or
    (without classifiers) (N, K, M) region logits."""
    for feats, owner, index in ((preds_S, 'student', 0), (preds_T, 'teacher', 1)):
        for feat in feats:
            if classifiers is None:
                if feat.dim() != 3 or feat.shape[2] != num_regions:
                    raise ValueError(
                        f'{owner}: without classifier the inputs are (N, K, {num_regions}) '
                        f'region logits; the tap gives {tuple(feat.shape)} (to pool a feature '
                        "map set classifier='head.fc', each model's classifier layer)")
                continue
            channels = classifiers[index].modules[0].in_features
            if feat.dim() != 4 or feat.shape[1] != channels:
                raise ValueError(f'{owner}: SDD needs the last feature map (N, C, H, W) that the '
                                 f'classifier reads (C = {channels}); the tap gives '
                                 f'{tuple(feat.shape)}')


@DISTILL_LOSSES.register_module()
class SDDLoss(DistillLoss):
    """Scale Decoupled Distillation, SD-KD (Wei et al., CVPR 2024; shicaiwei123/SDD-CVPR2024).

    Each network's last feature map is pooled to the regions of :func:`multi_scale_pool`
    (order [1x1, 2x2, 4x4], region 0 global) and the network's own classifier is applied to
    every region, giving (N, K, M) logits. Every (sample, region) pair contributes its KD term,
    weighted 2 when the teacher's global and local predictions disagree in correctness
    (complementary knowledge) and 1 otherwise, see :func:`sdd_kd_loss`. No separate global KD
    term (the global region is row 0).

    Args:
        temperature: softmax temperature (CIFAR 4).
        scales: pooling grid sizes; the first must be 1 (global).
        classifier: path of the classifier layer in both models (``'head.fc'``), which the
            wrapper resolves (``module_args``); None: the inputs are region logits already.

    Inputs:
        preds_S: (N, C_S, H, W) student last feature map, or (N, K, M) region logits.
        preds_T: (N, C_T, H', W') teacher last feature map, or (N, K, M) region logits.
        gt_labels: (N,) long labels or (N, K) soft labels (argmax).

    Returns:
        Scalar loss.
    """

    extra_inputs = ('gt_labels', )
    same_shape = False  # each model's feature map goes through its own classifier
    module_args = {'classifier': ('student', 'teacher')}

    def __init__(self, temperature: float = 4.0, scales: Sequence[int] = (1, 2, 4),
                 classifier: str | Classifiers | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.scales = check_scales(scales)
        self.num_regions = sum(s * s for s in self.scales)
        self.classifiers = as_classifiers(classifier)

    def check_taps(self, preds_S: list[Tensor], preds_T: list[Tensor]) -> None:
        check_region_taps(preds_S, preds_T, self.classifiers, self.num_regions)

    def forward(self, preds_S: Tensor, preds_T: Tensor, gt_labels: Tensor) -> Tensor:
        local_S, local_T = region_logits(preds_S, preds_T, self.classifiers, self.scales)
        if local_S.dim() != 3 or local_S.shape != local_T.shape:
            raise ValueError('SDDLoss expects student and teacher logits of the same shape '
                             f'(N, K, M), got {tuple(local_S.shape)} and {tuple(local_T.shape)}')
        if local_S.shape[2] != self.num_regions:
            raise ValueError(f'SDDLoss with scales {self.scales} expects M={self.num_regions} '
                             f'regions, got {local_S.shape[2]}')
        return sdd_kd_loss(local_S, local_T, gt_labels, self.temperature)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature}, scales={self.scales}'
