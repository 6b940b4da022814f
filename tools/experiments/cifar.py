"""Classification on the CIFAR-10 subset (``../shared/data/cifar10``): CIFAR ResNets, config."""
from __future__ import annotations

import os
import os.path as osp

from .runtime import iter_runtime

NUM_CLASSES = 10
METRIC = 'accuracy/top1'
# CIFAR-10 channel statistics (RGB, 0-255); images load as BGR, the preprocessor flips them.
MEAN, STD = [125.307, 122.961, 113.8575], [51.5865, 50.847, 51.255]


def resnet_cifar(width: int, ce_weight: float = 1.0) -> dict:
    """An mmpretrain ResNet_CIFAR-18 (3x3 stem, no max-pool) of ``width`` base channels."""
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=NUM_CLASSES, mean=MEAN,
                               std=STD, to_rgb=True),
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=width, base_channels=width,
                      num_stages=4, out_indices=(3, ), style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=width * 8,
                  loss=dict(type='CrossEntropyLoss', loss_weight=ce_weight), topk=(1, )))


def _every_kth(data_root: str, split: str, n: int | None) -> list[int] | None:
    """Indices of a fixed subset of ``n`` images (every k-th, so that all classes are in it)."""
    if not n:
        return None
    total = sum(len(files) for _, _, files in os.walk(osp.join(data_root, split)))
    return list(range(0, total, max(total // n, 1)))[:n]


def eval_loader(data_root: str, split: str, n: int | None, pipeline: list) -> dict:
    """A validation/test dataloader of ``split`` (all images, or a fixed ``n`` of them)."""
    dataset = dict(type='CustomDataset', data_root=data_root, data_prefix=split,
                   pipeline=pipeline)
    indices = _every_kth(data_root, split, n)
    if indices is not None:
        dataset['indices'] = indices
    return dict(batch_size=256, num_workers=0, persistent_workers=False,
                sampler=dict(type='DefaultSampler', shuffle=False), dataset=dataset)


def classification_config(model: dict, data_root: str, work_dir: str, iters: int, name: str,
                          train_pipeline: list, sampler: dict, batch_size: int,
                          optim_wrapper: dict, param_scheduler: list, seed: int = 0,
                          test_subset: int | None = None, curve_subset: int = 2000,
                          **runtime) -> dict:
    """A full mmpretrain config on the CIFAR-10 folders of ``data_root``: training on ``train``
    with ``train_pipeline``; validation (the learning curve) on ``curve_subset`` training
    images; the test, whose numbers are reported, on the test images (all, or ``test_subset``
    of them), both without augmentation."""
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    evaluator = dict(type='Accuracy', topk=(1, ))
    return dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['mmdistill'], allow_failed_imports=False),
        model=model, work_dir=work_dir,
        train_dataloader=dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                              sampler=sampler,
                              dataset=dict(type='CustomDataset', data_root=data_root,
                                           data_prefix='train', pipeline=train_pipeline)),
        val_dataloader=eval_loader(data_root, 'train', curve_subset, test_pipeline),
        test_dataloader=eval_loader(data_root, 'test', test_subset, test_pipeline),
        val_evaluator=evaluator, test_evaluator=evaluator,
        optim_wrapper=optim_wrapper, param_scheduler=param_scheduler,
        **iter_runtime(iters, name, seed=seed, **runtime))


def cifar_config(model: dict, data_root: str, work_dir: str, iters: int, batch_size: int,
                 lr: float, name: str, seed: int = 0, test_subset: int | None = None,
                 curve_subset: int = 2000, **runtime) -> dict:
    """:func:`classification_config` with RandomCrop(pad 4) + flip, SGD + cosine."""
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomCrop', crop_size=32, padding=4),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs')]
    warmup = max(iters // 20, 1)
    return classification_config(
        model, data_root, work_dir, iters, name, train_pipeline,
        dict(type='InfiniteSampler', shuffle=True), batch_size,
        dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)),
        [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup),
         dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=iters,
              T_max=iters - warmup, eta_min=0.0)],
        seed, test_subset, curve_subset, **runtime)
