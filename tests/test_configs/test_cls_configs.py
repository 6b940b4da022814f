"""The shipped mmpretrain distillation configs: configs/{kd,dkd,sdd,ctkd,ofa,crd}/*.py and
configs/mgd/*_in1k.py.

For every config: it loads with ``mmengine.Config.fromfile`` (its ``mmpretrain::`` bases resolve),
wraps its student in a ``DistillClassifier``, names registered losses with the official
hyperparameters, resolves its teacher config, builds its student (no pretrained init) with the
normalisation of its base config, taps modules that exist in it, and keeps the official schedule.
The last test builds the whole ``DistillClassifier`` of each config with its real teacher
architecture (random weights, one checkpoint per teacher config) on a small dry-run input and runs
one optimiser step: the build-time checks see the real taps, channels and class counts.
"""
import copy
import functools
import glob
import os

import pytest
import torch
from mmengine.registry import DefaultScope

pytest.importorskip('mmpretrain')

from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from mmdistill.recorder import Tap, find_module  # noqa: E402
from mmdistill.teacher import build_teacher, load_teacher_config, model_config  # noqa: E402
from tests.utils import cls_batch  # noqa: E402

from tests.conftest import use_scope  # noqa: E402
from tests.test_configs.common import check_distill_config, loss_kwargs, plain, taps  # noqa: E402

_scope = use_scope('mmpretrain')

register_all_modules()

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted([p for m in ('kd', 'dkd', 'sdd', 'ctkd', 'ofa', 'crd')
                  for p in glob.glob(os.path.join(ROOT, 'configs', m, '*.py'))]
                 + glob.glob(os.path.join(ROOT, 'configs', 'mgd', '*_in1k.py')))
NAMES = [os.path.relpath(p, os.path.join(ROOT, 'configs')) for p in CONFIGS]

R34 = 'mmpretrain::resnet/resnet34_8xb32_in1k.py'
R34_CKPT = 'resnet34_8xb32_in1k_20210831-f257d4e6.pth'
R50 = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
R50_CKPT = 'resnet50_8xb32_in1k_20210831-ea4938fc.pth'
R50_C100 = 'mmpretrain::resnet/resnet50_8xb16_cifar100.py'
R50_C100_CKPT = 'resnet50_b16x8_cifar100_20210528-67b58a1b.pth'
LOGITS = dict(student='head', teacher='head')
CE = dict(type='CrossEntropyLoss')
# ImageNet R34 -> R18: mmpretrain's ResNet-18 schedule (100 epochs, lr 0.1 for 256, 30/60/90)
IN1K = dict(student='ResNet', teacher=R34, ckpt=R34_CKPT, epochs=100, lr=0.1, batch=32,
            milestones=[30, 60, 90], classes=1000)
# CIFAR-100 (mdistiller): 240 epochs, batch 64, lr 0.05, steps 150/180/210
C100 = dict(student='ResNet_CIFAR', teacher=R50_C100, ckpt=R50_C100_CKPT, epochs=240, lr=0.05,
            batch=64, milestones=[150, 180, 210], classes=100)

