"""The distillation study: every method of a track against the right baseline, over seeds.

A *track* is a teacher, a student, a dataset and the methods to compare. Every seed starts all of
its runs from the same student weights (:func:`~mmdistill.experiments.runtime.save_init`) and the
same data order, so that runs of one seed differ only by their losses: the comparison is paired.
A method that inherits the teacher's weights (``init_student``) is compared with the student that
inherits them without any distillation loss ("inherit only"); the others with the student alone.
The teacher is trained once per track (seed 0). Hyperparameters are the methods' official ones;
nothing is chosen on the reported (test) split: the learning curve of the student alone, which
shows where it levels off, is measured on training images.
"""
from __future__ import annotations

import copy
import json
import math
import os
import os.path as osp
import statistics
from dataclasses import dataclass, field
from typing import Callable

from .runtime import save_init, train_and_test, with_init


@dataclass
class Method:
    """One row of a track: a label, its ``distill_losses`` and whether it inherits."""

    label: str
    losses: dict = field(default_factory=dict)
    inherit: bool = False
    student_kwargs: dict = field(default_factory=dict)

    @property
    def baseline(self) -> str | None:
        if not self.losses:
            return None if not self.inherit else 'alone'
        return 'inherit' if self.inherit else 'alone'


ALONE = Method('student alone')
INHERIT = Method('inherit only (init_student, no loss)', inherit=True)


@dataclass
class Track:
    """A teacher, a student, their data and configs, and the methods compared on them."""

    name: str
    title: str
    metric: str
    metric_label: str
    scale: float
    scope: str
    wrapper: str
    teacher: dict
    student: Callable[..., dict]
    config: Callable[..., dict]
    methods: dict[str, Method]
    teacher_iters: int
    student_iters: int
    dry_run_shape: tuple[int, int]
    setting: str
    defaults: dict = field(default_factory=dict)
    prepare: Callable[[str], None] | None = None
    #: 'fp32'; 'fast-teacher' (teacher_autocast='bf16', channels-last); 'amp' (that teacher and
    #: the student under BF16OptimWrapper, a distiller's student in channels-last)
    precision: str = 'fp32'


# ---------------------------------------------------------------------------------- tracks
def detection_track(work_dir: str, quick: bool = False) -> Track:
    """RetinaNet R18-w32 -> R18-w8 on the synthetic shapes set (written under ``work_dir``)."""
    from ..datasets import SHAPE_CLASSES, make_shapes_coco
    from .shapes import COCO_ZERO, METRIC, retinanet, shapes_config
    data_root = osp.join(work_dir, 'data')
    n_train, n_val = (16, 8) if quick else (400, 100)
    batch = 4 if quick else 8
    n_cls = len(SHAPE_CLASSES)
    neck = dict(student='neck', teacher='neck')
    losses = {  # the official RetinaNet settings of each method
        'fgd': dict(fgd=dict(type='FGDLoss', **neck, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4,
                             gamma_fgd=5e-4, lambda_fgd=5e-6)),
        'mgd': dict(mgd=dict(type='MGDLoss', **neck, alpha_mgd=2e-5, lambda_mgd=0.65)),
        'cwd': dict(cwd=dict(type='CWDLoss', **neck, tau=1.0, loss_weight=10.0)),
        'pkd': dict(pkd=dict(type='PKDLoss', **neck, loss_weight=6.0)),
    }
    methods = {'alone': ALONE, 'inherit': INHERIT}
    for key, loss in losses.items():
        methods[key] = Method(f'+ {key.upper()}', loss)
        methods[f'{key}_inherit'] = Method(f'+ {key.upper()} + inherit', loss, inherit=True)
    return Track(
        name='det', title='Detection: synthetic shapes (COCO bbox mAP, %)',
        metric=METRIC, metric_label='mAP', scale=100.0, scope='mmdet', wrapper='DistillDetector',
        teacher=retinanet(32, 64, n_cls), student=lambda: retinanet(8, 64, n_cls),
        config=lambda model, wd, iters, name, seed, **rt: shapes_config(
            model, data_root, wd, iters, batch, name, seed, **rt),
        methods=methods, teacher_iters=4 if quick else 600, student_iters=3 if quick else 500,
        dry_run_shape=(128, 128), defaults=COCO_ZERO,
        setting=(f'RetinaNet R18-w32 teacher -> R18-w8 student (FPN 64), {n_train} train / '
                 f'{n_val} val images 128x128, batch {batch}, AdamW 1e-3, cosine; '
                 'mAP on the val images'),
        prepare=lambda _: make_shapes_coco(data_root, n_train, n_val, size=128, seed=0))


