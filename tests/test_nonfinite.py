"""Non-finite numbers: the teacher checked at build, a non-finite step stopped (or skipped) before
the optimizer, with the entry, level and input named; the last checkpoint stays good."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.optim import build_optim_wrapper

pytest.importorskip('mmpretrain')

from mmdistill.engine import DistillRunner  # noqa: E402
from mmdistill.engine.loops import train_step_or_skip  # noqa: E402
from mmdistill.nonfinite import NonFiniteGuard, NonFiniteLossError, SkippedStep  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402
from tests.utils import (cls_batch, save_teacher, tiny_classifier,  # noqa: E402
                         tiny_distill_classifier, tiny_distill_classifier_config)

KD = dict(type='KDLoss', student='head', teacher='head', temperature=4.0)
FEAT = dict(type='CosineLoss', student='backbone[-1]', teacher='backbone[-1]', pool=True,
            student_channels=64, teacher_channels=128)


def _teacher(tmp_path, scale_layer: str | None = None, value: float = float('inf')) -> str:
    """A w16 teacher checkpoint; ``scale_layer``'s first weight set to ``value``."""
    path = str(tmp_path / 'teacher.pth')
    save_teacher(tiny_classifier(16), path, scope='mmpretrain')
    if scale_layer is not None:
        ckpt = torch.load(path, weights_only=True)
        ckpt['state_dict'][scale_layer].view(-1)[0] = value
        torch.save(ckpt, path)
    return path


def _state(module: torch.nn.Module) -> dict:
    return copy.deepcopy(module.state_dict())


def _weights(module: torch.nn.Module) -> dict:
    """The parameters (the forward of the failed step still moved BN's running statistics)."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.items())


# ---------------------------------------------------------------------------------- build
def test_a_teacher_with_an_infinite_weight_fails_at_build(tmp_path):
    ckpt = _teacher(tmp_path, 'backbone.layer4.0.conv1.weight')
    with pytest.raises(ValueError, match=r"distill_losses.feat.teacher: the teacher's taps "
                                         r".*backbone\[-1\].* give (nan|inf).* dry run in fp32: "
                                         r"its checkpoint holds inf or nan weights"):
        tiny_distill_classifier(ckpt, dict(feat=FEAT))


def test_a_teacher_overflowing_in_fp16_fails_at_build_and_bf16_builds(tmp_path):
    """Finite in fp32, beyond fp16's 65504 in autocast: an error naming the taps, suggesting
    bf16; the same teacher in bf16 builds."""
    path = str(tmp_path / 'teacher.pth')
    save_teacher(tiny_classifier(16), path, scope='mmpretrain')
    ckpt = torch.load(path, weights_only=True)
    ckpt['state_dict']['backbone.layer4.0.conv1.weight'] *= 1e8
    torch.save(ckpt, path)
    from mmpretrain.registry import MODELS
    cfg = tiny_distill_classifier_config(path, dict(feat=FEAT))
    with pytest.raises(ValueError, match=r"feat.teacher: .* in fp16: it overflows in fp16: set "
                                         r"model.teacher_autocast='bf16'"):
        MODELS.build(dict(cfg, teacher_autocast='fp16'))
    MODELS.build(dict(cfg, teacher_autocast='bf16'))
    MODELS.build(cfg)


def test_non_finite_option_is_checked():
    with pytest.raises(ValueError, match="non_finite.action must be one of"):
        NonFiniteGuard.build('ignore')
    with pytest.raises(ValueError, match='unknown keys'):
        NonFiniteGuard.build(dict(action='skip', max_steps=3))
    assert NonFiniteGuard.build(dict(action='skip', max_in_a_row=2)).max_in_a_row == 2


# ---------------------------------------------------------------------------------- step
def _trained_pair(tmp_path, **kwargs):
    from mmpretrain.registry import MODELS
    model = MODELS.build(dict(tiny_distill_classifier_config(
        _teacher(tmp_path), dict(kd=KD, feat=FEAT)), **kwargs))
    model.init_weights()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9,
                                                           weight_decay=1e-4)))
    model.train()
    model.train_step(cls_batch(), optim)  # one good step: momentum buffers exist
    return model, optim


def test_a_non_finite_teacher_tap_stops_the_step_before_the_optimizer(tmp_path):
    model, optim = _trained_pair(tmp_path)
    with torch.no_grad():  # the teacher overflows at run time
        model.teacher.model.backbone.layer4[0].conv1.weight.view(-1)[0] = float('inf')
    student, momentum = _weights(model.student), copy.deepcopy(optim.optimizer.state_dict())
    with pytest.raises(NonFiniteLossError) as err:
        model.train_step(cls_batch(), optim)
    message = str(err.value)
    assert 'did not reach the optimizer' in message
    assert "loss_feat (model.distill_losses.feat, taps student ['backbone[-1]'], teacher " \
           "['backbone[-1]']) is nan: the teacher's tapped tensor is" in message
    assert "loss_kd (model.distill_losses.kd" in message and 'bf16' in message
    assert _same(student, _weights(model.student))  # weights untouched
    assert str(optim.optimizer.state_dict()) == str(momentum)


def test_a_non_finite_student_names_the_student(tmp_path):
    model, optim = _trained_pair(tmp_path)
    with torch.no_grad():
        model.student.backbone.layer4[0].conv1.weight.view(-1)[0] = float('nan')
    with pytest.raises(NonFiniteLossError) as err:
        model.train_step(cls_batch(), optim)
    message = str(err.value)
    assert "the student's own loss is nan" in message
    assert "loss_feat (model.distill_losses.feat, taps student ['backbone[-1]'], teacher " \
           "['backbone[-1]']) is nan: the student's tapped tensor is nan" in message


def test_a_loss_that_is_not_finite_itself_is_named(tmp_path):
    model, optim = _trained_pair(tmp_path)
    model.entries[0].weight = float('inf')  # finite loss, infinite after weighting
    with pytest.raises(NonFiniteLossError, match=r'loss_kd \(model.distill_losses.kd\) is inf '
                                                 r'only after weighting \(loss_weight inf\)'):
        model.train_step(cls_batch(), optim)


def test_skip_policy_skips_counts_and_stops_after_max_in_a_row(tmp_path):
    model, optim = _trained_pair(tmp_path, non_finite=dict(action='skip', max_in_a_row=2))
    runner = type('Runner', (), dict(model=model, optim_wrapper=optim))()
    good = _state(model.teacher.model)
    with torch.no_grad():
        model.teacher.model.backbone.layer4[0].conv1.weight.view(-1)[0] = float('inf')
    student = _weights(model.student)
    for skipped in (1, 2):
        with pytest.raises(SkippedStep):
            model.train_step(cls_batch(), optim)
        assert model.non_finite.skipped == skipped
    assert _same(student, _weights(model.student))
    model.teacher.model.load_state_dict(good)  # a finite step resets the count
    assert train_step_or_skip(runner, cls_batch()) and model.non_finite.in_a_row == 0
    with torch.no_grad():
        model.teacher.model.backbone.layer4[0].conv1.weight.view(-1)[0] = float('inf')
    assert train_step_or_skip(runner, cls_batch()) == {}  # the loop goes on
    assert train_step_or_skip(runner, cls_batch()) == {}
    with pytest.raises(NonFiniteLossError, match='3 non-finite steps in a row'):
        train_step_or_skip(runner, cls_batch())
    assert model.non_finite.skipped == 4


# ---------------------------------------------------------------------------------- runner
@HOOKS.register_module(force=True)
class PoisonHook(Hook):
    """Sets a student weight to nan before iteration ``at`` (1-based)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 == self.at:
            with torch.no_grad():
                runner.model.student.backbone.layer4[0].conv1.weight.view(-1)[0] = float('nan')


