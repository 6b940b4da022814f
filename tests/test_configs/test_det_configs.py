"""The shipped mmdet distillation configs: configs/{fgd,mgd,cwd,ld,crosskd}/*_coco.py.

For every config: it loads with ``mmengine.Config.fromfile`` (its ``mmdet::`` bases resolve), wraps
its student in a ``DistillDetector``, names registered losses with taps that exist in the student,
resolves its teacher config, builds its student, and keeps the official recipe (hyperparameters,
levels, schedule, grad clip, inheriting). A distillation step then runs on a tiny batch with a
stand-in teacher of the student's architecture (the real teachers are X101/R101 detectors whose
checkpoints are not available offline).
"""
import copy
import glob
import os

import pytest
import torch

mmdet = pytest.importorskip('mmdet')

from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from mmdistill.losses.base import contract  # noqa: E402
from mmdistill.recorder import Tap, find_module  # noqa: E402
from mmdistill.registry import DISTILL_LOSSES  # noqa: E402
from mmdistill.teacher import load_teacher_config, model_config  # noqa: E402
from tests.utils import det_batch  # noqa: E402

from tests.conftest import use_scope  # noqa: E402
from tests.test_configs.common import check_distill_config, loss_kwargs, plain  # noqa: E402

_scope = use_scope('mmdet')

register_all_modules()

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = ('fgd', 'mgd', 'cwd', 'ld', 'crosskd')
# the COCO ones; the Cityscapes configs are tested in test_seg_configs.py
CONFIGS = sorted(p for m in METHODS
                 for p in glob.glob(os.path.join(ROOT, 'configs', m, '*_coco.py')))
NAMES = [os.path.relpath(p, os.path.join(ROOT, 'configs')) for p in CONFIGS]

P2_P5 = ['neck[0]', 'neck[1]', 'neck[2]', 'neck[3]']  # two-stage FPN: fpn_convs.0-3
FGD_ONE_STAGE = dict(type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.5,
                     alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6)
FGD_TWO_STAGE = dict(type='FGDLoss', student_channels=256, teacher_channels=256, temp=0.5,
                     alpha_fgd=5e-5, beta_fgd=2.5e-5, gamma_fgd=5e-5, lambda_fgd=5e-7)
RETINA_X101 = 'mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py'
RETINA_X101_CKPT = 'retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth'
GFL_R101 = 'mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py'
GFL_R101_CKPT = 'gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'
CASCADE = 'mmdet::dcn/cascade-mask-rcnn_x101-32x4d-dconv-c3-c5_fpn_1x_coco.py'
CASCADE_CKPT = 'cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth'
CLIP = dict(max_norm=35, norm_type=2)
GFL_SCALES = [f'bbox_head.scales.{i}' for i in range(5)]
GFL_HOLDS = ['bbox_head.cls_convs.2.gn', 'bbox_head.reg_convs.2.gn']

