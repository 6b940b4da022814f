"""Tiny real mmdet/mmseg models and batches for the wrapper tests."""
from __future__ import annotations

import os

import numpy as np
import torch


def tiny_retinanet(base_channels: int = 16, fpn_channels: int = 32, num_classes: int = 3,
                   mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)) -> dict:
    """A RetinaNet with a narrow ResNet-18 and a one-conv head (real mmdet modules)."""
    from tools.experiments.shapes import retinanet
    return retinanet(base_channels, fpn_channels, num_classes, stacked_convs=1, mean=mean,
                     std=std, octave_base_scale=4)


def tiny_gfl(base_channels: int = 8, fpn_channels: int = 16, num_classes: int = 3,
             stacked_convs: int = 2, reg_max: int = 4) -> dict:
    """A GFL detector with a narrow ResNet-18, a 2-conv GN head and ``reg_max`` bins."""
    w = base_channels
    return dict(
        type='GFL',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                               pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, base_channels=w, num_stages=4,
                      out_indices=(0, 1, 2, 3), frozen_stages=-1, style='pytorch',
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False),
        neck=dict(type='FPN', in_channels=[w, w * 2, w * 4, w * 8], out_channels=fpn_channels,
                  start_level=1, add_extra_convs='on_output', num_outs=5),
        bbox_head=dict(
            type='GFLHead', num_classes=num_classes, in_channels=fpn_channels,
            stacked_convs=stacked_convs, feat_channels=fpn_channels, reg_max=reg_max,
            norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
            anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                                  scales_per_octave=1, strides=[8, 16, 32, 64, 128]),
            loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
            loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
            loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
        train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                       pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.6), max_per_img=20))


def save_teacher(cfg: dict, path: str, seed: int = 1, scope: str = 'mmdet') -> dict:
    """Build ``cfg`` in ``scope``, initialise it, save ``{'state_dict': ...}``; return the state."""
    import importlib

    from mmengine.config import ConfigDict
    MODELS = importlib.import_module(f'{scope}.registry').MODELS
    importlib.import_module(f'{scope}.utils').register_all_modules()
    cfg = ConfigDict(cfg)
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    state = model.state_dict()
    torch.save({'state_dict': state}, path)
    return state


def det_batch(n: int = 2, size: tuple[int, int] = (96, 128), num_classes: int = 3,
              seed: int = 0, masks: bool = False) -> dict:
    """A packed mmdet batch (uint8 images + DetDataSamples with boxes); image 1 has no box.
    ``masks``: each box's filled rectangle as its instance mask (``BitmapMasks``) too."""
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
        if masks:
            from mmdet.structures.mask import BitmapMasks
            bitmaps = np.zeros((k, h, w), dtype=np.uint8)
            for j, (x0, y0, x1, y1) in enumerate(sample.gt_instances.bboxes.round().int().tolist()):
                bitmaps[j, y0:y1, x0:x1] = 1
            sample.gt_instances.masks = BitmapMasks(bitmaps, h, w)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


SEG_CONFIG = os.path.join(os.path.dirname(__file__), 'data', 'cwd_pspnet_tiny_camvid-mini.py')


def tiny_pspnets() -> tuple[dict, dict]:
    """(student, teacher) tiny PSPNet configs of the CamVid test config (11 classes)."""
    from mmengine.config import Config
    cfg = Config.fromfile(SEG_CONFIG)
    return cfg.model.student.to_dict(), cfg.model.teacher.config.model.to_dict()


def seg_batch(n: int = 2, size: tuple[int, int] = (64, 96), num_classes: int = 11,
              seed: int = 0) -> dict:
    """A packed mmseg batch: uint8 images and SegDataSamples with label maps."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes + 1, (1, h, w), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def tiny_classifier(width: int = 8, num_classes: int = 10, out_indices=(3, )) -> dict:
    """An mmpretrain ImageClassifier: a narrow CIFAR ResNet-18, GAP neck, linear head."""
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=num_classes,
                               mean=[125.3, 123.0, 113.9], std=[63.0, 62.1, 66.7], to_rgb=True),
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=width, base_channels=width,
                      num_stages=4, out_indices=out_indices, style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=width * 8,
                  loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))


def tiny_distill_classifier_config(ckpt: str, losses: dict | None = None) -> dict:
    """The config of a DistillClassifier of the w8 tiny classifier from the w16 one saved at
    ``ckpt`` (default losses: KD on the logits, T 4, weight 0.9)."""
    losses = losses or dict(kd=dict(type='KDLoss', student='head', teacher='head',
                                    temperature=4.0, loss_weight=0.9))
    return dict(type='DistillClassifier', student=tiny_classifier(8),
                teacher=dict(config=dict(model=tiny_classifier(16)), checkpoint=ckpt),
                distill_losses=losses, dry_run_shape=(32, 32))


def tiny_distill_classifier(ckpt: str, losses: dict) -> 'torch.nn.Module':
    """The model of :func:`tiny_distill_classifier_config`, built and initialised."""
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules

    import mmdistill  # noqa: F401
    register_all_modules()
    model = MODELS.build(tiny_distill_classifier_config(ckpt, losses))
    model.init_weights()
    return model


def cls_batch(n: int = 4, num_classes: int = 10, size: int = 32, seed: int = 0,
              soft: bool = False) -> dict:
    """A packed mmpretrain batch with labels (or mixed soft labels) and dataset indices."""
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(n):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        sample = DataSample(metainfo=dict(sample_idx=10 + i, img_shape=(size, size)))
        sample.set_gt_label(int(torch.randint(0, num_classes, (1,), generator=g)))
        if soft:
            score = torch.rand(num_classes, generator=g)
            sample.set_gt_score(score / score.sum())
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)