def segmentation_track(data_root: str, quick: bool = False) -> Track:
    """PSPNet R18-w32 -> R18-w16 on CamVid mini (``data_root``)."""
    from .camvid import METRIC, pspnet, camvid_config
    crop = (64, 64) if quick else (128, 128)
    batch = 2 if quick else 8
    tw, sw = (8, 4) if quick else (32, 16)
    logits = dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg')
    c4 = dict(student='backbone[3]', teacher='backbone[3]')
    methods = {
        'alone': ALONE,
        'cwd': Method('+ CWD logits (tau 1, w 5)', dict(cwd=dict(
            type='CWDLoss', **logits, tau=1.0, loss_weight=5.0))),
        'mgd': Method('+ MGD backbone[3] (alpha 2e-5, lambda 0.75)', dict(mgd=dict(
            type='MGDLoss', **c4, student_channels=sw * 8, teacher_channels=tw * 8,
            alpha_mgd=2e-5, lambda_mgd=0.75))),
    }
    return Track(
        name='seg', title='Segmentation: CamVid mini (val mIoU, %)',
        metric=METRIC, metric_label='mIoU', scale=1.0, scope='mmseg', wrapper='DistillSegmentor',
        teacher=pspnet(tw, tw * 2, crop), student=lambda: pspnet(sw, sw * 2, crop),
        config=lambda model, wd, iters, name, seed, **rt: camvid_config(
            model, data_root, wd, iters, batch, crop, 2e-3, name, seed, **rt),
        methods=methods, teacher_iters=2 if quick else 600, student_iters=2 if quick else 400,
        dry_run_shape=crop,
        setting=(f'PSPNet R18-w{tw} teacher -> R18-w{sw} student, 74 train images at 240x180, '
                 f'{crop[0]}x{crop[1]} crops, batch {batch}, AdamW 2e-3, poly; mIoU on the 26 '
                 'val images'))


def classification_track(data_root: str, quick: bool = False) -> Track:
    """ResNet_CIFAR-18 w16 -> w8 on the CIFAR-10 subset (``data_root``)."""
    from .cifar import METRIC, cifar_config, resnet_cifar
    batch = 16 if quick else 128
    iters = 3 if quick else 400
    head = dict(student='head', teacher='head')
    dkd_warmup = max(round(iters * 20 / 240), 1)  # 20 of 240 epochs in the official recipe
    ce01 = dict(ce_weight=0.1)
    methods = {
        'alone': ALONE,
        'kd': Method('+ KD (T 4; CE 0.1, KD 0.9)', dict(kd=dict(
            type='KDLoss', **head, temperature=4.0, loss_weight=0.9)), student_kwargs=ce01),
        'kd_ls': Method('+ KD + LS (T 2; CE 0.1, KD 9)', dict(kd=dict(
            type='KDLoss', **head, temperature=2.0, logit_stand=True, loss_weight=9.0)),
            student_kwargs=ce01),
        'dkd': Method(f'+ DKD (1, 8, T 4, warm-up {dkd_warmup} it)', dict(dkd=dict(
            type='DKDLoss', **head, alpha=1.0, beta=8.0, temperature=4.0, warmup=dkd_warmup,
            warmup_by='iter'))),
        'sdd': Method('+ SD-KD (T 4, scales 1/2/4; CE 0.1, KD 0.9)', dict(sdd=dict(
            type='SDDLoss', student='backbone[-1]', teacher='backbone[-1]', temperature=4.0,
            scales=(1, 2, 4), loss_weight=0.9, classifier='head.fc')), student_kwargs=ce01),
    }
    test_subset = 200 if quick else None
    return Track(
        name='cls', title='Classification: CIFAR-10 subset (test top-1, %)',
        metric=METRIC, metric_label='top-1', scale=1.0, scope='mmpretrain',
        wrapper='DistillClassifier', teacher=resnet_cifar(16),
        student=lambda ce_weight=1.0: resnet_cifar(8, ce_weight),
        config=lambda model, wd, iters, name, seed, **rt: cifar_config(
            model, data_root, wd, iters, batch, 0.1, name, seed, test_subset=test_subset,
            curve_subset=200 if quick else 2000, **rt),
        methods=methods, teacher_iters=3 if quick else 800, student_iters=iters,
        dry_run_shape=(32, 32),
        setting=(f'ResNet_CIFAR-18 w16 teacher -> w8 student, 10,000 train images, batch {batch}, '
                 'SGD 0.1 nesterov, cosine; top-1 on '
                 + ('200' if quick else 'all 10,000') + ' test images'))


