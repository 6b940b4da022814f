"""The distillation study: every method of a track against the right baseline, over seeds.

A *track* is a teacher, a student, a dataset and the methods to compare. Every seed starts all of
its runs from the same student weights (:func:`~tools.experiments.runtime.save_init`) and the
same data order, so that runs of one seed differ only by their losses: the comparison is paired.
A method that inherits the teacher's weights (``init_student``) is compared with the student that
inherits them without any distillation loss ("inherit only"); the others with the student alone.
The teacher is trained once per track (seed 0). Hyperparameters are the methods' official ones;
nothing is chosen on the reported (test) split: the learning curve of the student alone, which
shows where it levels off, is measured on training images.
"""
from __future__ import annotations

import contextlib
import copy
import glob
import json
import math
import os
import os.path as osp
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable

from mmdistill.engine.machine import machine_info
from .runtime import save_init, train_and_test, with_init


@dataclass
class Method:
    """One row of a track: a label, its ``distill_losses``, whether it inherits, and which of
    the track's teachers it distils from (``'teacher'``, or ``'self'``: the student's own
    architecture and schedule, the control that separates knowledge from regularisation)."""

    label: str
    losses: dict = field(default_factory=dict)
    inherit: bool = False
    student_kwargs: dict = field(default_factory=dict)
    teacher: str = 'teacher'
    #: run when ``--methods`` does not name it (controls are run by name)
    default: bool = True

    @property
    def baseline(self) -> str | None:
        """The key of the row this one is compared with."""
        if not self.losses:
            return None if not self.inherit else 'alone'
        if not self.inherit:
            return 'alone'
        return 'inherit' if self.teacher == 'teacher' else f'inherit_{self.teacher}'


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
    #: validations of the learning curves (student alone, teachers), evenly over the schedule
    curve_points: int = 6
    #: the teachers' config, when it differs from the students' (``config``'s signature)
    teacher_config: Callable[..., dict] | None = None
    #: the track whose teacher (``'teacher'``) this one shares, when not its own
    teacher_track: str | None = None

    def teacher_spec(self, name: str) -> tuple[dict, int, int]:
        """(model, iterations, seed) of teacher ``name``: the track's teacher (seed 0) or
        ``'self'``, the student's architecture at the student's schedule (seed 100, no seed of
        the study)."""
        if name == 'teacher':
            return self.teacher, self.teacher_iters, 0
        if name == 'self':
            return self.student(), self.student_iters, 100
        raise KeyError(f'{self.name}: no teacher {name!r}')


def balanced(losses: dict, share: float, iters: int = 20) -> dict:
    """``losses`` with ``auto_weight=dict(share, iters)`` on every entry."""
    return {name: dict(cfg, auto_weight=dict(share=share, iters=iters))
            for name, cfg in copy.deepcopy(losses).items()}


#: the gradient share of the balanced rows (``auto_weight``): the best of SHARES on the
#: ``det_share`` track (held-out training images), before any method ran on the val images
DET_SHARE = 1.0
#: the detection setting: student widths, schedules and set sizes chosen from the teacher's and
#: the student alone's learning curves on training images (README, "How the setting was chosen")
DET = dict(teacher_width=32, student_width=8, fpn=64, n_train=8000, n_val=500,
           teacher_iters=10000, student_iters=4800, batch=8)
#: the segmentation schedules: the student alone's curve on the training images at 1600
#: iterations (docs/study/setting), the teacher at twice the student's (README, "How the
#: segmentation setting was chosen"); the earlier study ran 600 / 400
SEG = dict(teacher_iters=3200, student_iters=1600)
#: the training images the teacher does not see, on which the ``det_share`` track tests
SHARE_HELD_OUT = 500


#: the shares tried on the held-out split of the training images (``det_share`` track)
SHARES = (0.1, 0.3, 1.0)


# ---------------------------------------------------------------------------------- tracks
def detection_recipes() -> dict[str, tuple[str, dict, bool]]:
    """The published RetinaNet recipes (METHODS.md): key -> (name, losses, inherits)."""
    neck = dict(student='neck', teacher='neck')
    return {
        'fgd_inherit': ('FGD', dict(fgd=dict(
            type='FGDLoss', **neck, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4,
            lambda_fgd=5e-6)), True),
        'mgd_inherit': ('MGD', dict(mgd=dict(type='MGDLoss', **neck, alpha_mgd=2e-5,
                                             lambda_mgd=0.65)), True),
        'cwd': ('CWD', dict(cwd=dict(type='CWDLoss', **neck, tau=1.0, loss_weight=10.0)), False),
        'pkd_inherit': ('PKD', dict(pkd=dict(type='PKDLoss', **neck, loss_weight=6.0)), True),
    }


