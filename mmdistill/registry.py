"""Registries of mmdistill.

``DISTILL_LOSSES`` holds the distillation losses (plain ``nn.Module``s). The wrappers
(``DistillDetector``, ``DistillSegmentor``, ``DistillClassifier``) are registered in their own
library's ``MODELS`` registry so that ``type='DistillDetector'`` works in any mmdet config.
"""
from mmengine.registry import Registry

DISTILL_LOSSES = Registry('distill_loss', scope='mmdistill', locations=['mmdistill.losses'])
