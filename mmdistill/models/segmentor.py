"""DistillSegmentor: any mmseg 1.x segmentor (EncoderDecoder, with or without auxiliary head)."""
from __future__ import annotations

from typing import Any

import torch
from mmseg.registry import MODELS

from ..distiller import BaseDistiller


@MODELS.register_module()
class DistillSegmentor(BaseDistiller):
    """Distil a segmentor: the student's segmentation losses plus weighted distillation losses.

    Logit taps (``'decode_head.conv_seg'``) of student and teacher must predict the same classes;
    when their maps differ in size (different output strides) the build fails unless the entry
    sets ``resize='teacher_to_student'`` or ``'student_to_teacher'`` (bilinear).
    Extra loss input it gives: ``gt_sem_seg`` (``(N, H, W)`` label maps of the padded batch).
    See :class:`~mmdistill.distiller.BaseDistiller` for the arguments.
    """

    registry = MODELS
    provided_inputs = ('gt_sem_seg', 'img_shape')
    init_student_prefixes = ('decode_head.', 'auxiliary_head.')
    logit_layers = ('conv_seg',)

    def _extra_inputs(self, name: str, data_samples: list) -> Any:
        if name == 'gt_sem_seg':
            return torch.stack([s.gt_sem_seg.data[0] for s in data_samples])
        if name == 'img_shape':
            return tuple(data_samples[0].metainfo.get('batch_input_shape',
                                                      data_samples[0].img_shape))
        return super()._extra_inputs(name, data_samples)

    def _dummy_data_samples(self, inputs: torch.Tensor) -> list:
        from mmseg.structures import SegDataSample
        h, w = inputs.shape[-2:]
        return [SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                            batch_input_shape=(h, w)))
                for _ in range(inputs.shape[0])]