# The official recipes (see each config's header for its source): the student's CE loss, the
# teacher config and checkpoint file, the loss entries, the schedule and the hooks.
RECIPES = {
    # mdistiller configs/imagenet/r34_r18/kd.yaml
    'kd/kd_resnet34_resnet18_8xb32_in1k.py': dict(
        IN1K, ce=dict(CE, loss_weight=0.5),
        losses=dict(kd=dict(type='KDLoss', temperature=1.0, loss_weight=0.5, **LOGITS))),
    # logit-standardization-KD imagenet kd.yaml + --logit-stand --base-temp 2 --kd-weight 9
    'kd/kd-ls_resnet34_resnet18_8xb32_in1k.py': dict(
        IN1K, ce=dict(CE, loss_weight=1.0),
        losses=dict(kd=dict(type='KDLoss', temperature=2.0, logit_stand=True, loss_weight=9.0,
                            **LOGITS))),
    # mdistiller configs/cifar100/kd.yaml
    'kd/kd_resnet50_resnet18_1xb64_cifar100.py': dict(
        C100, ce=dict(CE, loss_weight=0.1),
        losses=dict(kd=dict(type='KDLoss', temperature=4.0, loss_weight=0.9, **LOGITS))),
    # mdistiller configs/imagenet/r34_r18/dkd.yaml
    'dkd/dkd_resnet34_resnet18_8xb32_in1k.py': dict(
        IN1K, ce=dict(CE, loss_weight=1.0),
        losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=0.5, temperature=1.0,
                             weight_schedule=dict(warmup=1, by_epoch=True), **LOGITS))),
    # mdistiller configs/imagenet/r50_mv2/dkd.yaml
    'dkd/dkd_resnet50_mobilenet-v2_8xb32_in1k.py': dict(
        IN1K, student='MobileNetV2', teacher=R50, ckpt=R50_CKPT, ce=dict(CE, loss_weight=1.0),
        losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=2.0, temperature=1.0,
                             weight_schedule=dict(warmup=1, by_epoch=True), **LOGITS))),
    # mdistiller configs/cifar100/dkd/*.yaml
    'dkd/dkd_resnet50_resnet18_1xb64_cifar100.py': dict(
        C100, ce=dict(CE, loss_weight=1.0),
        losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=8.0, temperature=4.0,
                             weight_schedule=dict(warmup=20, by_epoch=True), **LOGITS))),
    # SDD-CVPR2024 configs/imagenet/r34_r18/sdd_kd.yaml (mdistiller KD defaults T 4, 0.1/0.9)
    'sdd/sdd-kd_resnet34_resnet18_8xb32_in1k.py': dict(
        IN1K, lr=0.2, ce=dict(CE, loss_weight=0.1),
        losses=dict(sdd=dict(type='SDDLoss', student='backbone[-1]', teacher='backbone[-1]',
                             classifier='head.fc', temperature=4.0, scales=[1, 2, 4],
                             loss_weight=0.9))),
    # CTKD scripts/run_imagenet_distill.sh
    'ctkd/ctkd_resnet34_resnet18_8xb32_in1k.py': dict(
        IN1K, epochs=120, ce=dict(CE, loss_weight=1.0),
        losses=dict(ctkd=dict(type='CTKDLoss', base='kd', t_start=1.0, t_end=20.0,
                              loss_weight=1.0, **LOGITS)),
        hooks=[dict(type='CTKDTemperatureHook', max_lambda=1.0, min_lambda=0.0,
                    decay_loops=5)]),
    'ctkd/ctkd-dkd_resnet34_resnet18_8xb32_in1k.py': dict(
        IN1K, epochs=120, ce=dict(CE, loss_weight=1.0),
        losses=dict(ctkd=dict(type='CTKDLoss', base='dkd', t_start=1.0, t_end=20.0, alpha=1.0,
                              beta=0.5, loss_weight=1.0, **LOGITS)),
        hooks=[dict(type='CTKDTemperatureHook', max_lambda=1.0, min_lambda=0.0,
                    decay_loops=5)]),
    # OFAKD train.py defaults + configs/imagenet/cnn.yaml
    'ofa/ofa_resnet34_resnet18_8xb64_in1k.py': dict(
        IN1K, batch=64, ce=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original',
                                loss_weight=1.0),
        losses=dict(ofa=dict(
            type='OFALoss', student=[f'backbone.layer{i}' for i in (1, 2, 3, 4)],
            teacher='head', student_channels=[64, 128, 256, 512], teacher_channels=512,
            num_classes=1000, ofa_stage=[1, 2, 3, 4], ofa_eps=1.0, ofa_temperature=1.0,
            ofa_loss_weight=1.0, kd_loss_weight=1.0))),
    # mdistiller configs/imagenet/r34_r18/crd.yaml (CRD defaults of mdistiller / RepDistiller)
    'crd/crd_resnet34_resnet18_8xb32_in1k.py': dict(
        IN1K, ce=dict(CE, loss_weight=1.0),
        losses=dict(crd=dict(type='CRDLoss', student='neck', teacher='neck',
                             student_channels=512, teacher_channels=512, feat_dim=128,
                             nce_k=16384, nce_t=0.07, nce_m=0.5, n_data=1281167,
                             loss_weight=0.8))),
    # yzd-v/MGD cls/configs/distillers/res34_distill_res18_img.py
    'mgd/mgd_resnet34_resnet18_8xb32_in1k.py': dict(
        IN1K, ce=dict(CE, loss_weight=1.0),
        losses=dict(mgd=dict(type='MGDLoss', student='backbone[-1]', teacher='backbone[-1]',
                             student_channels=512, teacher_channels=512, alpha_mgd=7e-5,
                             lambda_mgd=0.15, mask_type='channel'))),
}
SMALL = dict(n_data=64, nce_k=8)  # CRD: small memory banks for the build tests


