"""The loss contract: every registered loss declares it, and a new loss defined here, outside
the package, works with all three wrappers without any change to the core."""
import copy
import importlib
import inspect

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

import mmdistill  # noqa: F401
from mmdistill.losses.base import KNOWN_INPUTS, DistillLoss, contract
from mmdistill.registry import DISTILL_LOSSES
from tests.utils import (cls_batch, det_batch, save_teacher, seg_batch, tiny_classifier,
                         tiny_pspnets, tiny_retinanet)


@pytest.mark.parametrize('name', sorted(DISTILL_LOSSES.module_dict))
def test_registered_losses_declare_the_contract(name):
    loss_cls = DISTILL_LOSSES.get(name)
    if name.startswith('Toy'):
        pytest.skip('defined by this test file')
    assert issubclass(loss_cls, DistillLoss) and contract(loss_cls) is loss_cls
    params = inspect.signature(loss_cls.__init__).parameters
    assert 'loss_weight' not in params  # the wrapper applies the entry's loss_weight
    assert set(loss_cls.extra_inputs) <= set(KNOWN_INPUTS)
    for arg in (loss_cls.channel_args or ()) + tuple(loss_cls.module_args) + (
            (loss_cls.dataset_size_arg, ) if loss_cls.dataset_size_arg else ()):
        assert arg in params, arg


def test_a_plain_module_gets_the_defaults():
    assert contract(nn.MSELoss) is DistillLoss
    assert (DistillLoss.extra_inputs, DistillLoss.takes_all_levels, DistillLoss.channel_args,
            DistillLoss.same_shape, DistillLoss.module_args) == ((), False, None, True, {})


@DISTILL_LOSSES.register_module(force=True)
class ToyAbsLoss(DistillLoss):
    """mean |align(S) - T|: an align layer from the declared channel arguments."""

    channel_args = ('student_channels', 'teacher_channels')

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.align = nn.Conv2d(student_channels, teacher_channels, 1) \
            if student_channels != teacher_channels else nn.Identity()

    def forward(self, preds_S, preds_T):
        return (self.align(preds_S) - preds_T).abs().mean()


@DISTILL_LOSSES.register_module(force=True)
class ToyBoxLoss(DistillLoss):
    """Needs the boxes: only DistillDetector can give them."""

    extra_inputs = ('gt_bboxes', )
    same_shape = False

    def forward(self, preds_S, preds_T, gt_bboxes):
        return preds_S.mean() * 0 + float(sum(len(b) for b in gt_bboxes))


def _build(lib, wrapper, student, teacher, losses, tmp_path, **kwargs):
    importlib.import_module(f'{lib}.utils').register_all_modules(init_default_scope=False)
    registry = importlib.import_module(f'{lib}.registry').MODELS
    from mmengine.registry import DefaultScope
    path = str(tmp_path / 'teacher.pth')
    save_teacher(teacher, path, scope=lib)
    with DefaultScope.overwrite_default_scope(lib):
        model = registry.build(dict(type=wrapper, student=student,
                                    teacher=dict(config=dict(model=teacher), checkpoint=path),
                                    distill_losses=losses, **kwargs))
    model.init_weights()
    return model


CASES = {
    'det': ('mmdet', 'DistillDetector', lambda: (tiny_retinanet(16, 32), tiny_retinanet(32, 48)),
            'neck', det_batch, 5, (32, 48), {}),
    'seg': ('mmseg', 'DistillSegmentor', tiny_pspnets, 'backbone[3]', seg_batch, 1, (128, 256),
            {}),
    'cls': ('mmpretrain', 'DistillClassifier', lambda: (tiny_classifier(8), tiny_classifier(16)),
            'backbone[-1]', cls_batch, 1, (64, 128), dict(dry_run_shape=(32, 32))),
}


