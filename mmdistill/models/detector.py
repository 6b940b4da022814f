"""DistillDetector: any mmdet 3.x detector as a student."""
from __future__ import annotations

from typing import Any

import torch
from mmdet.registry import MODELS

from ..distiller import BaseDistiller


@MODELS.register_module()
class DistillDetector(BaseDistiller):
    """Distil a detector: the student's detection losses plus weighted distillation losses.

    Extra loss inputs it gives: ``gt_bboxes`` (list of ``(n_i, 4)`` xyxy boxes in input pixels,
    one per image) and ``img_shape`` (the padded ``batch_input_shape`` ``(H, W)``).
    ``init_student=True`` copies the teacher's neck and heads into the student where shapes match.
    See :class:`~mmdistill.distiller.BaseDistiller` for the arguments.
    """

    registry = MODELS
    provided_inputs = ('gt_bboxes', 'gt_labels', 'img_shape')
    init_student_prefixes = ('neck.', 'bbox_head.', 'rpn_head.', 'roi_head.', 'mask_head.')

    def _extra_inputs(self, name: str, data_samples: list) -> Any:
        if name == 'gt_bboxes':
            return [s.gt_instances.bboxes for s in data_samples]
        if name == 'gt_labels':
            return [s.gt_instances.labels for s in data_samples]
        if name == 'img_shape':
            return tuple(data_samples[0].batch_input_shape)
        return super()._extra_inputs(name, data_samples)

    def _dummy_data_samples(self, inputs: torch.Tensor) -> list:
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        h, w = inputs.shape[-2:]
        samples = []
        for _ in range(inputs.shape[0]):
            sample = DetDataSample(metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0)))
            sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                               labels=torch.zeros(0, dtype=torch.long))
            samples.append(sample)
        return samples