@functools.lru_cache(maxsize=None)
def _parse(name: str) -> Config:
    return Config.fromfile(os.path.join(ROOT, 'configs', name))


def _load(name: str) -> Config:
    return copy.deepcopy(_parse(name))  # parsed once per config; each test gets its own copy


def _student_cfg(cfg: Config) -> ConfigDict:
    student = copy.deepcopy(cfg.model.student)
    student.backbone.init_cfg = None
    return student


def test_every_config_has_a_recipe():
    assert NAMES, 'no configs found under configs/{kd,dkd,sdd,ctkd,ofa,crd}'
    assert sorted(NAMES) == sorted(RECIPES)


@pytest.mark.parametrize('name', NAMES)
def test_config_loads_as_distill_classifier(name):
    cfg = _load(name)
    check_distill_config(cfg, name, 'DistillClassifier', MODELS)
    model = cfg.model
    assert 'student' not in cfg  # the helper variable is deleted
    # the student keeps its base's normalisation (mmpretrain keeps it at the top level)
    assert plain(model.student.data_preprocessor) == plain(cfg.data_preprocessor)
    assert model.student.data_preprocessor.mean and model.student.data_preprocessor.std


@pytest.mark.parametrize('name', NAMES)
def test_losses_are_registered_and_buildable(name):
    for key, entry in _load(name).model.distill_losses.items():
        loss_cls, kwargs = loss_kwargs(key, entry, options=('classifier', ))
        if entry.type == 'CRDLoss':
            kwargs.update(SMALL)
        loss_cls(**kwargs)


@pytest.mark.parametrize('name', NAMES)
def test_teacher_config_resolves(name):
    cfg, recipe = _load(name), RECIPES[name]
    full = load_teacher_config(cfg.model.teacher.config, 'model.teacher.config')
    teacher = model_config(full)
    assert MODELS.get(teacher['type']) is not None
    assert teacher['head']['num_classes'] == cfg.model.student.head.num_classes \
        == recipe['classes']
    # teacher and student are trained on the same normalisation
    assert plain(full.data_preprocessor) == plain(cfg.model.student.data_preprocessor)


@pytest.mark.parametrize('name', NAMES)
def test_student_builds_and_taps_exist(name):
    cfg = _load(name)
    student = MODELS.build(_student_cfg(cfg))
    assert type(student.backbone).__name__ == RECIPES[name]['student']
    pre = student.data_preprocessor
    assert pre._enable_normalize and pre.to_rgb == cfg.data_preprocessor.get('to_rgb', False)
    size = 32 if 'cifar' in name else 64
    student.eval()
    recorded = {}
    for key, entry in cfg.model.distill_losses.items():
        for spec in taps(entry.student):
            tap = Tap.parse(spec)
            module = find_module(student, tap.path, key, 'student')
            module.register_forward_hook(
                lambda m, i, o, spec=spec: recorded.setdefault(spec, o))
    with torch.no_grad():
        student.head(student.neck(student.backbone(torch.zeros(1, 3, size, size))))
    for key, entry in cfg.model.distill_losses.items():
        outs = [recorded[s] for s in taps(entry.student)]
        outs = [o[-1] if isinstance(o, tuple) else o for o in outs]
        if 'student_channels' in entry:
            chans = taps(entry.student_channels)
            assert [o.shape[1] for o in outs] == chans, key
        if entry.type == 'SDDLoss':
            fc = find_module(student, entry.classifier, key, 'student')
            assert outs[0].dim() == 4 and outs[0].shape[1] == fc.in_features


@pytest.mark.parametrize('name', NAMES)
def test_official_recipe(name):
    cfg, recipe = _load(name), RECIPES[name]
    model = cfg.model
    assert model.teacher.config == recipe['teacher']
    assert os.path.basename(model.teacher.checkpoint) == recipe['ckpt']
    assert plain(model.distill_losses) == plain(recipe['losses'])
    assert plain(model.student.head.loss) == plain(recipe['ce'])
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.lr == recipe['lr']
    assert cfg.train_cfg.max_epochs == recipe['epochs']
    assert cfg.train_dataloader.batch_size == recipe['batch']
    schedulers = cfg.param_scheduler if isinstance(cfg.param_scheduler, list) \
        else [cfg.param_scheduler]
    steps = [s for s in schedulers if s.type == 'MultiStepLR']
    assert len(steps) == 1 and steps[0].milestones == recipe['milestones']
    assert steps[0].get('begin', 0) == 0
    assert plain(cfg.get('custom_hooks', [])) == plain(recipe.get('hooks', []))


