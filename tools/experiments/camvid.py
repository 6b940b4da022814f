"""Segmentation on CamVid mini (``../shared/data/camvid_mini``): small PSPNets and their config."""
from __future__ import annotations

from .runtime import iter_runtime

NUM_CLASSES, IGNORE = 11, 11  # CamVid 11 classes; label 11 is void
METRIC = 'mIoU'


def pspnet(width: int, channels: int, crop: tuple[int, int]) -> dict:
    """A PSPNet (output stride 8) on a ResNetV1c-18 of ``width`` base channels, BN, 11 classes."""
    norm_cfg = dict(type='BN', requires_grad=True)
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                               seg_pad_val=IGNORE, size=crop),
        backbone=dict(type='ResNetV1c', depth=18, stem_channels=width, base_channels=width,
                      num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
                      strides=(1, 2, 1, 1), norm_cfg=norm_cfg, norm_eval=False,
                      style='pytorch', contract_dilation=True),
        decode_head=dict(type='PSPHead', in_channels=width * 8, in_index=3, channels=channels,
                         pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, num_classes=NUM_CLASSES,
                         norm_cfg=norm_cfg, align_corners=False, ignore_index=IGNORE,
                         loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                          loss_weight=1.0)),
        auxiliary_head=dict(type='FCNHead', in_channels=width * 4, in_index=2,
                            channels=channels // 2, num_convs=1, concat_input=False,
                            dropout_ratio=0.1, num_classes=NUM_CLASSES, norm_cfg=norm_cfg,
                            align_corners=False, ignore_index=IGNORE,
                            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                             loss_weight=0.4)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))


def camvid_config(model: dict, data_root: str, work_dir: str, iters: int, batch_size: int,
                  crop: tuple[int, int], lr: float, name: str, seed: int = 0,
                  **runtime) -> dict:
    """A full mmseg config: CamVid at 240x180 (half size), random crops, AdamW + poly.

    Validation (the learning curve) runs on the 74 training images; the test, whose numbers are
    reported, on the 26 val images.
    """
    scale = (240, 180)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomResize', scale=scale, ratio_range=(0.75, 1.5), keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs')]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')]

    def loader(split):
        return dict(batch_size=1, num_workers=0, persistent_workers=False,
                    sampler=dict(type='DefaultSampler', shuffle=False),
                    dataset=dict(type='CamVidDataset', data_root=data_root,
                                 ann_file=f'{split}.txt', pipeline=test_pipeline))

    evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
    return dict(
        default_scope='mmseg',
        custom_imports=dict(imports=['mmdistill'], allow_failed_imports=False),
        model=model, work_dir=work_dir,
        train_dataloader=dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              dataset=dict(type='CamVidDataset', data_root=data_root,
                                           ann_file='train.txt', pipeline=train_pipeline)),
        val_dataloader=loader('train'), test_dataloader=loader('val'),
        val_evaluator=evaluator, test_evaluator=evaluator,
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=lr, weight_decay=1e-4)),
        param_scheduler=[dict(type='PolyLR', eta_min=lr / 100, power=0.9, begin=0, end=iters,
                              by_epoch=False)],
        **iter_runtime(iters, name, seed=seed, **runtime))
