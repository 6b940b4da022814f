# A tiny CWD (+ MGD) run on the real CamVid subset in ../shared/data/camvid_mini (tests only).
# Schedule and runtime come from mmseg's PSPNet R18 config; models and data are small.
_base_ = ['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

data_root = '{{fileDirname}}/../../../shared/data/camvid_mini/'
crop_size = (128, 128)


def _pspnet(width, channels):
    norm_cfg = dict(type='BN', requires_grad=True)
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                               seg_pad_val=11, size=crop_size),
        backbone=dict(type='ResNetV1c', depth=18, stem_channels=width, base_channels=width,
                      num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
                      strides=(1, 2, 1, 1), norm_cfg=norm_cfg, norm_eval=False,
                      style='pytorch', contract_dilation=True),
        decode_head=dict(type='PSPHead', in_channels=width * 8, in_index=3, channels=channels,
                         pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, num_classes=11,
                         norm_cfg=norm_cfg, align_corners=False, ignore_index=11,
                         loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                          loss_weight=1.0)),
        auxiliary_head=dict(type='FCNHead', in_channels=width * 4, in_index=2,
                            channels=channels // 2, num_convs=1, concat_input=False,
                            dropout_ratio=0.1, num_classes=11, norm_cfg=norm_cfg,
                            align_corners=False, ignore_index=11,
                            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                             loss_weight=0.4)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))


model = dict(
    _delete_=True,
    type='DistillSegmentor',
    student=_pspnet(16, 32),
    teacher=dict(config=dict(model=_pspnet(32, 64)), checkpoint='teacher.pth'),
    distill_losses=dict(
        cwd=dict(type='CWDLoss', student='decode_head.conv_seg', teacher='decode_head.conv_seg',
                 tau=1.0, loss_weight=5.0),
        mgd=dict(type='MGDLoss', student='backbone[3]', teacher='backbone[3]',
                 student_channels=128, teacher_channels=256, alpha_mgd=2e-5, lambda_mgd=0.75)))

dataset_type = 'CamVidDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(240, 180), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(240, 180), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(_delete_=True, type=dataset_type, data_root=data_root, ann_file='train.txt',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type=dataset_type, data_root=data_root, ann_file='val.txt',
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], ignore_index=11)
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=6, val_interval=1000)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=6, by_epoch=False)]
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=3), logger=dict(interval=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
