"""CamVid check: CWD on the logits of a small PSPNet, on real pixels, from scratch.

Trains a PSPNet teacher (ResNetV1c-18, ``--teacher-width`` base channels) on the CamVid subset in
``../shared/data/camvid_mini`` (74 train images), then a narrower PSPNet student for the same
iterations twice or three times with the same seed: alone, with CWD on the segmentation logits
(``decode_head.conv_seg``) from the teacher, and with ``--mgd`` also with MGD on the last backbone
stage. Every model is evaluated on the 26 val images (mIoU, aAcc, mAcc of mmseg's IoUMetric) and
a markdown table is printed. No pretrained weights, no download.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python3 tools/analysis/camvid_cwd.py \\
        [--teacher-iters 600] [--student-iters 300] [--tau 1 --cwd-weight 5] [--mgd]
"""
from __future__ import annotations

import argparse
import copy
import os.path as osp
import time

from mmdistill.demo import iter_runtime, train_and_test

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA_ROOT = osp.join(osp.dirname(ROOT), 'shared', 'data', 'camvid_mini')
NUM_CLASSES, IGNORE = 11, 11  # CamVid 11 classes; label 11 is void
METRICS = ('mIoU', 'aAcc', 'mAcc')


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
                  crop: tuple[int, int], lr: float, name: str, seed: int = 0) -> dict:
    """A full mmengine config: CamVid at 240x180 (half size), random crops, AdamW + poly."""
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
    val_loader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(type='CamVidDataset', data_root=data_root, ann_file='val.txt',
                                   pipeline=test_pipeline))
    evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
    return dict(
        default_scope='mmseg',
        custom_imports=dict(imports=['mmdistill'], allow_failed_imports=False),
        model=model, work_dir=work_dir,
        train_dataloader=dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              dataset=dict(type='CamVidDataset', data_root=data_root,
                                           ann_file='train.txt', pipeline=train_pipeline)),
        val_dataloader=val_loader, test_dataloader=val_loader,
        val_evaluator=evaluator, test_evaluator=evaluator,
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=lr, weight_decay=1e-4)),
        param_scheduler=[dict(type='PolyLR', eta_min=lr / 100, power=0.9, begin=0, end=iters,
                              by_epoch=False)],
        **iter_runtime(iters, name, seed=seed))


def format_table(rows: list[tuple[str, dict]]) -> str:
    lines = [f'| {"model":<40} | {"mIoU":>5} | {"aAcc":>5} | {"mAcc":>5} |',
             f'|{"-" * 42}|{"-" * 6}:|{"-" * 6}:|{"-" * 6}:|']
    for name, m in rows:
        lines.append(f'| {name:<40} | ' + ' | '.join(f'{m[k]:>5.2f}' for k in METRICS) + ' |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/camvid_cwd')
    parser.add_argument('--data-root', default=DATA_ROOT)
    parser.add_argument('--teacher-iters', type=int, default=600)
    parser.add_argument('--student-iters', type=int, default=300)
    parser.add_argument('--teacher-width', type=int, default=32)
    parser.add_argument('--student-width', type=int, default=16)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--crop', type=int, nargs=2, default=(128, 128), metavar=('H', 'W'))
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--seed', type=int, default=0, help='the same seed for every run')
    parser.add_argument('--tau', type=float, default=1.0, help='CWD temperature (mmrazor: 1)')
    parser.add_argument('--cwd-weight', type=float, default=5.0, help='CWD weight (mmrazor: 5)')
    parser.add_argument('--mgd', action='store_true',
                        help='add a row: CWD + MGD on backbone[3] (alpha 2e-5, lambda 0.75)')
    parser.add_argument('--teacher-ckpt',
                        help='a weights-only teacher checkpoint to reuse (e.g. '
                             '<work-dir>/teacher/weights.pth): no teacher training')
    args = parser.parse_args()
    start = time.time()
    crop = tuple(args.crop)
    tw, sw = args.teacher_width, args.student_width
    teacher_model, student_model = pspnet(tw, tw * 2, crop), pspnet(sw, sw * 2, crop)

    def run(model, sub, iters, label):
        cfg = camvid_config(model, args.data_root, osp.join(args.work_dir, sub), iters,
                            args.batch_size, crop, args.lr, sub, args.seed)
        return train_and_test(cfg, label, metric='mIoU', defaults={})

    t_label = f'teacher PSPNet R18-w{tw} ({args.teacher_iters} it)'
    s_label = f'PSPNet R18-w{sw} ({args.student_iters} it)'
    if args.teacher_ckpt:  # evaluate the given teacher, no training
        from mmengine.config import Config

        from mmdistill.engine import DistillRunner
        t_label = f'teacher PSPNet R18-w{tw} (loaded)'
        cfg = camvid_config(teacher_model, args.data_root, osp.join(args.work_dir, 'teacher'),
                            1, args.batch_size, crop, args.lr, 'teacher', args.seed)
        cfg['load_from'] = args.teacher_ckpt
        teacher = dict(DistillRunner.from_cfg(Config(cfg)).test(), ckpt=args.teacher_ckpt)
    else:
        teacher = run(teacher_model, 'teacher', args.teacher_iters, t_label)
    rows = [(t_label, teacher)]
    rows.append((f'student {s_label} alone',
                 run(student_model, 'student', args.student_iters, 'student alone')))
    cwd = dict(type='CWDLoss', student='decode_head.conv_seg', teacher='decode_head.conv_seg',
               tau=args.tau, loss_weight=args.cwd_weight)
    variants = [('cwd', dict(cwd=cwd), f'+ CWD logits (tau {args.tau:g}, w {args.cwd_weight:g})')]
    if args.mgd:
        mgd = dict(type='MGDLoss', student='backbone[3]', teacher='backbone[3]',
                   student_channels=sw * 8, teacher_channels=tw * 8, alpha_mgd=2e-5,
                   lambda_mgd=0.75)
        variants.append(('cwd_mgd', dict(cwd=cwd, mgd=mgd), '+ CWD + MGD backbone[3]'))
    for sub, losses, label in variants:
        distill = dict(type='DistillSegmentor', student=copy.deepcopy(student_model),
                       teacher=dict(config=dict(model=teacher_model),
                                    checkpoint=teacher['ckpt']),
                       distill_losses=losses, dry_run_shape=crop)
        rows.append((f'student {label}', run(distill, sub, args.student_iters, label)))
    print(f'\nCamVid mini val (26 images, 240x180), trained from scratch on 74 images, '
          f'{crop[0]}x{crop[1]} crops, batch {args.batch_size}, seed {args.seed}:')
    print(format_table(rows))
    print(f'\nwall time {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
