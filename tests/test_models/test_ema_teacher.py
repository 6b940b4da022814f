"""EMA self-distillation: ``teacher=dict(ema=dict(...))`` on a tiny mmpretrain classifier (CPU).

The teacher is checked against an EMA computed here by hand, step by step, from the student's
weights (float64, not mmengine's ``avg_func``)."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from tests.utils import cls_batch, save_teacher, tiny_classifier

pytest.importorskip('mmpretrain')

from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from mmdistill.export import export_student  # noqa: E402

from tests.conftest import use_scope  # noqa: E402

_scope = use_scope('mmpretrain')

register_all_modules()
KD = dict(type='KDLoss', student='head', teacher='head', temperature=4.0, loss_weight=1.0)
OPTIM = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))


def model_cfg(**ema):
    return dict(type='DistillClassifier', student=tiny_classifier(8),
                teacher=dict(ema=dict(momentum=0.3, **ema)), distill_losses=dict(kd=KD),
                dry_run_shape=(32, 32))


def build(seed=0, **ema):
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg(**ema))
    model.init_weights()
    return model


def steps(model, optim, n, first_batch=0):
    """``n`` training steps; the student's state before each, as the EMA sees it."""
    seen = []
    model.train()
    for i in range(n):
        seen.append({k: v.clone() for k, v in model.student.state_dict().items()})
        model.train_step(cls_batch(seed=first_batch + i), optim)
    return seen


@pytest.mark.parametrize('update_buffers', [False, True])
def test_teacher_is_the_moving_average_of_the_student(update_buffers):
    m = 0.3
    model = build(update_buffers=update_buffers)
    teacher = model.teacher.model
    conv = 'backbone.conv1.weight'
    # built as a copy of the student before init_weights: the first update must copy again
    assert not torch.equal(teacher.state_dict()[conv], model.student.state_dict()[conv])
    optim = build_optim_wrapper(model, OPTIM)
    seen = steps(model, optim, 1)
    for k, v in teacher.state_dict().items():  # step 1 distilled from the initialised student
        assert torch.equal(v, seen[0][k]), k
    seen += steps(model, optim, 3, first_batch=1)
    ref = {k: v.double() for k, v in seen[0].items()}  # by hand, in float64
    for state in seen[1:]:  # update j: (1 - m) * average + m * the student after step j - 1
        ref = {k: (1 - m) * ref[k] + m * w.double() if w.is_floating_point() else ref[k]
               for k, w in state.items()}
    averaged = [n for n, _ in model.student.named_parameters()]
    if update_buffers:
        averaged = [k for k, v in seen[0].items() if v.is_floating_point()]
    for k, v in teacher.state_dict().items():
        if k in averaged:
            torch.testing.assert_close(v.double(), ref[k], rtol=1e-5, atol=1e-6, msg=k)
        elif update_buffers:  # integer buffers (num_batches_tracked): copied by update 1 only
            assert torch.equal(v, seen[0][k]), k
        else:  # buffers follow the student's at each update
            assert torch.equal(v, seen[-1][k]), k
    assert int(model.teacher.ema.steps) == 4
    assert not torch.equal(teacher.state_dict()[conv], model.student.state_dict()[conv])


def test_teacher_stays_out_of_optimizer_parameters_and_grads():
    model = build()
    optim = build_optim_wrapper(model, OPTIM)
    t_ids = {id(p) for p in model.teacher.model.parameters()}
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert t_ids and not t_ids & in_optim
    assert not t_ids & {id(p) for p in model.parameters()}
    assert not any(n.startswith('teacher') for n, _ in model.named_parameters())
    assert not any(p.requires_grad for p in model.teacher.model.parameters())
    steps(model, optim, 2)
    assert not model.teacher.model.training and model.student.training
    assert all(p.grad is None for p in model.teacher.model.parameters())
    model.eval()  # an eval-mode loss (validation) does not move the average
    before = copy.deepcopy(model.teacher.state_dict())
    with torch.no_grad():
        model.loss(**model.data_preprocessor(cls_batch(), False))
    assert all(torch.equal(v, before[k]) for k, v in model.teacher.state_dict().items())


