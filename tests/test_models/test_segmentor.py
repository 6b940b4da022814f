"""DistillSegmentor on tiny real mmseg PSPNets (CPU)."""
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper

from tests.utils import save_teacher, seg_batch, tiny_pspnets

pytest.importorskip('mmseg')

from mmseg.registry import MODELS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401

from tests.conftest import use_scope  # noqa: E402

_scope = use_scope('mmseg')

register_all_modules()

CWD = dict(type='CWDLoss', student='decode_head.conv_seg', teacher='decode_head.conv_seg',
           tau=1.0, loss_weight=5.0)
MGD = dict(type='MGDLoss', student='backbone[3]', teacher='backbone[3]', student_channels=128,
           teacher_channels=256, alpha_mgd=2e-5, lambda_mgd=0.75)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    student, teacher = tiny_pspnets()
    path = str(tmp_path_factory.mktemp('seg') / 'teacher.pth')
    save_teacher(teacher, path, scope='mmseg')
    return student, teacher, path


def build(models, losses=None, student=None, teacher=None, **kwargs):
    s, t, path = models
    model = MODELS.build(dict(type='DistillSegmentor', student=student or s,
                              teacher=dict(config=dict(model=teacher or t), checkpoint=path),
                              distill_losses=losses or dict(cwd=CWD, mgd=MGD), **kwargs))
    model.init_weights()
    return model


def test_train_step_updates_student_only(models):
    model = build(models)
    assert model.teacher.scope == 'full'
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)))
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert not in_optim & {id(p) for p in model.teacher.model.parameters()}
    teacher_before = copy.deepcopy(model.teacher.model.state_dict())
    student_before = copy.deepcopy(model.student.state_dict())
    model.train()
    log = model.train_step(seg_batch(), optim)
    for name in ('loss_cwd', 'loss_mgd', 'decode.loss_ce', 'aux.loss_ce'):
        assert name in log and torch.isfinite(log[name]) and log[name] > 0, name
    assert not model.teacher.model.training
    for k, v in model.teacher.model.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    changed = {k.split('.')[0] for k, v in model.student.state_dict().items()
               if not torch.equal(v, student_before[k])}
    assert {'backbone', 'decode_head', 'auxiliary_head'} <= changed
    assert all(p.grad is None for p in model.teacher.model.parameters())
    assert not any(k.startswith('teacher.') for k in model.state_dict())


def test_cwd_on_logits_equals_loss_on_recorded_maps(models):
    """The logged CWD loss is the loss on the two models' conv_seg outputs."""
    from mmdistill.losses.cwd import CWDLoss
    model = build(models, dict(cwd=CWD))
    model.eval()  # dropout off: the recorded maps equal a fresh forward
    data = model.data_preprocessor(seg_batch(), True)
    with torch.no_grad():
        losses = model.loss(**copy.deepcopy(data))
        s_logits = model.student.decode_head(model.student.extract_feat(data['inputs']))
        t_logits = model.teacher.model.decode_head(
            model.teacher.model.extract_feat(data['inputs']))
    ref = 5.0 * CWDLoss(tau=1.0)(s_logits, t_logits)
    torch.testing.assert_close(losses['loss_cwd'], ref, rtol=1e-5, atol=0)


def test_gradients_reach_student_not_teacher(models):
    model = build(models, dict(cwd=CWD))
    model.train()
    losses = model.loss(**model.data_preprocessor(seg_batch(), True))
    losses['loss_cwd'].backward()
    assert all(p.grad is None for p in model.teacher.model.parameters())
    assert model.student.decode_head.conv_seg.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.student.auxiliary_head.parameters())


def test_predict_matches_stock_student(models):
    model = build(models)
    model.eval()
    data = model.data_preprocessor(seg_batch(), False)
    with torch.no_grad():
        ours = model.predict(**copy.deepcopy(data))
        ref = model.student.predict(*copy.deepcopy(data).values())
    assert type(ours[0]).__name__ == 'SegDataSample'
    for a, b in zip(ours, ref):
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
        assert torch.equal(a.seg_logits.data, b.seg_logits.data)


def test_class_count_mismatch_rejected(models, tmp_path):
    _, teacher, _ = models
    teacher = copy.deepcopy(teacher)
    teacher['decode_head']['num_classes'] = 19
    teacher['auxiliary_head']['num_classes'] = 19
    path = str(tmp_path / 't19.pth')
    save_teacher(teacher, path, scope='mmseg')
    with pytest.raises(ValueError) as err:
        build((models[0], teacher, path), dict(cwd=CWD))
    msg = str(err.value)
    assert 'model.distill_losses.cwd' in msg and '11 classes' in msg and '19' in msg


def test_output_stride_mismatch_needs_resize(models, tmp_path):
    _, teacher, _ = models
    teacher = copy.deepcopy(teacher)  # a d16 teacher: logits half the student's size
    teacher['backbone'].update(dilations=(1, 1, 1, 2), strides=(1, 2, 2, 1))
    path = str(tmp_path / 'd16.pth')
    save_teacher(teacher, path, scope='mmseg')
    with pytest.raises(ValueError, match=r"cwd.*differ in size.*resize='teacher_to_student'"):
        build((models[0], teacher, path), dict(cwd=CWD))
    model = build((models[0], teacher, path),
                  dict(cwd=dict(CWD, resize='teacher_to_student')))
    model.train()
    losses = model.loss(**model.data_preprocessor(seg_batch(), True))
    assert torch.isfinite(losses['loss_cwd'])


@pytest.mark.parametrize('losses,words', [
    (dict(cwd=dict(CWD, student='decode_head.conv_sag')),
     ['model.distill_losses.cwd.student', 'conv_sag', 'decode_head.conv_seg']),
    (dict(mgd=dict(MGD, teacher='backbone[4]')),
     ['model.distill_losses.mgd.teacher', 'backbone[4]', 'returns 4 outputs']),
    (dict(mgd=dict(MGD, student_channels=None, teacher_channels=None)),
     ['model.distill_losses.mgd', '128 channels', '256']),
    (dict(fgd=dict(type='FGDLoss', student='backbone[3]', teacher='backbone[3]',
                   student_channels=128, teacher_channels=256)),
     ['model.distill_losses.fgd', "needs ['gt_bboxes'", 'DistillSegmentor']),
])
def test_bad_config_rejected(models, losses, words):
    with pytest.raises((ValueError, IndexError)) as err:
        build(models, losses)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
