"""The shipped PKD configs: configs/pkd/*_coco.py.

Each loads with its ``mmdet::`` bases, names PKD on the student's neck, keeps the official recipe,
and runs one distillation step with a randomly initialised teacher of the config's real teacher
architecture (FCOS X101 for the RetinaNet and FCOS students, R101 Faster R-CNN, RTMDet-m): the
heterogeneous pairs' taps resolve, levels pair one to one, channels align where they differ.
"""
import copy
import glob
import os

import pytest
import torch

mmdet = pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from mmdistill.teacher import load_teacher_config, model_config  # noqa: E402
from tests.conftest import ROOT, use_scope  # noqa: E402
from tests.test_configs.common import check_distill_config, loss_kwargs, plain  # noqa: E402
from tests.utils import det_batch  # noqa: E402

_scope = use_scope('mmdet')
register_all_modules()

CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', 'pkd', '*_coco.py')))
NAMES = [os.path.relpath(p, os.path.join(ROOT, 'configs')) for p in CONFIGS]
FCOS_X101 = 'mmdet::fcos/fcos_x101-64x4d_fpn_gn-head_ms-640-800-2x_coco.py'
PKD6 = dict(type='PKDLoss', student='neck', teacher='neck', loss_weight=6.0, resize_stu=True)

# student type, teacher type and config, entries, levels per entry, inheriting, epochs, lr
RECIPES = {
    'pkd/pkd_fcos_x101-64x4d-fpn_retinanet_r50-fpn_1x_coco.py': dict(
        student='RetinaNet', teacher='FCOS', teacher_cfg=FCOS_X101, losses=dict(pkd_fpn=PKD6),
        levels=dict(pkd_fpn=5), init_student=False, epochs=12, lr=0.01),
    'pkd/pkd_fcos_x101-64x4d-fpn_fcos_r50-caffe-fpn-gn-head_1x_coco.py': dict(
        student='FCOS', teacher='FCOS', teacher_cfg=FCOS_X101, losses=dict(pkd_fpn=PKD6),
        levels=dict(pkd_fpn=5), init_student=True, epochs=12, lr=0.01),
    'pkd/pkd_faster-rcnn_r101-fpn_faster-rcnn_r50-fpn_2x_coco.py': dict(
        student='FasterRCNN', teacher='FasterRCNN',
        teacher_cfg='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
        losses=dict(pkd_fpn=PKD6), levels=dict(pkd_fpn=5), init_student=True, epochs=24,
        lr=0.02),
    'pkd/pkd_rtmdet_m_rtmdet_s_300e_coco.py': dict(
        student='RTMDet', teacher='RTMDet', teacher_cfg='mmdet::rtmdet/rtmdet_m_8xb32-300e_coco.py',
        losses=dict(pkd_neck=dict(type='PKDLoss', student='neck', teacher='neck',
                                  student_channels=128, teacher_channels=192, loss_weight=1.0,
                                  resize_stu=True,
                                  weight_schedule=dict(stop=280, by_epoch=True))),
        levels=dict(pkd_neck=3), init_student=False, epochs=300, lr=0.004),
}


def _load(name: str) -> Config:
    return Config.fromfile(os.path.join(ROOT, 'configs', name))


def _no_download(cfg):
    cfg = copy.deepcopy(cfg)
    cfg['backbone']['init_cfg'] = None
    return cfg


def test_every_config_has_a_recipe():
    assert sorted(NAMES) == sorted(RECIPES)


@pytest.mark.parametrize('name', NAMES)
def test_official_recipe(name):
    cfg, recipe = _load(name), RECIPES[name]
    check_distill_config(cfg, name, 'DistillDetector', MODELS)
    assert cfg.model.teacher.config == recipe['teacher_cfg']
    assert plain(cfg.model.distill_losses) == plain(recipe['losses'])
    assert cfg.model.get('init_student', False) is recipe['init_student']
    assert cfg.train_cfg.max_epochs == recipe['epochs']
    assert cfg.optim_wrapper.optimizer.lr == recipe['lr']
    for key, entry in cfg.model.distill_losses.items():
        loss_cls, kwargs = loss_kwargs(key, entry, options=('weight_schedule', ))
        loss_cls(**kwargs)


@pytest.mark.parametrize('name', NAMES)
def test_distill_step_with_the_real_teacher_architecture(name, tmp_path):
    """One optimiser step with a random-weight teacher of the config's teacher architecture."""
    cfg, recipe = _load(name), RECIPES[name]
    student_cfg = _no_download(cfg.model.student)
    teacher_cfg = _no_download(model_config(load_teacher_config(recipe['teacher_cfg'], 'teacher')))
    torch.manual_seed(1)
    teacher = MODELS.build(teacher_cfg)
    assert type(teacher).__name__ == recipe['teacher']
    path = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, path)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.student = student_cfg
    model_cfg.teacher = dict(config=dict(model=teacher_cfg), checkpoint=path)
    model_cfg.dry_run_shape = (64, 64)
    model = MODELS.build(model_cfg)
    assert type(model.student).__name__ == recipe['student']
    assert {k: len(v) for k, v in model.distill_losses.items()} == recipe['levels']
    if recipe['init_student']:
        copied = model.inherit_from_teacher(model.init_student_prefixes)
        assert copied and not any(k.startswith('backbone.') for k in copied)
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01)))
    model.train()
    log = model.train_step(det_batch(n=2, size=(64, 96), num_classes=80), optim)
    for key in recipe['losses']:
        assert torch.isfinite(log[f'loss_{key}']) and log[f'loss_{key}'] > 0, key
    assert all(p.grad is None for p in model.teacher.model.parameters())
