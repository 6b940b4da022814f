"""The shipped mmseg distillation configs: configs/{cwd,mgd}/*cityscapes*.py.

For every config: it loads with ``mmengine.Config.fromfile`` (its ``mmseg::`` bases resolve), wraps
its student in a ``DistillSegmentor``, names registered losses with the official hyperparameters,
resolves its teacher config, builds its student, taps modules that exist in it, and keeps the
official schedule and crop. The last test builds the whole ``DistillSegmentor`` of each config with
the real PSPNet R101-d8 teacher (random weights, one checkpoint shared by all configs), so the
build-time dry run checks the taps, channel counts (512 -> 2048 for MGD) and logit map sizes of the
real models (about 3 s per config on a CPU).
"""
import copy
import glob
import os

import pytest
import torch

mmseg = pytest.importorskip('mmseg')

from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from mmdistill.recorder import Tap, find_module  # noqa: E402
from mmdistill.teacher import load_teacher_config, model_config  # noqa: E402

from tests.conftest import use_scope  # noqa: E402
from tests.test_configs.common import check_distill_config, loss_kwargs, plain, taps  # noqa: E402

_scope = use_scope('mmseg')

register_all_modules()

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(p for m in ('cwd', 'mgd')
                 for p in glob.glob(os.path.join(ROOT, 'configs', m, '*cityscapes*.py')))
NAMES = [os.path.relpath(p, os.path.join(ROOT, 'configs')) for p in CONFIGS]

PSP_R101_80K = 'mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py'
PSP_R101_80K_CKPT = 'pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'
PSP_R101_40K = 'mmseg::pspnet/pspnet_r101-d8_4xb2-40k_cityscapes-512x1024.py'
PSP_R101_40K_CKPT = 'pspnet_r101-d8_512x1024_40k_cityscapes_20200604_232751-467e7cf4.pth'
LOGITS = dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg')
MGD_LAST_STAGE = dict(type='MGDLoss', student='backbone[3]', teacher='backbone[3]',
                      student_channels=512, teacher_channels=2048, alpha_mgd=2e-5,
                      lambda_mgd=0.75)

# The official recipes (see each config's header for its source): student type and decode head,
# teacher config and checkpoint file, loss entries, schedule (iterations, lr, crop).
RECIPES = {
    # mmrazor cwd_logits_pspnet_r101_d8_pspnet_r18_d8_512x1024_cityscapes_80k.py
    'cwd/cwd_pspnet-r101-d8_pspnet-r18-d8_80k_cityscapes-512x1024.py': dict(
        head='PSPHead', teacher=PSP_R101_80K, ckpt=PSP_R101_80K_CKPT,
        losses=dict(cwd_logits=dict(type='CWDLoss', tau=1.0, loss_weight=5.0, **LOGITS)),
        iters=80000, lr=0.01, crop=(512, 1024)),
    # yzd-v/MGD psp_r101_distill_psp_r18_40k_512x512_city.py (use_logit=True: + CWD tau 4, w 3)
    'mgd/mgd_pspnet-r101-d8_pspnet-r18-d8_40k_cityscapes-512x512.py': dict(
        head='PSPHead', teacher=PSP_R101_40K, ckpt=PSP_R101_40K_CKPT,
        losses=dict(mgd_fea=MGD_LAST_STAGE,
                    cwd_logits=dict(type='CWDLoss', tau=4.0, loss_weight=3.0, **LOGITS)),
        iters=40000, lr=0.01, crop=(512, 512)),
    # yzd-v/MGD psp_r101_distill_deepv3_r18_40k_512x512_city.py (PSPNet teacher)
    'mgd/mgd_pspnet-r101-d8_deeplabv3-r18-d8_40k_cityscapes-512x512.py': dict(
        head='ASPPHead', teacher=PSP_R101_40K, ckpt=PSP_R101_40K_CKPT,
        losses=dict(mgd_fea=MGD_LAST_STAGE,
                    cwd_logits=dict(type='CWDLoss', tau=4.0, loss_weight=3.0, **LOGITS)),
        iters=40000, lr=0.01, crop=(512, 512)),
}


def _load(name: str) -> Config:
    return Config.fromfile(os.path.join(ROOT, 'configs', name))


def _no_download(model: ConfigDict) -> ConfigDict:
    model = copy.deepcopy(model)
    model.pretrained = None  # no download of the ImageNet backbone
    model.backbone.init_cfg = None
    return model


def test_every_config_has_a_recipe():
    assert NAMES, 'no Cityscapes configs found under configs/{cwd,mgd}'
    assert sorted(NAMES) == sorted(RECIPES)


@pytest.mark.parametrize('name', NAMES)
def test_config_loads_as_distill_segmentor(name):
    cfg = _load(name)
    check_distill_config(cfg, name, 'DistillSegmentor', MODELS)
    model = cfg.model
    # the student comes from the mmseg base: ImageNet ResNet-18 V1c, SyncBN, 19 classes
    assert model.student.type == 'EncoderDecoder'
    assert model.student.pretrained == 'open-mmlab://resnet18_v1c'
    assert model.student.backbone.depth == 18
    assert model.student.backbone.norm_cfg.type == 'SyncBN'
    assert model.student.decode_head.num_classes == 19
    assert cfg.train_dataloader.dataset.type == 'CityscapesDataset'