# The official recipes (see each config's header for its source): student type, teacher
# config and checkpoint file, loss entries, inheriting, grad clip, epochs, lr; levels = the
# number of loss modules the entry builds (one per tapped tensor).
RECIPES = {
    'fgd/fgd_retinanet_x101-64x4d-fpn_retinanet_r50-fpn_2x_coco.py': dict(
        student='RetinaNet', teacher=RETINA_X101, ckpt=RETINA_X101_CKPT,
        losses=dict(fgd_fpn=dict(student='neck', teacher='neck', **FGD_ONE_STAGE)),
        levels=dict(fgd_fpn=5), init_student=True, clip=CLIP, epochs=24, lr=0.01),
    'fgd/fgd_gfl_r101-fpn_gfl_r50-fpn_1x_coco.py': dict(
        student='GFL', teacher=GFL_R101, ckpt=GFL_R101_CKPT,
        losses=dict(fgd_fpn=dict(student='neck', teacher='neck', **FGD_ONE_STAGE)),
        levels=dict(fgd_fpn=5), init_student=True, clip=CLIP, epochs=12, lr=0.01),
    'fgd/fgd_faster-rcnn_r101-fpn_faster-rcnn_r50-fpn_2x_coco.py': dict(
        student='FasterRCNN', teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
        ckpt='faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
        losses=dict(fgd_fpn=dict(student=P2_P5, teacher=P2_P5, **FGD_TWO_STAGE)),
        levels=dict(fgd_fpn=4), init_student=True, clip=CLIP, epochs=24, lr=0.02),
    'fgd/fgd_cascade-mask-rcnn_x101-32x4d-dconv-c3-c5-fpn_faster-rcnn_r50-fpn_2x_coco.py': dict(
        student='FasterRCNN', teacher=CASCADE, ckpt=CASCADE_CKPT,
        losses=dict(fgd_fpn=dict(student=P2_P5, teacher=P2_P5, **FGD_TWO_STAGE)),
        levels=dict(fgd_fpn=4), init_student=False, clip=CLIP, epochs=24, lr=0.02),
    'mgd/mgd_retinanet_x101-64x4d-fpn_retinanet_r50-fpn_2x_coco.py': dict(
        student='RetinaNet', teacher=RETINA_X101, ckpt=RETINA_X101_CKPT,
        losses=dict(mgd_fpn=dict(type='MGDLoss', student='neck', teacher='neck',
                                 student_channels=256, teacher_channels=256, alpha_mgd=2e-5,
                                 lambda_mgd=0.65)),
        levels=dict(mgd_fpn=5), init_student=True, clip=CLIP, epochs=24, lr=0.01),
    'mgd/mgd_cascade-mask-rcnn_x101-32x4d-dconv-c3-c5-fpn_faster-rcnn_r50-fpn_2x_coco.py': dict(
        student='FasterRCNN', teacher=CASCADE, ckpt=CASCADE_CKPT,
        losses=dict(mgd_fpn=dict(type='MGDLoss', student=P2_P5, teacher=P2_P5,
                                 student_channels=256, teacher_channels=256, alpha_mgd=5e-7,
                                 lambda_mgd=0.45)),
        levels=dict(mgd_fpn=4), init_student=False, clip=CLIP, epochs=24, lr=0.02),
    'cwd/cwd_retinanet_x101-64x4d-fpn_retinanet_r50-fpn_2x_coco.py': dict(
        student='RetinaNet', teacher=RETINA_X101, ckpt=RETINA_X101_CKPT,
        losses=dict(cwd_fpn=dict(type='CWDLoss', student=P2_P5, teacher=P2_P5, tau=1.0,
                                 loss_weight=5.0)),
        levels=dict(cwd_fpn=4), init_student=False, clip=None, epochs=24, lr=0.01),
    'cwd/cwd_gfl_r101-fpn_gfl_r50-fpn_1x_coco.py': dict(
        student='GFL', teacher=GFL_R101, ckpt=GFL_R101_CKPT,
        losses=dict(cwd_cls_head=dict(type='CWDLoss', student='bbox_head.gfl_cls',
                                      teacher='bbox_head.gfl_cls', tau=1.0, loss_weight=5.0)),
        levels=dict(cwd_cls_head=5), init_student=False, clip=None, epochs=12, lr=0.01),
    'ld/ld_gfl_r101-fpn_gfl_r18-fpn_1x_coco.py': dict(
        student='GFL', teacher=GFL_R101, ckpt=GFL_R101_CKPT, backbone='torchvision://resnet18',
        losses=dict(ld_bbox_head=dict(type='LDLoss', student=GFL_SCALES, teacher=GFL_SCALES,
                                      loss_weight=0.25, T=10, reg_max=16)),
        levels=dict(ld_bbox_head=5), init_student=False, clip=None, epochs=12, lr=0.01),
    'crosskd/crosskd_gfl_r101-fpn_gfl_r50-fpn_1x_coco.py': dict(
        student='GFL', teacher=GFL_R101, ckpt=GFL_R101_CKPT,
        losses=dict(crosskd=dict(
            type='CrossKDLoss', student=GFL_HOLDS,
            teacher=GFL_HOLDS + ['bbox_head.gfl_cls'] + GFL_SCALES,
            cls_branch=['bbox_head.cls_convs.2.activate', 'bbox_head.cls_convs.3',
                        'bbox_head.gfl_cls'],
            reg_branch=['bbox_head.reg_convs.2.activate', 'bbox_head.reg_convs.3',
                        'bbox_head.gfl_reg', 'bbox_head.scales'],
            cls_weight=1.0, reg_weight=3.0, bbox_weight=2.0, beta=1.0, T=1.0, reg_max=16)),
        levels=dict(crosskd=1), init_student=False, clip=None, epochs=12, lr=0.01),
}


def _load(name: str) -> Config:
    return Config.fromfile(os.path.join(ROOT, 'configs', name))


def _student_cfg(cfg: Config) -> ConfigDict:
    student = copy.deepcopy(cfg.model.student)
    student.backbone.init_cfg = None  # no download of the pretrained backbone
    return student


def test_every_config_has_a_recipe():
    assert NAMES, 'no configs found under configs/{fgd,mgd,cwd,ld,crosskd}'
    assert sorted(NAMES) == sorted(RECIPES)


@pytest.mark.parametrize('name', NAMES)
def test_config_loads_as_distill_detector(name):
    cfg = _load(name)
    check_distill_config(cfg, name, 'DistillDetector', MODELS)
    # the student comes from the mmdet base and keeps its pretrained backbone init
    assert cfg.model.student.backbone.init_cfg.checkpoint == \
        RECIPES[name].get('backbone', 'torchvision://resnet50')
    assert cfg.train_dataloader.dataset.type == 'CocoDataset'