@pytest.mark.parametrize('task', list(CASES))
def test_toy_loss_trains_with_every_wrapper(task, tmp_path):
    lib, wrapper, models, tap, batch, levels, (cs, ct), kwargs = CASES[task]
    pytest.importorskip(lib)
    student, teacher = models()
    model = _build(lib, wrapper, student, teacher,
                   dict(toy=dict(type='ToyAbsLoss', student=tap, teacher=tap, loss_weight=3.0,
                                 student_channels=cs, teacher_channels=ct)),
                   tmp_path, **kwargs)
    modules = model.distill_losses['toy']
    assert len(modules) == levels
    assert all(isinstance(m.align, nn.Conv2d) for m in modules)  # channels differ: filled in
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    teacher_before = copy.deepcopy(model.teacher.model.state_dict())
    align_before = modules[0].align.weight.detach().clone()
    model.train()
    log = model.train_step(batch(), optim)
    assert torch.isfinite(log['loss_toy']) and log['loss_toy'] > 0
    assert not torch.equal(modules[0].align.weight, align_before)  # trained with the student
    assert all(torch.equal(v, teacher_before[k])
               for k, v in model.teacher.model.state_dict().items())


def test_toy_loss_value_is_weighted_by_the_wrapper(tmp_path):
    pytest.importorskip('mmpretrain')
    model = _build('mmpretrain', 'DistillClassifier', tiny_classifier(8),
                   tiny_classifier(8),
                   dict(toy=dict(type='ToyAbsLoss', student='backbone[-1]',
                                 teacher='backbone[-1]', loss_weight=3.0)),
                   tmp_path, dry_run_shape=(32, 32))
    model.eval()
    data = model.data_preprocessor(cls_batch(), False)
    with torch.no_grad():
        losses = model.loss(**data)
        fs = model.student.backbone(data['inputs'])[-1]
        ft = model.teacher.model.backbone(data['inputs'])[-1]
    torch.testing.assert_close(losses['loss_toy'], 3.0 * (fs - ft).abs().mean())


def test_undeliverable_input_fails_at_build(tmp_path):
    pytest.importorskip('mmpretrain')
    with pytest.raises(ValueError, match=r"distill_losses.box: ToyBoxLoss needs \['gt_bboxes'\]"):
        _build('mmpretrain', 'DistillClassifier', tiny_classifier(8), tiny_classifier(16),
               dict(box=dict(type='ToyBoxLoss', student='backbone[-1]',
                             teacher='backbone[-1]')), tmp_path, dry_run_shape=(32, 32))


def test_a_loss_naming_modules_the_models_lack_is_refused(tmp_path):
    """SDD on a detector: its classifier path resolves in neither model."""
    pytest.importorskip('mmdet')
    with pytest.raises(ValueError, match=r"sdd.classifier.*'head.fc'"):
        _build('mmdet', 'DistillDetector', tiny_retinanet(16, 32), tiny_retinanet(16, 32),
               dict(sdd=dict(type='SDDLoss', student='backbone[3]', teacher='backbone[3]',
                             classifier='head.fc')), tmp_path)


def test_a_loss_taking_loss_weight_is_refused():
    from mmdistill.entries import parse_entry

    @DISTILL_LOSSES.register_module(force=True)
    class ToyWeightedLoss(DistillLoss):  # the wrapper applies loss_weight, not the loss
        def __init__(self, loss_weight: float = 1.0):
            super().__init__()

    with pytest.raises(TypeError, match='takes loss_weight, which the wrapper applies'):
        parse_entry('w', dict(type='ToyWeightedLoss', student='neck', teacher='neck'))


def test_teacher_is_shared_by_deepcopy(tmp_path):
    """mmengine's EMAHook deep-copies the model: the frozen teacher is not duplicated."""
    pytest.importorskip('mmpretrain')
    model = _build('mmpretrain', 'DistillClassifier', tiny_classifier(8), tiny_classifier(8),
                   dict(toy=dict(type='ToyAbsLoss', student='backbone[-1]',
                                 teacher='backbone[-1]')), tmp_path, dry_run_shape=(32, 32))
    twin = copy.deepcopy(model)
    assert twin.teacher is model.teacher and twin.teacher.model is model.teacher.model
    assert twin.student is not model.student
