"""Tiny real mmdet models and batches for the wrapper tests."""
from __future__ import annotations

import torch


def tiny_retinanet(base_channels: int = 16, fpn_channels: int = 32, num_classes: int = 3,
                   mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)) -> dict:
    """A RetinaNet with a narrow ResNet-18 and a one-conv head (real mmdet modules)."""
    c = base_channels
    return dict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=list(mean), std=list(std),
                               bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, base_channels=c, num_stages=4,
                      out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                      norm_cfg=dict(type='BN', requires_grad=True), style='pytorch'),
        neck=dict(type='FPN', in_channels=[c, 2 * c, 4 * c, 8 * c], out_channels=fpn_channels,
                  start_level=1, add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(
            type='RetinaHead', num_classes=num_classes, in_channels=fpn_channels,
            stacked_convs=1, feat_channels=fpn_channels,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                  scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                  strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                     min_pos_iou=0, ignore_iof_thr=-1),
                       sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1,
                       debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=20))


def save_teacher(cfg: dict, path: str, seed: int = 1) -> dict:
    """Build ``cfg`` with mmdet, initialise it, save ``{'state_dict': ...}``; return the state."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    state = model.state_dict()
    torch.save({'state_dict': state}, path)
    return state


def det_batch(n: int = 2, size: tuple[int, int] = (96, 128), num_classes: int = 3,
              seed: int = 0) -> dict:
    """A packed mmdet batch (uint8 images + DetDataSamples with boxes); image 1 has no box."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for i in range(n):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        k = 0 if i == 1 else 3
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 8
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0), img_id=i))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, num_classes, (k,), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)