def detection_methods(share: float) -> dict[str, Method]:
    """Student alone, inherit only, each recipe at its official weights and balanced
    (``<key>_auto``), and the self-teacher controls (``<key>[_auto]_self``, run by name)."""
    methods = {'alone': ALONE, 'inherit': INHERIT,
               'inherit_self': Method('inherit only from self-teacher', inherit=True,
                                      teacher='self', default=False)}
    for key, (name, losses, inherit) in detection_recipes().items():
        label = f'+ {name}' + (' + inherit' if inherit else '')
        methods[key] = Method(f'{label} (official weights)', losses, inherit)
        methods[f'{key}_auto'] = Method(f'{label} (balanced, share {share})',
                                        balanced(losses, share), inherit)
        for weights in ('', '_auto'):
            methods[f'{key}{weights}_self'] = Method(
                methods[f'{key}{weights}'].label + ' from self-teacher',
                methods[f'{key}{weights}'].losses, inherit, teacher='self', default=False)
    return methods


def share_methods() -> dict[str, Method]:
    """The share sweep: FGD + inherit and CWD (one recipe of each baseline) at each of
    :data:`SHARES`, beside their baselines."""
    methods = {'alone': ALONE, 'inherit': INHERIT}
    recipes = detection_recipes()
    for key in ('fgd_inherit', 'cwd'):
        name, losses, inherit = recipes[key]
        for share in SHARES:
            methods[f'{key}_share{share}'] = Method(
                f'+ {name}' + (' + inherit' if inherit else '') + f' (share {share})',
                balanced(losses, share), inherit)
    return methods


def chosen_share(track: dict) -> tuple[float | None, dict[float, float]]:
    """The share with the best mean paired gain over the swept recipes of a ``det_share``
    track's results (the rule fixed before the sweep ran), and each share's mean gain."""
    gains: dict[float, list[float]] = {}
    for row in track['rows']:
        if '_share' in row['key'] and 'delta_mean' in row:
            gains.setdefault(float(row['key'].rsplit('_share', 1)[1]), []).append(
                row['delta_mean'])
    means = {share: statistics.fmean(v) for share, v in sorted(gains.items())}
    return (max(means, key=means.get) if means else None), means


