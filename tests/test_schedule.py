"""Loss-weight schedules: the factor function, its config checks, and the wrapper applying it."""
import copy
import itertools

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper

from mmdistill.schedule import WeightSchedule, hub_progress


_HUBS = itertools.count()


@pytest.fixture(autouse=True)
def _fresh_hub():
    """Leave a new, empty message hub current after each test: no progress info leaks."""
    yield
    MessageHub.get_instance(f'test_schedule_clean_{next(_HUBS)}')


def test_warmup_decay_stop_values():
    warm = WeightSchedule(warmup=4)
    assert [warm.factor(s) for s in range(1, 7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    decay = WeightSchedule(decay_begin=10, decay_end=20, decay_to=0.1)
    assert decay.factor(1) == 1.0 and decay.factor(10) == 1.0
    assert decay.factor(15) == pytest.approx(0.55)
    assert decay.factor(20) == pytest.approx(0.1) and decay.factor(99) == pytest.approx(0.1)
    stop = WeightSchedule(stop=280, by_epoch=True)
    assert stop.unit == 'epoch' and stop.factor(280) == 1.0 and stop.factor(281) == 0.0
    both = WeightSchedule(warmup=10, decay_begin=5, decay_end=15, decay_to=0.0, stop=12)
    assert both.factor(2) == pytest.approx(0.2)           # warm-up only
    assert both.factor(8) == pytest.approx(0.8 * 0.7)     # warm-up x decay
    assert both.factor(12) == pytest.approx(1.0 * 0.3)
    assert both.factor(13) == 0.0                         # stopped
    assert WeightSchedule().factor(1) == 1.0


def test_build_checks_name_the_key():
    key = 'model.distill_losses.fgd.weight_schedule'
    with pytest.raises(ValueError, match=r"fgd.weight_schedule: unknown keys \['warm_up'\]"):
        WeightSchedule.build(dict(warm_up=5), key)
    with pytest.raises(ValueError, match='decay_begin and decay_end'):
        WeightSchedule.build(dict(decay_begin=5), key)
    with pytest.raises(ValueError, match='must be < decay_end'):
        WeightSchedule.build(dict(decay_begin=5, decay_end=5), key)
    with pytest.raises(ValueError, match='warmup must be >= 0'):
        WeightSchedule.build(dict(warmup=-1), key)
    assert WeightSchedule.build(dict(stop=3), key) == WeightSchedule(stop=3)


def test_current_reads_the_message_hub():
    hub = MessageHub.get_instance('test_schedule_hub')
    hub.update_info('iter', 1)  # 0-based: the second iteration
    hub.update_info('epoch', 0)
    assert hub_progress('iter') == 2 and hub_progress('epoch') == 1
    assert WeightSchedule(warmup=4).current() == 0.5
    assert WeightSchedule(warmup=4, by_epoch=True).current() == 0.25
    hub.update_info('iter', 10)
    assert WeightSchedule(stop=10).current() == 0.0


pytest.importorskip('mmpretrain')
from mmpretrain.utils import register_all_modules  # noqa: E402

import mmdistill  # noqa: E402,F401
from tests.conftest import use_scope  # noqa: E402
from tests.utils import (cls_batch, save_teacher, tiny_classifier,  # noqa: E402
                         tiny_distill_classifier)

_scope = use_scope('mmpretrain')
register_all_modules()


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('sched') / 'teacher.pth')
    save_teacher(tiny_classifier(16), path, scope='mmpretrain')
    return path


def _build(ckpt, schedule):
    losses = dict(
        kd=dict(type='KDLoss', student='head', teacher='head', temperature=4.0, loss_weight=0.9,
                weight_schedule=schedule),
        mgd=dict(type='MGDLoss', student='backbone[-1]', teacher='backbone[-1]',
                 student_channels=64, teacher_channels=128, alpha_mgd=7e-5, lambda_mgd=0.15,
                 weight_schedule=schedule))
    return tiny_distill_classifier(ckpt, losses)


def test_wrapper_scales_each_entry_by_its_factor(teacher_ckpt):
    torch.manual_seed(0)
    model = _build(teacher_ckpt, dict(warmup=4))
    model.eval()
    data = model.data_preprocessor(cls_batch(), False)
    hub = MessageHub.get_instance('test_schedule_scale')
    hub.update_info('iter', 3)  # step 4: factor 1
    torch.manual_seed(1)
    full = model.loss(**copy.deepcopy(data))
    hub.update_info('iter', 0)  # step 1: factor 1/4
    torch.manual_seed(1)  # the same MGD mask
    quarter = model.loss(**copy.deepcopy(data))
    for key in ('loss_kd', 'loss_mgd'):
        assert full[key] > 0
        torch.testing.assert_close(quarter[key], full[key] / 4)
    torch.testing.assert_close(quarter['loss'], full['loss'])  # the student's own CE


def test_stopped_entries_skip_the_teacher_and_give_zero_gradients(teacher_ckpt):
    model = _build(teacher_ckpt, dict(stop=2))
    calls = []
    model.teacher.model.backbone.register_forward_hook(lambda *args: calls.append(1))
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    hub = MessageHub.get_instance('test_schedule_stop')
    model.train()
    hub.update_info('iter', 1)  # step 2: still on
    log = model.train_step(cls_batch(), optim)
    assert len(calls) == 1 and log['loss_kd'] > 0 and log['loss_mgd'] > 0
    mgd_params = list(model.distill_losses['mgd'].parameters())
    optim.zero_grad()
    hub.update_info('iter', 2)  # step 3: stopped
    losses = model.loss(**model.data_preprocessor(cls_batch(), True))
    assert len(calls) == 1  # the teacher did not run
    assert losses['loss_kd'] == 0 and losses['loss_mgd'] == 0
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in mgd_params)
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.parameters())