@pytest.fixture(scope='module')
def teacher_ckpts(tmp_path_factory):
    """One random-weight checkpoint per teacher config (built once, shared)."""
    cache = {}

    def get(config: str) -> str:
        if config not in cache:
            torch.manual_seed(0)
            with DefaultScope.overwrite_default_scope('mmpretrain'):
                model = MODELS.build(model_config(load_teacher_config(config, 'teacher')))
            path = str(tmp_path_factory.mktemp('teachers') / 'teacher.pth')
            torch.save({'state_dict': model.state_dict()}, path)
            cache[config] = path
        return cache[config]

    return get


@pytest.mark.parametrize('name', NAMES)
def test_distill_step_with_real_teacher_architecture(name, teacher_ckpts):
    """Build the config's DistillClassifier with its real teacher architecture (random weights)
    and run one optimiser step on a small batch: the taps resolve, the channels and classes the
    config gives match the real models, and every distillation loss is finite."""
    cfg, recipe = _load(name), RECIPES[name]
    size = 32 if 'cifar' in name else 64
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.student = _student_cfg(cfg)
    model_cfg.teacher.checkpoint = teacher_ckpts(cfg.model.teacher.config)
    model_cfg.dry_run_shape = (size, size)
    for entry in model_cfg.distill_losses.values():
        if entry.type == 'CRDLoss':
            entry.update(SMALL)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    batch = cls_batch(n=2, num_classes=recipe['classes'], size=size)
    log = model.train_step(batch, optim)
    for key in recipe['losses']:
        assert torch.isfinite(log[f'loss_{key}']), key
    assert all(p.grad is None for p in model.teacher.model.parameters())


def test_teacher_built_from_config_gets_its_normalisation(teacher_ckpts):
    cfg = _load('kd/kd_resnet34_resnet18_8xb32_in1k.py')
    teacher = build_teacher(MODELS, dict(config=cfg.model.teacher.config,
                                         checkpoint=teacher_ckpts(cfg.model.teacher.config)))
    pre = teacher.data_preprocessor
    assert pre._enable_normalize and pre.to_rgb
    torch.testing.assert_close(pre.mean.flatten(), torch.tensor(cfg.data_preprocessor.mean))


# ------------------------------------------------------ EMA self-distillation, several teachers
EMA = 'ema/ema-kd_resnet18_8xb32_in1k.py'
MULTI = 'multi_teacher/multi-teacher-kd_resnet34-resnet50_resnet18_8xb32_in1k.py'


@pytest.mark.parametrize('name', [EMA, MULTI])
def test_ema_and_multi_teacher_configs_build_and_step(name, teacher_ckpts):
    """The EMA and multi-teacher examples: their keys, their teachers (the student's average;
    the real ResNet-34 and ResNet-50 with random weights), one optimiser step on 64x64 inputs."""
    cfg = _load(name)
    check_distill_config(cfg, name, 'DistillClassifier', MODELS)
    assert cfg.runner_type == 'DistillRunner'
    assert plain(cfg.model.student.data_preprocessor) == plain(cfg.data_preprocessor)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.student = _student_cfg(cfg)
    model_cfg.dry_run_shape = (64, 64)
    for spec in model_cfg.get('teachers', {}).values():
        full = load_teacher_config(spec.config, 'teacher')
        assert plain(full.data_preprocessor) == plain(cfg.data_preprocessor)
        spec.checkpoint = teacher_ckpts(spec.config)
    for key, entry in cfg.model.distill_losses.items():
        loss_cls, kwargs = loss_kwargs(key, entry, options=('teacher_name', ))
        loss_cls(**kwargs)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    log = model.train_step(cls_batch(n=2, num_classes=1000, size=64), optim)
    for key in cfg.model.distill_losses:
        assert torch.isfinite(log[f'loss_{key}']), key
    for teacher in model.teachers.values():
        assert all(p.grad is None for p in teacher.model.parameters())
    if name == EMA:
        assert plain(cfg.model.teacher) == dict(ema=dict(momentum=0.0002, update_buffers=True))
        assert int(model.teacher.ema.steps) == 1
        assert 'teacher.steps' in model.state_dict()
    else:
        depths = {n: t.model.backbone.depth for n, t in model.teachers.items()}
        assert depths == dict(r34=34, r50=50)
        assert [e.teacher_name for e in model.entries] == ['r34', 'r50']
