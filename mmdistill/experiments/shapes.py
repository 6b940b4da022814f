"""Detection on the synthetic shapes set: small RetinaNets and their training config."""
from __future__ import annotations

import os.path as osp

from ..datasets import SHAPE_CLASSES
from .runtime import iter_runtime

METRIC = 'coco/bbox_mAP'
COCO_ZERO = {k: 0.0 for k in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')}


def retinanet(width: int, fpn: int, num_classes: int, stacked_convs: int = 2,
              mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
              octave_base_scale: int = 2) -> dict:
    """A RetinaNet with a ResNet-18 of ``width`` base channels and an FPN of ``fpn`` channels."""
    return dict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=list(mean), std=list(std),
                               bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, base_channels=width, num_stages=4,
                      out_indices=(0, 1, 2, 3), frozen_stages=-1, style='pytorch',
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False),
        neck=dict(type='FPN', in_channels=[width, width * 2, width * 4, width * 8],
                  out_channels=fpn, start_level=1, add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(
            type='RetinaHead', num_classes=num_classes, in_channels=fpn,
            stacked_convs=stacked_convs, feat_channels=fpn,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=octave_base_scale,
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
        test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.01,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=20))


def shapes_config(model: dict, data_root: str, work_dir: str, iters: int, batch_size: int,
                  name: str, seed: int = 0, **runtime) -> dict:
    """A full mmdet config on the shapes set at 128x128: flip, AdamW, warm-up + cosine.

    Validation (the learning curve, when ``runtime`` asks for ``val_interval``) runs on the
    training images; the test, whose numbers are reported, on the val images.
    """
    metainfo = dict(classes=SHAPE_CLASSES)
    warmup = max(min(50, iters // 4), 1)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(128, 128), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(128, 128), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]

    def dataset(split, pipeline):
        return dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                    ann_file=f'annotations/{split}.json', data_prefix=dict(img=f'{split}/'),
                    pipeline=pipeline, filter_cfg=dict(filter_empty_gt=False))

    def loader(split):
        return dict(batch_size=8, num_workers=0, drop_last=False,
                    sampler=dict(type='DefaultSampler', shuffle=False),
                    dataset=dict(dataset(split, test_pipeline), test_mode=True))

    def evaluator(split):
        return dict(type='CocoMetric', metric='bbox',
                    ann_file=osp.join(data_root, f'annotations/{split}.json'))
    return dict(
        default_scope='mmdet',
        custom_imports=dict(imports=['mmdistill'], allow_failed_imports=False),
        model=model, work_dir=work_dir,
        train_dataloader=dict(batch_size=batch_size, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              batch_sampler=dict(type='AspectRatioBatchSampler'),
                              dataset=dataset('train', train_pipeline)),
        val_dataloader=loader('train'), test_dataloader=loader('val'),
        val_evaluator=evaluator('train'), test_evaluator=evaluator('val'),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
                           clip_grad=dict(max_norm=35, norm_type=2)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=iters,
                 T_max=iters - warmup, eta_min=1e-5)],
        **iter_runtime(iters, name, seed=seed, **runtime))
