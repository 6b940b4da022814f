"""The embedded demo: FGD on a synthetic shapes set, no download, no data to prepare.

It writes a small COCO-format set (:func:`mmdistill.datasets.make_shapes_coco`), trains a
RetinaNet teacher, then trains a narrower RetinaNet student twice for the same iterations, alone
and with FGD from the teacher, evaluates all three with mmdet's COCO metric and prints a table.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os.path as osp
import time

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .datasets import SHAPE_CLASSES, make_shapes_coco


@HOOKS.register_module()
class DemoProgressHook(Hook):
    """Print one short progress line every ``interval`` training iterations."""

    def __init__(self, name: str, interval: int = 50) -> None:
        self.name, self.interval = name, interval
        self._start = time.time()

    def before_train(self, runner) -> None:
        self._start = time.time()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        it = runner.iter + 1
        if it % self.interval == 0 or it == runner.max_iters:
            parts = ' '.join(f'{k} {float(v.detach()):.3f}' for k, v in (outputs or {}).items())
            print(f'[demo]   {self.name} iter {it}/{runner.max_iters}  {parts}  '
                  f'({time.time() - self._start:.0f} s)', flush=True)


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


def _config(model: dict, data_root: str, work_dir: str, iters: int, batch_size: int,
            name: str) -> dict:
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

    val_loader = dict(batch_size=8, num_workers=0, drop_last=False,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(dataset('val', test_pipeline), test_mode=True))
    return dict(
        default_scope='mmdet',
        custom_imports=dict(imports=['mmdistill'], allow_failed_imports=False),
        model=model, work_dir=work_dir,
        train_dataloader=dict(batch_size=batch_size, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              batch_sampler=dict(type='AspectRatioBatchSampler'),
                              dataset=dataset('train', train_pipeline)),
        val_dataloader=val_loader, test_dataloader=val_loader,
        val_evaluator=dict(type='CocoMetric', ann_file=osp.join(data_root, 'annotations/val.json'),
                           metric='bbox'),
        test_evaluator=dict(type='CocoMetric',
                            ann_file=osp.join(data_root, 'annotations/val.json'), metric='bbox'),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
                           clip_grad=dict(max_norm=35, norm_type=2)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=iters,
                 T_max=iters - warmup, eta_min=1e-5)],
        **iter_runtime(iters, name))


def iter_runtime(iters: int, name: str, seed: int = 0) -> dict:
    """The runtime part of a short iteration-based CPU run: loops, hooks (a progress line every
    tenth of the run, one checkpoint at the end), env, quiet logging."""
    interval = max(iters // 10, 1)
    return dict(
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1),
        val_cfg=dict(type='ValLoop'), test_cfg=dict(type='TestLoop'),
        default_hooks=dict(timer=dict(type='IterTimerHook'),
                           logger=dict(type='LoggerHook', interval=interval),
                           param_scheduler=dict(type='ParamSchedulerHook'),
                           checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                           interval=iters, max_keep_ckpts=1),
                           sampler_seed=dict(type='DistSamplerSeedHook')),
        custom_hooks=[dict(type='DemoProgressHook', name=name, interval=interval)],
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
                     dist_cfg=dict(backend='gloo')),
        log_processor=dict(by_epoch=False), log_level='WARNING',
        randomness=dict(seed=seed), launcher='none')


COCO_ZERO = {k: 0.0 for k in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')}


def train_and_test(cfg: dict, name: str, metric: str = 'coco/bbox_mAP',
                   defaults: dict | None = None) -> dict:
    """Train ``cfg`` with :class:`DistillRunner`, test it, save its weights only.

    Returns the test metrics (``defaults`` first: an undertrained detector may detect nothing
    above the score threshold, so its COCO metric returns nothing) and ``ckpt``, the path of
    ``{'state_dict': ...}`` written to ``<work_dir>/weights.pth``: what a teacher is loaded from.
    ``metric`` is the one printed.
    """
    from mmengine.config import Config

    from .engine import DistillRunner
    start = time.time()
    print(f'[demo] training {name} for {cfg["train_cfg"]["max_iters"]} iterations ...',
          flush=True)
    runner = DistillRunner.from_cfg(Config(cfg))
    runner.train()
    metrics = dict(COCO_ZERO if defaults is None else defaults)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' summary
        metrics.update(runner.test())
    print(f'[demo] {name}: {metric} {metrics[metric]:.3f} '
          f'({time.time() - start:.0f} s)', flush=True)
    ckpt = osp.join(cfg['work_dir'], 'weights.pth')  # weights only, as a teacher is loaded
    torch.save({'state_dict': runner.model.state_dict()}, ckpt)
    return dict(metrics, ckpt=ckpt)


def run_demo(work_dir: str = 'work_dirs/demo', teacher_iters: int = 600,
             student_iters: int = 300, n_train: int = 400, n_val: int = 100,
             batch_size: int = 8) -> list[tuple[str, dict]]:
    """Run the whole demo; return ``[(row name, metrics)]`` in the printed order."""
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    data_root = osp.join(work_dir, 'data')
    print(f'[demo] writing the synthetic shapes set to {data_root} '
          f'({n_train} train / {n_val} val images, 128x128)', flush=True)
    make_shapes_coco(data_root, n_train, n_val, size=128, seed=0)
    n_cls = len(SHAPE_CLASSES)
    teacher_model = retinanet(32, 64, n_cls)
    student_model = retinanet(8, 64, n_cls)
    teacher = train_and_test(
        _config(teacher_model, data_root, osp.join(work_dir, 'teacher'), teacher_iters,
                batch_size, 'teacher'), 'teacher (RetinaNet R18-w32)')
    alone = train_and_test(
        _config(student_model, data_root, osp.join(work_dir, 'student'), student_iters,
                batch_size, 'student'), 'student alone (RetinaNet R18-w8)')
    distill = dict(
        type='DistillDetector', student=copy.deepcopy(student_model),
        teacher=dict(config=dict(model=teacher_model), checkpoint=teacher['ckpt']),
        init_student=True,  # FGD's recipe: inherit the teacher's FPN and head where shapes match
        distill_losses=dict(fgd=dict(type='FGDLoss', student='neck', teacher='neck',
                                     temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4,
                                     lambda_fgd=5e-6)))
    fgd = train_and_test(
        _config(distill, data_root, osp.join(work_dir, 'student_fgd'), student_iters,
                batch_size, 'student+FGD'), 'student + FGD')
    rows = [('teacher', teacher), ('student alone', alone), ('student + FGD', fgd)]
    print(format_table(rows, teacher_iters, student_iters))
    return rows


def format_table(rows: list[tuple[str, dict]], teacher_iters: int, student_iters: int) -> str:
    lines = ['', f'Synthetic shapes, COCO bbox metrics (teacher {teacher_iters} iters, '
             f'students {student_iters} iters each; FGD with its recipe\'s init_student)',
             f'| {"model":<14} | {"mAP":>6} | {"mAP50":>6} | {"mAP75":>6} |',
             f'|{"-" * 16}|{"-" * 8}|{"-" * 8}|{"-" * 8}|']
    for name, m in rows:
        lines.append(f'| {name:<14} | {m["coco/bbox_mAP"]:>6.3f} | {m["coco/bbox_mAP_50"]:>6.3f} '
                     f'| {m["coco/bbox_mAP_75"]:>6.3f} |')
    return '\n'.join(lines)