def detection_track(work_dir: str, quick: bool = False, choose_share: bool = False) -> Track:
    """RetinaNet R18-w32 -> R18-w8 on the synthetic shapes set (written under ``work_dir``):
    shapes of 8-128 px (every FPN level's anchors, octave base scale 1), 1-6 per image.

    The teacher is trained on the training images but the first :data:`SHARE_HELD_OUT`, the
    students on all of them. ``choose_share``: the ``det_share`` track, where the share of the
    balanced rows is chosen before any method is measured on the val images: the students are
    trained on the images the teacher saw and tested on the held-out ones; its teacher is the
    ``det`` track's."""
    from .shapes_data import SHAPE_CLASSES, make_shapes_coco
    from .shapes import COCO_ZERO, METRIC, retinanet, shapes_config
    data_root = osp.join(work_dir, 'data')
    d = dict(DET, n_train=24, n_val=8, batch=4, teacher_iters=4, student_iters=3) if quick \
        else DET
    held = 4 if quick else SHARE_HELD_OUT
    n_cls = len(SHAPE_CLASSES)
    teacher = retinanet(d['teacher_width'], d['fpn'], n_cls, octave_base_scale=1)
    student = retinanet(d['student_width'], d['fpn'], n_cls, octave_base_scale=1)
    tested = (f'students trained on the images the teacher saw, mAP on the {held} held out'
              if choose_share else 'mAP on the val images')
    return Track(
        name='det_share' if choose_share else 'det',
        title=('Detection, choosing the share: held-out training images (COCO bbox mAP, %)'
               if choose_share else 'Detection: synthetic shapes (COCO bbox mAP, %)'),
        metric=METRIC, metric_label='mAP', scale=100.0, scope='mmdet', wrapper='DistillDetector',
        teacher=teacher, student=lambda: copy.deepcopy(student),
        config=lambda model, wd, iters, name, seed, **rt: shapes_config(
            model, data_root, wd, iters, d['batch'], name, seed,
            curve_subset=4 if quick else 200, train_from=held if choose_share else 0,
            test_held_out=choose_share, **rt),
        teacher_config=lambda model, wd, iters, name, seed, **rt: shapes_config(
            model, data_root, wd, iters, d['batch'], name, seed,
            curve_subset=4 if quick else 200, train_from=held, **rt),
        teacher_track='det' if choose_share else None,
        methods=share_methods() if choose_share else detection_methods(DET_SHARE),
        teacher_iters=d['teacher_iters'], student_iters=d['student_iters'],
        dry_run_shape=(128, 128), defaults=COCO_ZERO, curve_points=8,
        setting=(f'RetinaNet R18-w{d["teacher_width"]} teacher -> R18-w{d["student_width"]} '
                 f'student (FPN {d["fpn"]}, anchors octave base 1), {d["n_train"]} train / '
                 f'{d["n_val"]} val images 128x128 with 1-6 shapes of 8-128 px (the teacher '
                 f'trained on all but the first {held} train images), batch {d["batch"]}, '
                 f'AdamW 1e-3, cosine; {tested}'),
        prepare=lambda _: osp.exists(osp.join(data_root, 'annotations', 'val.json')) or
        make_shapes_coco(data_root, d['n_train'], d['n_val'], size=128, seed=0, objects=(1, 6),
                         radius=(0.031, 0.5), log_radius=True))  # val.json: written last


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
        methods=methods, teacher_iters=2 if quick else SEG['teacher_iters'],
        student_iters=2 if quick else SEG['student_iters'], dry_run_shape=crop, curve_points=8,
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
            type='DKDLoss', **head, alpha=1.0, beta=8.0, temperature=4.0,
            weight_schedule=dict(warmup=dkd_warmup)))),
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
    (:mod:`~tools.experiments.kd_tutorial`); 10 epochs of the 10,000 training images."""
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
#: two-sided 95 % quantiles of Student's t by degrees of freedom (n - 1 seeds)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
        17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086}


def _read_jsonl(path: str) -> list[dict]:
    if not osp.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_json(path: str) -> dict | None:
    if not osp.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, value: dict) -> None:
    """Write ``value`` to ``path`` whole or not at all (a killed run leaves no half file)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
        json.dump(value, f)
    os.replace(tmp, path)


@contextlib.contextmanager
def claimed(path: str) -> Iterator[bool]:
    """Claim the run whose result is ``path`` for this process (``<path>.claim``, created
    exclusively); yields False when another live process on this host holds it. A claim of a
    process that died is taken over."""
    claim = f'{path}.claim'
    os.makedirs(osp.dirname(claim) or '.', exist_ok=True)
    me = f'{socket.gethostname()} {os.getpid()}'
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with open(claim) as f:
                host, _, pid = f.read().partition(' ')
            if host == socket.gethostname() and pid.isdigit() and _alive(int(pid)):
                yield False
                return
            os.remove(claim)  # its process died (or ran on another machine): take it over
            continue
        with os.fdopen(fd, 'w') as f:
            f.write(me)
        try:
            yield True
        finally:
            os.remove(claim)
        return
    yield False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _auto_weights(run_dir: str) -> dict[str, float]:
    """The ``auto_weight`` entries' measured weights, read from the run's checkpoint."""
    import torch
    ckpt = osp.join(run_dir, 'weights.pth')
    if not osp.exists(ckpt):
        return {}
    state = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    return {k.split('.')[1]: float(v) for k, v in state.items()
            if k.startswith('auto_weights.') and k.endswith('.weight')}


def run_tag(track: Track, method: Method) -> str:
    """'' or '_<precision>': runs the precision leaves alone are shared between precisions."""
    changed = track.precision == 'amp' or (track.precision == 'fast-teacher' and method.losses)
    return f'_{track.precision}' if changed else ''


def run_one(track: Track, key: str, seed: int, work_dir: str, results_dir: str,
            init_ckpt: str, teacher_ckpt: str | None, curve: bool = False,
            reuse: bool = False, gather: bool = False) -> dict | None:
    """Train and test one (method, seed) run; return its metric, time, curve and balance, also
    written to ``<results_dir>/<key>[_<precision>]_seed<seed>.json`` (a small file to commit).
    With ``reuse`` a run whose result file exists is read back; None: another process has
    claimed the run."""
    method = track.methods[key]
    name = f'{key}{run_tag(track, method)}_seed{seed}'
    result_file = osp.join(results_dir, f'{name}.json')
    if (reuse or gather) and osp.exists(result_file):
        return _read_json(result_file)
    if gather:
        return None
    with claimed(result_file) as mine:
        if not mine:
            return None
        run_dir = osp.join(work_dir, name)
        for stale in ('val_curve.jsonl', 'distill_balance.jsonl', 'losses_rank0.jsonl'):
            if osp.exists(osp.join(run_dir, stale)):
                os.remove(osp.join(run_dir, stale))
        result = _train_one(track, method, key, seed, run_dir, init_ckpt, teacher_ckpt, curve)
        _write_json(result_file, result)
    return result


