"""Detection on the synthetic shapes set: small RetinaNets and their training config."""
from __future__ import annotations

import json
import os.path as osp

from .runtime import iter_runtime
from .shapes_data import SHAPE_CLASSES

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


def image_range(data_root: str, split: str, start: int, stop: int | None) -> str:
    """``annotations/<split>_<start>-<stop>.json``: images ``[start:stop]`` of a split and their
    boxes (written once), so that COCO's metric scores those images only."""
    path = f'annotations/{split}_{start}-{stop or "end"}.json'
    if not osp.exists(osp.join(data_root, path)):
        with open(osp.join(data_root, f'annotations/{split}.json')) as f:
            coco = json.load(f)
        coco['images'] = coco['images'][start:stop]
        ids = {im['id'] for im in coco['images']}
        coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in ids]
        with open(osp.join(data_root, path), 'w') as f:
            json.dump(coco, f)
    return path


def shapes_config(model: dict, data_root: str, work_dir: str, iters: int, batch_size: int,
                  name: str, seed: int = 0, curve_subset: int | None = None,
                  train_from: int = 0, test_held_out: bool = False, **runtime) -> dict:
    """A full mmdet config on the shapes set at 128x128: flip, AdamW, warm-up + cosine.

    Validation (the learning curve, when ``runtime`` asks for ``val_interval``) runs on the
    training images (the first ``curve_subset`` of them, else all); the test, whose numbers are
    reported, on the val images. ``train_from``: train on the training images from that one
    on; ``test_held_out``: test on the ones before it instead of the val images (a split of the
    training images to choose a setting on).
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

    train_ann = image_range(data_root, 'train', train_from, None) if train_from else \
        'annotations/train.json'
    curve_ann = train_ann if curve_subset is None else \
        image_range(data_root, 'train', train_from, train_from + curve_subset)
    test_split, test_ann = ('train', image_range(data_root, 'train', 0, train_from)) \
        if test_held_out else ('val', 'annotations/val.json')

    def dataset(split, pipeline, ann_file=None):
        return dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                    ann_file=ann_file or f'annotations/{split}.json',
                    data_prefix=dict(img=f'{split}/'), pipeline=pipeline,
                    filter_cfg=dict(filter_empty_gt=False))

    def loader(split, ann_file=None):
        return dict(batch_size=8, num_workers=0, drop_last=False,
                    sampler=dict(type='DefaultSampler', shuffle=False),
                    dataset=dict(dataset(split, test_pipeline, ann_file), test_mode=True))

    def evaluator(ann_file):
        return dict(type='CocoMetric', metric='bbox', ann_file=osp.join(data_root, ann_file))
    return dict(
        default_scope='mmdet',
        custom_imports=dict(imports=['mmdistill'], allow_failed_imports=False),
        model=model, work_dir=work_dir,
        train_dataloader=dict(batch_size=batch_size, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              batch_sampler=dict(type='AspectRatioBatchSampler'),
                              dataset=dataset('train', train_pipeline, train_ann)),
        val_dataloader=loader('train', curve_ann), test_dataloader=loader(test_split, test_ann),
        val_evaluator=evaluator(curve_ann), test_evaluator=evaluator(test_ann),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
                           clip_grad=dict(max_norm=35, norm_type=2)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=iters,
                 T_max=iters - warmup, eta_min=1e-5)],
        **iter_runtime(iters, name, seed=seed, **runtime))
