"""DistillClassifier: any mmpretrain 1.x classifier (ResNet, MobileNet, ViT...) as a student."""
from __future__ import annotations

from typing import Any

import torch
from mmpretrain.registry import MODELS

from ..distiller import BaseDistiller


@MODELS.register_module()
class DistillClassifier(BaseDistiller):
    """Distil a classifier: the student's classification loss plus weighted distillation losses.

    Extra loss inputs it gives: ``gt_labels`` (``(N,)`` hard labels, or ``(N, K)`` soft/mixed
    labels when Mixup/CutMix made them), ``indices`` (each sample's dataset index, for CRD) and
    ``logits_S`` (the student head's output, for OFA).
    See :class:`~mmdistill.distiller.BaseDistiller` for the arguments.
    """

    registry = MODELS
    provided_inputs = ('gt_labels', 'indices', 'logits_S')
    init_student_prefixes = ('neck.', 'head.')
    logit_layers = ('head', 'fc')
    extra_taps = (('logits_S', 'head'), )
    default_dry_run_shape = (224, 224)

    def _extra_inputs(self, name: str, data_samples: list) -> Any:
        if name == 'gt_labels':
            if 'gt_score' in data_samples[0]:
                return torch.stack([s.gt_score for s in data_samples])
            return torch.cat([s.gt_label for s in data_samples])
        if name == 'indices':
            idx = [s.metainfo.get('sample_idx') for s in data_samples]
            if any(i is None for i in idx):
                raise KeyError('a loss needs each sample\'s dataset index: keep "sample_idx" '
                               'in PackInputs meta_keys')
            return torch.tensor(idx, dtype=torch.long, device=data_samples[0].gt_label.device)
        return super()._extra_inputs(name, data_samples)