def _train_one(track: Track, method: Method, key: str, seed: int, run_dir: str,
               init_ckpt: str, teacher_ckpt: str | None, curve: bool) -> dict:
    student = with_init(track.student(**method.student_kwargs), init_ckpt)
    hooks = [dict(type='DumpLossesHook')]
    if teacher_ckpt is None:
        model = student
    else:
        model = dict(type=track.wrapper, student=student,
                     teacher=dict(config=dict(model=track.teacher_spec(method.teacher)[0]),
                                  checkpoint=teacher_ckpt),
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
                       val_interval=max(iters // track.curve_points, 1) if curve else None,
                       extra_hooks=hooks)
    if track.precision == 'amp':
        cfg['optim_wrapper']['type'] = 'BF16OptimWrapper'
    elif track.precision not in ('fp32', 'fast-teacher'):
        raise ValueError(f'precision must be fp32, fast-teacher or amp, got {track.precision!r}')
    out = train_and_test(cfg, f'{track.name} {method.label} (seed {seed})', track.metric,
                         track.defaults)
    return dict(method=key, seed=seed, value=float(out.get(track.metric, math.nan)) * track.scale,
                seconds=out['seconds'], machine=machine_info(),
                curve=[dict(iter=r['iter'], value=r.get(track.metric, 0.0) * track.scale)
                       for r in _read_jsonl(osp.join(run_dir, 'val_curve.jsonl'))],
                balance=_balance_summary(_read_jsonl(
                    osp.join(run_dir, 'distill_balance.jsonl'))),
                auto_weights=_auto_weights(run_dir),
                losses=loss_curves(_read_jsonl(osp.join(run_dir, 'losses_rank0.jsonl'))))


def train_teacher(track: Track, name: str, work_dir: str, results_dir: str,
                  reuse: bool = False, wait: float = 30.0) -> dict:
    """Train teacher ``name`` once, with its learning curve on training images; its result
    (``<results_dir>/<name>.json``, committed) and weights (``<work_dir>/<name>.pth``: weights
    stay out of the repository) are kept for every later run. A machine without the weights
    trains the teacher again (seed 0). A teacher another process is training is waited for."""
    import torch
    result_file = osp.join(results_dir, f'{name}.json')
    ckpt = osp.join(work_dir, f'{name}.pth')
    while True:
        if reuse and osp.exists(result_file) and osp.exists(ckpt):
            return dict(_read_json(result_file), ckpt=ckpt)
        with claimed(result_file) as mine:
            if mine:
                model, iters, seed = track.teacher_spec(name)
                t_dir = osp.join(work_dir, name)
                if osp.exists(osp.join(t_dir, 'val_curve.jsonl')):
                    os.remove(osp.join(t_dir, 'val_curve.jsonl'))
                config = track.teacher_config if name == 'teacher' and track.teacher_config \
                    else track.config
                cfg = config(model, t_dir, iters, f'{track.name}/{name}', seed,
                             val_interval=max(iters // track.curve_points, 1))
                out = train_and_test(cfg, f'{track.name} {name}', track.metric, track.defaults)
                state = torch.load(out['ckpt'], map_location='cpu', weights_only=True)
                torch.save(state, ckpt)
                result = dict(value=float(out.get(track.metric, math.nan)) * track.scale,
                              seconds=out['seconds'], iters=iters, seed=seed,
                              machine=machine_info(),
                              curve=[dict(iter=r['iter'],
                                          value=r.get(track.metric, 0.0) * track.scale)
                                     for r in _read_jsonl(osp.join(t_dir, 'val_curve.jsonl'))])
                _write_json(result_file, result)
                return dict(result, ckpt=ckpt)
        reuse = True
        time.sleep(wait)


def run_track(track: Track, work_dir: str, seeds: list[int], methods: list[str] | None = None,
              reuse: bool = False, results_dir: str | None = None,
              gather: bool = False) -> dict:
    """Train the teachers, then every method for every seed; return the track's results.

    Each finished run is a small file in ``<results_dir>/<track>/`` (default: under
    ``work_dir``), with the teachers' results and weights: commit it, and ``reuse`` resumes the
    study anywhere. Runs that another process has claimed are left to it: run the same command
    in two processes (one per core) to share the work, then once more with ``reuse`` to
    gather. ``gather`` without ``methods`` shows every method with results, the controls run
    by name too."""
    results_dir = osp.join(results_dir or osp.join(work_dir, 'results'), track.name)
    work_dir = osp.join(work_dir, track.name)
    os.makedirs(work_dir, exist_ok=True)
    if track.prepare is not None:
        track.prepare(work_dir)
    keys = [k for k, m in track.methods.items()
            if (m.default and methods is None) or k == 'alone' or k in (methods or ())
            or (gather and methods is None and glob.glob(osp.join(results_dir, f'{k}_seed*.json')))]
    for k in list(keys):
        base = track.methods[k].baseline
        if base is not None and base not in keys:
            keys.insert(keys.index(k), base)
    teachers = {}
    needed = {track.methods[k].teacher for k in keys if k != 'alone'}
    for name in sorted(needed | {'teacher'}):
        shared = name == 'teacher' and track.teacher_track
        t_work = osp.join(osp.dirname(work_dir), track.teacher_track) if shared else work_dir
        t_results = osp.join(osp.dirname(results_dir), track.teacher_track) if shared \
            else results_dir
        if name in needed and not gather:
            teachers[name] = train_teacher(track, name, t_work, t_results, reuse)
        elif _read_json(osp.join(t_results, f'{name}.json')) is not None:  # shown if trained
            teachers[name] = _read_json(osp.join(t_results, f'{name}.json'))
    runs: dict[str, dict[int, dict]] = {k: {} for k in keys}
    for seed in seeds:
        init = osp.join(work_dir, f'student_init_seed{seed}.pth')
        if not osp.exists(init) and not gather:
            save_init(track.student(), track.scope, init, seed)
        for key in keys:
            teacher = None if key == 'alone' or gather else \
                teachers[track.methods[key].teacher]['ckpt']
            result = run_one(track, key, seed, work_dir, results_dir, init, teacher,
                             curve=key == 'alone', reuse=reuse, gather=gather)
            if result is not None:
                runs[key][seed] = result
    title = track.title if track.precision == 'fp32' else f'{track.title} [{track.precision}]'
    return dict(name=track.name, title=title, setting=track.setting, precision=track.precision,
                metric_label=track.metric_label, teacher_iters=track.teacher_iters,
                student_iters=track.student_iters,
                teacher={k: v for k, v in teachers.get('teacher', dict(value=math.nan)).items()
                         if k != 'ckpt'},
                teachers={n: {k: v for k, v in t.items() if k != 'ckpt'}
                          for n, t in teachers.items()},
                rows=[summarise(track.methods[k], k, runs[k], runs) for k in keys if runs[k]])


def paired_interval(deltas: list[float]) -> tuple[float, float] | None:
    """The 95 % confidence interval (Student's t) of the mean paired difference."""
    n = len(deltas)
    if n < 2:
        return None
    half = T975.get(n - 1, 1.96) * statistics.stdev(deltas) / math.sqrt(n)
    mean = statistics.fmean(deltas)
    return mean - half, mean + half


def summarise(method: Method, key: str, runs: dict[int, dict],
              all_runs: dict[str, dict[int, dict]]) -> dict:
    """Mean, std, the paired difference to the method's baseline (mean, std, 95 % interval,
    seeds won), the loss balance and the measured weights."""
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
        paired = [s for s in seeds if s in base]
        deltas = [runs[s]['value'] - base[s]['value'] for s in paired]
        if deltas:
            row.update(delta_seeds=paired, delta=deltas, delta_mean=statistics.fmean(deltas),
                       delta_std=statistics.stdev(deltas) if len(deltas) > 1 else None,
                       delta_ci=paired_interval(deltas), wins=int(sum(d > 0 for d in deltas)))
    balances = [runs[s]['balance'] for s in seeds if runs[s].get('balance')]
    for name in ('ratio', 'grad_share', 'grad_cos'):
        vals = [b[name] for b in balances if b.get(name) is not None]
        row[name] = statistics.fmean(vals) if vals else None
    weights = [runs[s]['auto_weights'] for s in seeds if runs[s].get('auto_weights')]
    if weights:
        row['auto_weights'] = {n: statistics.fmean(w[n] for w in weights) for n in weights[0]}
    return row