@pytest.mark.parametrize('name', NAMES)
def test_losses_are_registered_and_buildable(name):
    for key, entry in _load(name).model.distill_losses.items():
        # the hyperparameters are arguments of the loss (the wrapper passes them through)
        loss_cls, kwargs = loss_kwargs(key, entry)
        for arg in getattr(loss_cls, 'channel_args', None) or ():
            kwargs.setdefault(arg, 256)
        for arg in contract(loss_cls).module_args:
            # module paths, resolved in the teacher by the wrapper (test_distill_step_...)
            assert all(isinstance(p, str) for p in kwargs[arg]), arg
            kwargs[arg] = [torch.nn.Identity()]
        loss_cls(**kwargs)


@pytest.mark.parametrize('name', NAMES)
def test_teacher_config_resolves(name):
    cfg = _load(name)
    teacher = model_config(load_teacher_config(cfg.model.teacher.config, 'model.teacher.config'))
    assert MODELS.get(teacher['type']) is not None
    student = cfg.model.student
    # FPN taps pair level by level: same width and number of levels on both sides
    assert teacher['neck']['out_channels'] == student.neck.out_channels == 256
    assert teacher['neck']['num_outs'] == student.neck.num_outs
    # both see the inputs normalised the same way
    assert plain(teacher['data_preprocessor'])['mean'] == student.data_preprocessor.mean
    assert plain(teacher['data_preprocessor'])['std'] == student.data_preprocessor.std
    if cfg.model.get('init_student', False):
        # inheriting copies the teacher's neck and heads: they must be the student's
        heads = [k for k in ('neck', 'bbox_head', 'rpn_head', 'roi_head') if k in student]
        for key in heads:
            assert plain(teacher[key]) == plain(student[key]), key


@pytest.mark.parametrize('name', NAMES)
def test_student_builds_and_taps_exist(name):
    cfg = _load(name)
    student = MODELS.build(_student_cfg(cfg))
    assert type(student).__name__ == RECIPES[name]['student']
    for key, entry in cfg.model.distill_losses.items():
        taps = entry.student if isinstance(entry.student, (list, tuple)) else [entry.student]
        for spec in taps:
            tap = Tap.parse(spec)
            find_module(student, tap.path, key, 'student')
            if tap.path == 'neck' and tap.index is not None:
                assert tap.index < cfg.model.student.neck.num_outs
        # teacher modules a loss runs (CrossKD): the GFL teachers have the student's head
        for arg in contract(DISTILL_LOSSES.get(entry.type)).module_args:
            for path in entry[arg]:
                find_module(student, path, f'{key}.{arg}', 'teacher')


@pytest.mark.parametrize('name', NAMES)
def test_official_recipe(name):
    cfg, recipe = _load(name), RECIPES[name]
    model = cfg.model
    assert model.teacher.config == recipe['teacher']
    assert os.path.basename(model.teacher.checkpoint) == recipe['ckpt']
    assert plain(model.distill_losses) == plain(recipe['losses'])
    assert model.get('init_student', False) is recipe['init_student']
    assert plain(cfg.optim_wrapper.get('clip_grad')) == recipe['clip']
    assert cfg.optim_wrapper.optimizer.lr == recipe['lr']
    assert cfg.train_cfg.max_epochs == recipe['epochs']


@pytest.mark.parametrize('name', NAMES)
def test_distill_step_with_stand_in_teacher(name, tmp_path):
    """Build the config's DistillDetector with a teacher of the student's architecture and run
    one optimiser step: the taps resolve in real mmdet models, each entry builds one loss
    module per level, and the distillation losses are finite and positive."""
    cfg, recipe = _load(name), RECIPES[name]
    student_cfg = _student_cfg(cfg)
    torch.manual_seed(1)
    stand_in = MODELS.build(student_cfg)
    path = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': stand_in.state_dict()}, path)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.student = student_cfg
    model_cfg.teacher = dict(config=dict(model=student_cfg.to_dict()), checkpoint=path)
    model = MODELS.build(model_cfg)
    assert {k: len(v) for k, v in model.distill_losses.items()} == recipe['levels']
    if recipe['init_student']:
        copied = model.inherit_from_teacher(model.init_student_prefixes)
        assert copied and not any(k.startswith('backbone.') for k in copied)
        assert torch.equal(model.student.neck.fpn_convs[0].conv.weight,
                           model.teacher.model.neck.fpn_convs[0].conv.weight)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    log = model.train_step(det_batch(n=2, size=(96, 128), num_classes=80), optim)
    for key in recipe['losses']:
        assert torch.isfinite(log[f'loss_{key}']) and log[f'loss_{key}'] > 0, key
    assert all(p.grad is None for p in model.teacher.model.parameters())
