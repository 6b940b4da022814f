"""DistillClassifier: any mmpretrain 1.x classifier (ResNet, MobileNet, ViT...) as a student."""
from __future__ import annotations

from typing import Any

import torch
from mmpretrain.registry import MODELS
from torch import nn

from ..distiller import BaseDistiller, LossEntry
from ..losses.base import DistillLoss
from ..losses.sdd import multi_scale_pool
from ..recorder import find_module


@MODELS.register_module()
class DistillClassifier(BaseDistiller):
    """Distil a classifier: the student's classification loss plus weighted distillation losses.

    Extra loss inputs it gives: ``gt_labels`` (``(N,)`` hard labels, or ``(N, K)`` soft/mixed
    labels when Mixup/CutMix made them), ``indices`` (each sample's dataset index, for CRD) and
    ``logits_S`` (the student head's output, for OFA).

    SDD entries (``SDDLoss`` or ``CTKDLoss(base='sdd')``) tap the last feature map of each model;
    the wrapper pools it to the loss's regions (1x1, 2x2, 4x4) and applies each model's own
    classifier layer, named by the entry key ``classifier`` (default ``'head.fc'``), to every
    region, giving the ``(N, K, M)`` local logits. See
    :class:`~mmdistill.distiller.BaseDistiller` for the arguments.
    """

    registry = MODELS
    provided_inputs = ('gt_labels', 'indices', 'logits_S')
    init_student_prefixes = ('neck.', 'head.')
    logit_layers = ('head', 'fc')
    extra_taps = (('logits_S', 'head'), )
    gives_region_logits = True
    entry_options = ('classifier', )
    default_dry_run_shape = (224, 224)

    def __init__(self, *args, **kwargs) -> None:
        #: ``{entry name: (student fc, teacher fc)}`` of the region-logit (SDD) entries
        self._region_classifiers: dict[str, tuple[nn.Linear, nn.Linear]] = {}
        super().__init__(*args, **kwargs)

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

    # ------------------------------------------------------------------ SDD local logits
    @staticmethod
    def _local(module: nn.Module) -> bool:
        return isinstance(module, DistillLoss) and module.region_scales is not None

    def _classifiers(self, entry: LossEntry) -> tuple[nn.Linear, nn.Linear]:
        path = entry.options.get('classifier', 'head.fc')
        key = f'{entry.key}.classifier'
        layers = []
        teacher = self.teacher_of(entry).model
        for model, owner in ((self.student, 'student'), (teacher, 'teacher')):
            layer = find_module(model, path, key, owner)
            if not isinstance(layer, nn.Linear):
                raise ValueError(f'{key}: {path!r} of the {owner} is a {type(layer).__name__}, '
                                 'not the nn.Linear classifier layer SDD applies to each region')
            layers.append(layer)
        return layers[0], layers[1]

    def _check_entry(self, entry: LossEntry, modules: list, feats_s: list, feats_t: list) -> None:
        if not self._local(modules[0]):
            return
        fc_s, fc_t = self._classifiers(entry)
        self._region_classifiers[entry.name] = (fc_s, fc_t)  # resolved once, used each step
        for fs, ft in zip(feats_s, feats_t):
            for feat, fc, owner in ((fs, fc_s, 'student'), (ft, fc_t, 'teacher')):
                if feat.dim() != 4 or feat.shape[1] != fc.in_features:
                    raise ValueError(
                        f'{entry.key}.{owner}: SDD needs the last feature map (N, C, H, W) that '
                        f'the classifier reads (C = {fc.in_features}); the tap gives '
                        f'{tuple(feat.shape)}')
        if fc_s.out_features != fc_t.out_features:
            raise ValueError(f'{entry.key}: the student predicts {fc_s.out_features} classes and '
                             f'the teacher {fc_t.out_features}; SDD needs the same classes')

    def _prepare(self, entry: LossEntry, module: nn.Module, fs: Any, ft: Any) -> tuple:
        if not self._local(module):
            return super()._prepare(entry, module, fs, ft)
        fc_s, fc_t = self._region_classifiers[entry.name]
        scales = module.region_scales
        local_s = fc_s(multi_scale_pool(fs, scales).transpose(1, 2)).transpose(1, 2)
        with torch.no_grad():
            local_t = fc_t(multi_scale_pool(ft, scales).transpose(1, 2)).transpose(1, 2)
        return local_s, local_t