def test_checkpoint_holds_the_average_and_a_resumed_step_equals_the_straight_one():
    straight = build()
    optim = build_optim_wrapper(straight, OPTIM)
    steps(straight, optim, 2)
    state = straight.state_dict()
    ema_state = straight.teacher.ema.state_dict()
    t_keys = {k for k in state if k.startswith('teacher.')}
    assert t_keys == {f'teacher.{k}' for k in ema_state} and 'teacher.steps' in t_keys
    resumed = build(seed=1)  # other initial weights: all of it must come from the checkpoint
    resumed.load_state_dict(copy.deepcopy(state), strict=True)
    for k, v in resumed.teacher.ema.state_dict().items():
        assert torch.equal(v, ema_state[k]), k
    optim_r = build_optim_wrapper(resumed, OPTIM)
    optim_r.load_state_dict(copy.deepcopy(optim.state_dict()))
    steps(straight, optim, 1, first_batch=2)
    steps(resumed, optim_r, 1, first_batch=2)
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_export_has_the_student_only(tmp_path):
    model = build()
    steps(model, build_optim_wrapper(model, OPTIM), 1)
    ckpt, out = str(tmp_path / 'iter_1.pth'), str(tmp_path / 'student.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    cfg = Config(dict(model=model_cfg(), default_scope='mmpretrain'))
    export_student(cfg, ckpt, out)
    exported = torch.load(out)['state_dict']
    assert exported.keys() == model.student.state_dict().keys()
    for k, v in exported.items():
        assert torch.equal(v, model.student.state_dict()[k]), k


def test_moving_the_model_keeps_the_average_on_its_tensors():
    """``model.to(...)`` gives the teacher new tensors; the EMA averages into those."""
    model = build(update_buffers=True)
    model._apply(lambda t: t.clone())  # as a move to another device does
    ema = model.teacher.ema
    own = model.teacher.model.state_dict()
    assert all(v.data_ptr() == own[k].data_ptr() for k, v in ema.avg_parameters.items())
    seen = steps(model, build_optim_wrapper(model, OPTIM), 1)  # update 1: a copy
    for k, v in model.teacher.model.state_dict().items():
        assert torch.equal(v, seen[0][k]), k


def test_ema_inside_teachers_is_saved_and_a_trained_one_is_not(tmp_path):
    path = str(tmp_path / 't.pth')
    save_teacher(tiny_classifier(16), path, scope='mmpretrain')
    model = MODELS.build(dict(
        type='DistillClassifier', student=tiny_classifier(8), dry_run_shape=(32, 32),
        teachers=dict(mean=dict(ema=dict(momentum=0.01)),
                      big=dict(config=dict(model=tiny_classifier(16)), checkpoint=path)),
        distill_losses=dict(kd_mean=dict(KD, teacher_name='mean'),
                            kd_big=dict(KD, teacher_name='big'))))
    keys = model.state_dict().keys()
    assert 'teachers.mean.steps' in keys and 'teachers.mean.module.head.fc.weight' in keys
    assert not any(k.startswith('teachers.big.') for k in keys)


@pytest.mark.parametrize('teacher,words', [
    (dict(ema=dict(momentum=0.1, decay=0.9)), ['model.teacher.ema', "['decay']", 'momentum']),
    (dict(ema=dict(momentum=0.1), config='x.py', checkpoint='x.pth'),
     ['model.teacher', "['checkpoint', 'config']", 'ema']),
    (dict(ema=dict(momentum=1.5)), ['model.teacher.ema.momentum', '(0, 1)', '1.5']),
    (dict(ema=dict(interval=0)), ['model.teacher.ema.interval', '>= 1']),
    (dict(ema=0.9), ['model.teacher.ema', 'momentum']),
])
def test_bad_ema_config_rejected(teacher, words):
    with pytest.raises(ValueError) as err:
        MODELS.build(dict(model_cfg(), teacher=teacher))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_init_student_needs_a_trained_teacher():
    with pytest.raises(ValueError, match='init_student.*one trained teacher'):
        MODELS.build(dict(model_cfg(), init_student=True))