def tutorial_track(data_root: str, quick: bool = False) -> Track:
    """The PyTorch KD tutorial: DeepNN -> LightNN on the CIFAR-10 subset, its recipe
    (:mod:`~mmdistill.experiments.kd_tutorial`); 10 epochs of the 10,000 training images."""
    from .kd_tutorial import tutorial_config, tutorial_net
    batch = 16 if quick else 128
    iters = 3 if quick else 10 * math.ceil(10000 / batch)  # 10 epochs (last batch partial)
    ce = dict(ce_weight=0.75)
    methods = {
        'alone': ALONE,
        'kd': Method('+ KD (T 2; CE 0.75, KD 0.25)', dict(kd=dict(
            type='KDLoss', student='head', teacher='head', temperature=2.0,
            loss_weight=0.25)), student_kwargs=ce),
        'cosine': Method('+ cosine, flattened features (CE 0.75, cos 0.25)', dict(cosine=dict(
            type='CosineLoss', student='backbone.flatten', teacher='backbone.hidden',
            loss_weight=0.25)), student_kwargs=ce),
        'regressor': Method('+ regressor MSE, conv features (CE 0.75, MSE 0.25)', dict(
            regressor=dict(type='FitNetLoss', student='backbone.features',
                           teacher='backbone.features', student_channels=16,
                           teacher_channels=32, kernel_size=3, use_bn=False,
                           use_relu=False, loss_weight=0.25)), student_kwargs=ce),
    }
    return Track(
        name='tutorial', title='PyTorch KD tutorial: CIFAR-10 subset (test top-1, %)',
        metric='accuracy/top1', metric_label='top-1', scale=1.0, scope='mmpretrain',
        wrapper='DistillClassifier', teacher=tutorial_net('DeepNN'),
        student=lambda ce_weight=1.0: tutorial_net('LightNN', ce_weight),
        config=lambda model, wd, iters, name, seed, **rt: tutorial_config(
            model, data_root, wd, iters, name, seed, batch, test_subset=200 if quick else None,
            curve_subset=200 if quick else 2000, **rt),
        methods=methods, teacher_iters=iters, student_iters=iters, dry_run_shape=(32, 32),
        setting=(f'the tutorial\'s DeepNN teacher -> LightNN student, 10,000 train images (the '
                 f'tutorial: 50,000), batch {batch}, Adam 0.001, no augmentation; top-1 on '
                 + ('200' if quick else 'all 10,000') + ' test images'))


