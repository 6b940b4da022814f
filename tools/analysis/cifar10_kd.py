"""CIFAR-10 check: logit distillation of a small ResNet, on real images, from scratch, on the CPU.

Trains a ResNet_CIFAR-18 teacher (``--teacher-width`` base channels) on the CIFAR-10 images in
``../shared/data/cifar10`` (``train/<class>/*.jpg``, read by mmpretrain's ``CustomDataset``),
then a narrower ResNet_CIFAR-18 student for the same iterations, seed, data order and initial
weights: alone, and with KD, KD + logit standardization, DKD and SD-KD (SDD) from the teacher,
each with its official CIFAR-100 hyperparameters. Every model is evaluated on the test images
(``test/<class>/*.jpg``; all of them unless ``--test-subset``) and a markdown table is printed.
No pretrained weights, no download.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python3 tools/analysis/cifar10_kd.py \\
        [--teacher-iters 1000] [--student-iters 500] [--methods kd kd_ls dkd sdd]
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import time

import torch

from mmdistill.demo import iter_runtime, train_and_test

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA_ROOT = osp.join(osp.dirname(ROOT), 'shared', 'data', 'cifar10')
NUM_CLASSES = 10
METRIC = 'accuracy/top1'
# CIFAR-10 channel statistics (RGB, 0-255); images load as BGR, the preprocessor flips them.
MEAN, STD = [125.307, 122.961, 113.8575], [51.5865, 50.847, 51.255]


def resnet_cifar(width: int, ce_weight: float = 1.0, init_ckpt: str | None = None) -> dict:
    """An mmpretrain ResNet_CIFAR-18 (3x3 stem, no max-pool) of ``width`` base channels."""
    model = dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=NUM_CLASSES, mean=MEAN,
                               std=STD, to_rgb=True),
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=width, base_channels=width,
                      num_stages=4,
                      out_indices=(3, ), style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=width * 8,
                  loss=dict(type='CrossEntropyLoss', loss_weight=ce_weight), topk=(1, )))
    if init_ckpt is not None:  # every student run starts from the same weights
        model['init_cfg'] = dict(type='Pretrained', checkpoint=init_ckpt)
    return model


def cifar_config(model: dict, data_root: str, work_dir: str, iters: int, batch_size: int,
                 lr: float, name: str, test_subset: int | None = None) -> dict:
    """A full mmengine config: 32x32 images, RandomCrop(pad 4) + flip, SGD + cosine."""
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomCrop', crop_size=32, padding=4),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs')]
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    test_set = dict(type='CustomDataset', data_root=data_root, data_prefix='test',
                    pipeline=test_pipeline)
    if test_subset:  # a fixed subset: every k-th image, so that all classes are in it
        total = sum(len(files) for _, _, files in os.walk(osp.join(data_root, 'test')))
        test_set['indices'] = list(range(0, total, max(total // test_subset, 1)))[:test_subset]
    test_loader = dict(batch_size=256, num_workers=0, persistent_workers=False,
                       sampler=dict(type='DefaultSampler', shuffle=False), dataset=test_set)
    evaluator = dict(type='Accuracy', topk=(1, ))
    warmup = max(iters // 20, 1)
    return dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['mmdistill'], allow_failed_imports=False),
        model=model, work_dir=work_dir,
        train_dataloader=dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              dataset=dict(type='CustomDataset', data_root=data_root,
                                           data_prefix='train', pipeline=train_pipeline)),
        val_dataloader=test_loader, test_dataloader=test_loader,
        val_evaluator=evaluator, test_evaluator=evaluator,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9, weight_decay=5e-4,
                                          nesterov=True)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=iters,
                 T_max=iters - warmup, eta_min=0.0)],
        **iter_runtime(iters, name, seed=0))


def distill_variants(student_iters: int) -> dict[str, tuple[str, float, dict]]:
    """``{key: (row label, student CE weight, distill_losses)}``, official CIFAR-100 recipes.

    DKD's warmup is 20 of 240 epochs in the official recipe; here it is the same fraction of the
    iterations (``warmup_by='iter'``).
    """
    dkd_warmup = max(round(student_iters * 20 / 240), 1)
    return {
        'kd': ('+ KD (T 4; CE 0.1, KD 0.9)', 0.1, dict(kd=dict(
            type='KDLoss', student='head', teacher='head', temperature=4.0, loss_weight=0.9))),
        'kd_ls': ('+ KD + LS (T 2; CE 0.1, KD 9)', 0.1, dict(kd=dict(
            type='KDLoss', student='head', teacher='head', temperature=2.0, logit_stand=True,
            loss_weight=9.0))),
        'dkd': (f'+ DKD (a 1, b 8, T 4, warmup {dkd_warmup} it; CE 1)', 1.0, dict(dkd=dict(
            type='DKDLoss', student='head', teacher='head', alpha=1.0, beta=8.0,
            temperature=4.0, warmup=dkd_warmup, warmup_by='iter'))),
        'sdd': ('+ SD-KD (T 4, scales 1/2/4; CE 0.1, KD 0.9)', 0.1, dict(sdd=dict(
            type='SDDLoss', student='backbone[-1]', teacher='backbone[-1]', temperature=4.0,
            scales=(1, 2, 4), loss_weight=0.9, classifier='head.fc'))),
    }


def save_student_init(model: dict, path: str, seed: int = 0) -> str:
    """Build and initialise the student once (seeded) and save its weights."""
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(seed)
    student = MODELS.build(model)
    student.init_weights()
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save({'state_dict': student.state_dict()}, path)
    return path


def format_table(rows: list[tuple[str, dict]]) -> str:
    lines = [f'| {"model":<56} | {"top-1 (%)":>9} | {"time (s)":>8} |',
             f'|{"-" * 58}|{"-" * 10}:|{"-" * 9}:|']
    for name, m in rows:
        lines.append(f'| {name:<56} | {m[METRIC]:>9.2f} | {m["seconds"]:>8.0f} |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/cifar10_kd')
    parser.add_argument('--data-root', default=DATA_ROOT)
    parser.add_argument('--teacher-iters', type=int, default=1000)
    parser.add_argument('--student-iters', type=int, default=500)
    parser.add_argument('--teacher-width', type=int, default=16)
    parser.add_argument('--student-width', type=int, default=8)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--lr', type=float, default=0.1)
    parser.add_argument('--test-subset', type=int, default=None,
                        help='evaluate on N test images only (every k-th; default: all)')
    parser.add_argument('--methods', nargs='+', default=['kd', 'kd_ls', 'dkd', 'sdd'],
                        choices=['kd', 'kd_ls', 'dkd', 'sdd'])
    parser.add_argument('--teacher-ckpt',
                        help='a weights-only teacher checkpoint to reuse (e.g. '
                             '<work-dir>/teacher/weights.pth): no teacher training')
    args = parser.parse_args()
    start = time.time()
    tw, sw = args.teacher_width, args.student_width
    teacher_model = resnet_cifar(tw)
    init = save_student_init(resnet_cifar(sw), osp.join(args.work_dir, 'student_init.pth'))

    def run(model, sub, iters, label):
        cfg = cifar_config(model, args.data_root, osp.join(args.work_dir, sub), iters,
                           args.batch_size, args.lr, sub, args.test_subset)
        t0 = time.time()
        out = train_and_test(cfg, label, metric=METRIC, defaults={})
        return dict(out, seconds=time.time() - t0)

    t_label = f'teacher ResNet_CIFAR-18 w{tw} ({args.teacher_iters} it)'
    if args.teacher_ckpt:  # evaluate the given teacher, no training
        from mmengine.config import Config

        from mmdistill.engine import DistillRunner
        t_label = f'teacher ResNet_CIFAR-18 w{tw} (loaded)'
        cfg = cifar_config(teacher_model, args.data_root, osp.join(args.work_dir, 'teacher'),
                           1, args.batch_size, args.lr, 'teacher', args.test_subset)
        cfg['load_from'] = args.teacher_ckpt
        t0 = time.time()
        teacher = dict(DistillRunner.from_cfg(Config(cfg)).test(), ckpt=args.teacher_ckpt,
                       seconds=time.time() - t0)
    else:
        teacher = run(teacher_model, 'teacher', args.teacher_iters, t_label)
    s_name = f'ResNet_CIFAR-18 w{sw} ({args.student_iters} it)'
    rows = [(t_label, teacher),
            (f'student {s_name} alone (CE 1)',
             run(resnet_cifar(sw, 1.0, init), 'student', args.student_iters, 'student alone'))]
    variants = distill_variants(args.student_iters)
    for key in args.methods:
        label, ce_weight, losses = variants[key]
        distill = dict(type='DistillClassifier', student=resnet_cifar(sw, ce_weight, init),
                       teacher=dict(config=dict(model=teacher_model),
                                    checkpoint=teacher['ckpt']),
                       distill_losses=copy.deepcopy(losses), dry_run_shape=(32, 32))
        rows.append((f'student {label}', run(distill, f'student_{key}', args.student_iters,
                                             label)))
    n_test = args.test_subset or 'all 10000'
    print(f'\nCIFAR-10 test top-1 ({n_test} test images), trained from scratch on the 10000 '
          f'train images, batch {args.batch_size}, SGD lr {args.lr} cosine, seed 0, '
          f'{torch.get_num_threads()} thread(s):')
    print(format_table(rows))
    print(f'\nwall time {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