@pytest.mark.parametrize('name', NAMES)
def test_losses_are_registered_and_buildable(name):
    for key, entry in _load(name).model.distill_losses.items():
        loss_cls, kwargs = loss_kwargs(key, entry)
        loss_cls(**kwargs)


@pytest.mark.parametrize('name', NAMES)
def test_official_recipe(name):
    cfg, recipe = _load(name), RECIPES[name]
    model = cfg.model
    assert model.teacher.config == recipe['teacher']
    assert os.path.basename(model.teacher.checkpoint) == recipe['ckpt']
    assert plain(model.distill_losses) == plain(recipe['losses'])
    assert not model.get('init_student', False)
    assert cfg.optim_wrapper.get('clip_grad') is None
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.lr == recipe['lr']
    assert cfg.train_cfg.max_iters == recipe['iters']
    (poly, ) = cfg.param_scheduler
    assert poly.type == 'PolyLR' and poly.end == recipe['iters'] and poly.power == 0.9
    assert cfg.train_dataloader.batch_size == 2
    crops = [t.crop_size for t in cfg.train_dataloader.dataset.pipeline
             if t.type == 'RandomCrop']
    assert crops == [recipe['crop']]
    assert tuple(model.student.data_preprocessor.size) == recipe['crop']


@pytest.mark.parametrize('name', NAMES)
def test_teacher_config_resolves(name):
    cfg = _load(name)
    teacher = model_config(load_teacher_config(cfg.model.teacher.config, 'model.teacher.config'))
    assert MODELS.get(teacher['type']) is not None
    student = cfg.model.student
    assert teacher['backbone']['depth'] == 101
    assert teacher['decode_head']['type'] == 'PSPHead'
    # logits pair class by class, at the same output stride (both d8: dilated stages 3 and 4)
    assert teacher['decode_head']['num_classes'] == student.decode_head.num_classes == 19
    assert tuple(teacher['backbone']['strides']) == tuple(student.backbone.strides)
    assert tuple(teacher['backbone']['dilations']) == tuple(student.backbone.dilations)
    # both see the inputs normalised the same way
    assert plain(teacher['data_preprocessor'])['mean'] == student.data_preprocessor.mean
    assert plain(teacher['data_preprocessor'])['std'] == student.data_preprocessor.std


@pytest.mark.parametrize('name', NAMES)
def test_student_builds_and_taps_exist(name):
    cfg = _load(name)
    student = MODELS.build(_no_download(cfg.model.student))
    assert type(student).__name__ == 'EncoderDecoder'
    assert type(student.decode_head).__name__ == RECIPES[name]['head']
    for key, entry in cfg.model.distill_losses.items():
        for spec in taps(entry.student):
            tap = Tap.parse(spec)
            find_module(student, tap.path, key, 'student')
            if tap.path == 'backbone' and tap.index is not None:
                assert tap.index < len(student.backbone.out_indices)
    # the channel counts the MGD entries declare are the student's
    student.eval()
    with torch.no_grad():
        feats = student.backbone(torch.zeros(1, 3, 32, 32))
    for entry in cfg.model.distill_losses.values():
        if entry.type == 'MGDLoss':
            assert feats[Tap.parse(entry.student).index].shape[1] == entry.student_channels


@pytest.fixture(scope='module')
def r101_teacher_ckpt(tmp_path_factory):
    """A PSPNet R101-d8 Cityscapes teacher with random weights (both teacher configs of the
    recipes build this same architecture)."""
    cfg = model_config(load_teacher_config(PSP_R101_80K, 'teacher'))
    assert plain(cfg) == plain(model_config(load_teacher_config(PSP_R101_40K, 'teacher')))
    torch.manual_seed(0)
    # a module fixture runs before the function-scoped scope fixture: name the scope here
    with DefaultScope.overwrite_default_scope('mmseg'):
        teacher = MODELS.build(_no_download(ConfigDict(cfg)))
    path = str(tmp_path_factory.mktemp('seg_configs') / 'pspnet_r101.pth')
    torch.save({'state_dict': teacher.state_dict()}, path)
    return path


@pytest.mark.parametrize('name', NAMES)
def test_distill_segmentor_builds_with_real_teacher(name, r101_teacher_ckpt):
    """The config's DistillSegmentor builds with its real R101 teacher: the dry run finds every
    tap, the MGD channels (512 -> 2048) match, the logit maps have the same size and classes."""
    cfg = _load(name)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.student = _no_download(model_cfg.student)
    model_cfg.teacher.checkpoint = r101_teacher_ckpt
    model_cfg.dry_run_shape = (64, 64)
    model = MODELS.build(model_cfg)
    assert sorted(model.distill_losses) == sorted(RECIPES[name]['losses'])
    # logit taps: the teacher runs up to its decode head
    assert model.teacher.scope == 'full'
    assert all(len(v) == 1 for v in model.distill_losses.values())
    if 'mgd_fea' in model.distill_losses:
        align = model.distill_losses['mgd_fea'][0].align
        assert (align.in_channels, align.out_channels) == (512, 2048)
    assert not any(p.requires_grad for p in model.teacher.model.parameters())
    assert not any(k.startswith('teacher.') for k in model.state_dict())