def _runner(tmp_path, hooks, iters=4):
    from tools.experiments.cifar import cifar_config
    model = tiny_distill_classifier_config(_teacher(tmp_path), dict(kd=KD))
    cfg = cifar_config(model, osp.join(SHARED_DATA, 'cifar10'), str(tmp_path / 'run'), iters, 8,
                       0.05, 'nonfinite', progress=False, extra_hooks=hooks)
    cfg['default_hooks']['checkpoint']['interval'] = 1
    cfg['default_hooks']['checkpoint']['max_keep_ckpts'] = 10
    return cfg


def test_a_run_stops_at_the_bad_step_and_its_last_checkpoint_resumes(tmp_path):
    cfg = _runner(tmp_path, [dict(type='PoisonHook', at=3)])
    with pytest.raises(NonFiniteLossError, match='non-finite loss at iteration 3'):
        DistillRunner.from_cfg(Config(cfg)).train()
    ckpts = sorted(glob.glob(osp.join(cfg['work_dir'], 'iter_*.pth')))
    assert [osp.basename(c) for c in ckpts] == ['iter_1.pth', 'iter_2.pth']
    state = torch.load(ckpts[-1], weights_only=False)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    resumed = Config(_runner(tmp_path, []))  # the cause removed: resume from iter_2
    resumed.resume = True
    runner = DistillRunner.from_cfg(resumed)
    runner.train()
    assert runner.iter == 4


def test_an_epoch_based_run_gets_the_loop_that_skips(tmp_path):
    from mmdistill.engine.loops import DistillEpochBasedTrainLoop
    cfg = _runner(tmp_path, [])
    cfg['train_cfg'] = dict(type='EpochBasedTrainLoop', max_epochs=1)
    loop = DistillRunner.from_cfg(Config(cfg)).build_train_loop(cfg['train_cfg'])
    assert type(loop) is DistillEpochBasedTrainLoop