# ---------------------------------------------------------------------------------- runs
def _read_jsonl(path: str) -> list[dict]:
    if not osp.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _balance_summary(rows: list[dict]) -> dict:
    """Run means of the summed loss ratio, the summed gradient share and the mean cosine."""
    def mean_of(prefix):
        """Mean over the steps that measured it of the entries' summed ``prefix`` values."""
        per_row = [[v for k, v in r.items() if k.startswith(prefix) and k != 'grad_share_task']
                   for r in rows]
        values = [sum(vs) for vs in per_row if vs]
        values = [v for v in values if not math.isnan(v)]
        return statistics.fmean(values) if values else None

    cos = [v for r in rows for k, v in r.items() if k.startswith('grad_cos_')
           and not math.isnan(v)]
    return dict(ratio=mean_of('ratio_'), grad_share=mean_of('grad_share_'),
                grad_cos=statistics.fmean(cos) if cos else None)


def loss_curves(rows: list[dict], points: int = 60) -> dict[str, list]:
    """Per loss name (``loss`` is the total): ``[[iteration, mean over its bin], ...]``, at most
    ``points`` bins of consecutive iterations."""
    if not rows:
        return {}
    size = max(len(rows) // points, 1)
    names = [k for k in rows[0] if k.startswith('loss')]
    curves = {}
    for name in names:
        curves[name] = [[chunk[-1]['iter'], statistics.fmean(r[name] for r in chunk)]
                        for chunk in (rows[i:i + size] for i in range(0, len(rows), size))]
    return curves


def run_one(track: Track, key: str, seed: int, work_dir: str, init_ckpt: str,
            teacher_ckpt: str, curve: bool = False, reuse: bool = False) -> dict:
    """Train and test one (method, seed) run; return its metric, time, curve and balance."""
    method = track.methods[key]
    changed = track.precision == 'amp' or (track.precision == 'fast-teacher' and method.losses)
    tag = f'_{track.precision}' if changed else ''  # runs the precision leaves alone are shared
    run_dir = osp.join(work_dir, f'{key}{tag}_seed{seed}')
    result_file = osp.join(run_dir, 'result.json')
    if reuse and osp.exists(result_file):
        with open(result_file) as f:
            return json.load(f)
    for stale in ('val_curve.jsonl', 'distill_balance.jsonl', 'losses_rank0.jsonl'):
        if osp.exists(osp.join(run_dir, stale)):
            os.remove(osp.join(run_dir, stale))
    student = with_init(track.student(**method.student_kwargs), init_ckpt)
    hooks = [dict(type='DumpLossesHook')]
    if key == 'alone':
        model = student
    else:
        model = dict(type=track.wrapper, student=student,
                     teacher=dict(config=dict(model=track.teacher), checkpoint=teacher_ckpt),
                     init_student=method.inherit, distill_losses=copy.deepcopy(method.losses),
                     dry_run_shape=track.dry_run_shape)
        if track.precision in ('fast-teacher', 'amp'):
            model['teacher_autocast'] = 'bf16'
        if track.precision == 'amp':
            model['student_channels_last'] = True
        if method.losses:
            hooks.append(dict(type='DistillBalanceHook', interval=1,
                              grad_interval=max(track.student_iters // 10, 1)))
    iters = track.student_iters
    cfg = track.config(model, run_dir, iters, f'{track.name}/{key}/seed{seed}', seed,
                       val_interval=max(iters // 6, 1) if curve else None, extra_hooks=hooks)
    if track.precision == 'amp':
        cfg['optim_wrapper']['type'] = 'BF16OptimWrapper'
    elif track.precision not in ('fp32', 'fast-teacher'):
        raise ValueError(f'precision must be fp32, fast-teacher or amp, got {track.precision!r}')
    out = train_and_test(cfg, f'{track.name} {method.label} (seed {seed})', track.metric,
                         track.defaults)
    result = dict(method=key, seed=seed,
                  value=float(out.get(track.metric, math.nan)) * track.scale,
                  seconds=out['seconds'],
                  curve=[dict(iter=r['iter'], value=r.get(track.metric, 0.0) * track.scale)
                         for r in _read_jsonl(osp.join(run_dir, 'val_curve.jsonl'))],
                  balance=_balance_summary(_read_jsonl(
                      osp.join(run_dir, 'distill_balance.jsonl'))),
                  losses=loss_curves(_read_jsonl(osp.join(run_dir, 'losses_rank0.jsonl'))))
    with open(result_file, 'w') as f:
        json.dump(result, f)
    return result


def run_track(track: Track, work_dir: str, seeds: list[int], methods: list[str] | None = None,
              reuse: bool = False) -> dict:
    """Train the teacher, then every method for every seed; return the track's results."""
    work_dir = osp.join(work_dir, track.name)
    os.makedirs(work_dir, exist_ok=True)
    if track.prepare is not None:
        track.prepare(work_dir)
    keys = [k for k in track.methods if methods is None or k in methods or k == 'alone']
    if any(track.methods[k].baseline == 'inherit' for k in keys) and 'inherit' not in keys:
        keys.insert(1, 'inherit')
    t_dir = osp.join(work_dir, 'teacher')
    t_file = osp.join(t_dir, 'result.json')
    if reuse and osp.exists(t_file):
        with open(t_file) as f:
            teacher = json.load(f)
    else:
        out = train_and_test(track.config(track.teacher, t_dir, track.teacher_iters,
                                          f'{track.name}/teacher', 0),
                             f'{track.name} teacher', track.metric, track.defaults)
        teacher = dict(value=float(out.get(track.metric, math.nan)) * track.scale,
                       ckpt=out['ckpt'],
                       seconds=out['seconds'])
        with open(t_file, 'w') as f:
            json.dump(teacher, f)
    runs: dict[str, dict[int, dict]] = {k: {} for k in keys}
    for seed in seeds:
        init = osp.join(work_dir, f'student_init_seed{seed}.pth')
        if not (reuse and osp.exists(init)):
            save_init(track.student(), track.scope, init, seed)
        for key in keys:
            runs[key][seed] = run_one(track, key, seed, work_dir, init, teacher['ckpt'],
                                      curve=key == 'alone', reuse=reuse)
    title = track.title if track.precision == 'fp32' else f'{track.title} [{track.precision}]'
    return dict(name=track.name, title=title, setting=track.setting, precision=track.precision,
                metric_label=track.metric_label, teacher_iters=track.teacher_iters,
                student_iters=track.student_iters, teacher=teacher,
                rows=[summarise(track.methods[k], k, runs[k], runs) for k in keys])


def summarise(method: Method, key: str, runs: dict[int, dict],
              all_runs: dict[str, dict[int, dict]]) -> dict:
    """Mean, std, the paired difference to the method's baseline, and the loss balance."""
    seeds = sorted(runs)
    values = [runs[s]['value'] for s in seeds]
    row = dict(key=key, label=method.label, baseline=method.baseline, seeds=seeds,
               values=values, mean=statistics.fmean(values),
               std=statistics.stdev(values) if len(values) > 1 else None,
               seconds=statistics.fmean(runs[s]['seconds'] for s in seeds),
               curves={s: runs[s]['curve'] for s in seeds if runs[s]['curve']},
               losses={s: runs[s]['losses'] for s in seeds if runs[s].get('losses')})
    if method.baseline is not None and method.baseline in all_runs:
        base = all_runs[method.baseline]
        deltas = [runs[s]['value'] - base[s]['value'] for s in seeds if s in base]
        row.update(delta=deltas, delta_mean=statistics.fmean(deltas),
                   delta_std=statistics.stdev(deltas) if len(deltas) > 1 else None,
                   wins=int(sum(d > 0 for d in deltas)))
    balances = [runs[s]['balance'] for s in seeds if runs[s].get('balance')]
    for name in ('ratio', 'grad_share', 'grad_cos'):
        vals = [b[name] for b in balances if b.get(name) is not None]
        row[name] = statistics.fmean(vals) if vals else None
    return row
