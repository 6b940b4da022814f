# KD + DKD + CTKD on the real CIFAR-10 subset in ../shared/data/cifar10 (tests only): tiny
# GroupNorm ResNets (per-sample normalisation, so a 2-process run equals one process with the
# same global batch) and a deterministic pipeline (no random augmentation).
_base_ = ['mmpretrain::resnet/resnet18_8xb16_cifar10.py']
custom_imports = dict(imports=['mmdistill'], allow_failed_imports=False)
runner_type = 'DistillRunner'  # exact, fast resume (and CPU launch) under any library's train.py

data_root = '{{fileDirname}}/../../../shared/data/cifar10/'


def _resnet(width):
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=10,
                               mean=[125.307, 122.961, 113.8575], std=[51.5865, 50.847, 51.255],
                               to_rgb=True),
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=width, base_channels=width,
                      num_stages=4, out_indices=(3, ), style='pytorch',
                      norm_cfg=dict(type='GN', num_groups=4, requires_grad=True)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=width * 8,
                  loss=dict(type='CrossEntropyLoss', loss_weight=0.1)))


model = dict(
    _delete_=True,
    type='DistillClassifier',
    student=_resnet(8),
    teacher=dict(config=dict(model=_resnet(16)), checkpoint='teacher.pth'),
    dry_run_shape=(32, 32),
    distill_losses=dict(
        kd=dict(type='KDLoss', student='head', teacher='head', temperature=4.0,
                loss_weight=0.9),
        dkd=dict(type='DKDLoss', student='head', teacher='head', alpha=1.0, beta=8.0,
                 temperature=4.0, weight_schedule=dict(warmup=20)),
        ctkd=dict(type='CTKDLoss', student='head', teacher='head', base='kd')))
custom_hooks = [dict(type='CTKDTemperatureHook', decay_loops=4, by_epoch=False),
                dict(type='DumpLossesHook', digest=True)]

pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(_delete_=True, type='InfiniteSampler', shuffle=True),
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='train', pipeline=pipeline))
val_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='test', pipeline=pipeline, indices=256))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=6, val_interval=1000)
val_cfg = dict()
test_cfg = dict()
# `end` explicit: the resume test stops a run early with train_cfg.max_iters=3, and mmengine
# defaults a scheduler's end to max_iters.
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[4], gamma=0.5, begin=0,
                        end=1000)]
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=3), logger=dict(interval=1))
log_processor = dict(by_epoch=False, window_size=1)
randomness = dict(seed=0)
