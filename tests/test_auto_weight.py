"""auto_weight: balanced loss weights measured on the first training iterations.

Values: an analytic toy gives the exact weight; in a DistillClassifier the weight equals the
share times the ratio of gradient norms computed independently (fresh graphs, ``.backward()``);
a loss multiplied by c gets weight / c and the same weighted loss; without ``auto_weight`` the
step is what it was (no new state, the loss is the entry weight times the module's value); two
gloo ranks get the same weight. The resume test is in ``tests/test_tools/test_resume.py``.
"""
import copy
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.optim import build_optim_wrapper

from mmdistill.analysis import grad_norm
from mmdistill.auto_weight import AutoWeight, check_auto_weight
from tests.utils import cls_batch, save_teacher, tiny_classifier, tiny_distill_classifier


# ---------------------------------------------------------------------------------- unit
def test_analytic_toy_gives_the_exact_weight():
    """task = ||theta||^2 (gradient 2 theta), entry = a . theta (gradient a): after steps with
    theta_1..theta_k, w = share * sum 2||theta_j|| / (k ||a||), then held."""
    a = torch.tensor([3.0, 4.0])  # ||a|| = 5
    auto = AutoWeight(share=0.5, iters=3, key='toy')
    thetas = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), torch.tensor([6.0, 8.0])]
    for k, value in enumerate(thetas, 1):
        theta = value.clone().requires_grad_(True)
        assert auto.measuring
        w = auto.update(grad_norm((theta ** 2).sum(), [theta]), grad_norm(a @ theta, [theta]))
        expected = 0.5 * sum(2 * float(t.norm()) for t in thetas[:k]) / (k * 5.0)
        assert w == pytest.approx(expected, rel=1e-12)
    assert not auto.measuring and int(auto.steps) == 3
    assert float(auto.weight) == pytest.approx(0.5 * (2 + 4 + 20) / 15, rel=1e-12)
    assert auto.config_line() == f'loss_weight={0.5 * 26 / 15:.6g}'


def test_zero_gradient_and_bad_config_are_named():
    auto = AutoWeight(share=0.25, iters=2, key='model.distill_losses.kd')
    assert auto.update(1.0, 0.0) == 0.0  # nothing yet: the entry waits
    with pytest.raises(ValueError, match=r'distill_losses\.kd\.auto_weight.*no gradient'):
        auto.update(1.0, 0.0)
    with pytest.raises(FloatingPointError, match='non-finite'):
        AutoWeight(0.25, 2, 'k').update(float('nan'), 1.0)
    for bad, match in ((dict(share=0), 'share'), (dict(share=-1), 'share'),
                       (dict(iters=0), 'iters'), (dict(iters=2.5), 'iters'),
                       (dict(ratio=1), 'unknown keys'), (0.25, 'expected dict')):
        with pytest.raises(ValueError, match=match):
            check_auto_weight(bad, 'model.distill_losses.kd.auto_weight')
    assert check_auto_weight({}, 'k') == dict(share=0.25, iters=20)


# ---------------------------------------------------------------------------------- wrapper
KD = dict(type='KDLoss', student='head', teacher='head', temperature=4.0)


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    pytest.importorskip('mmpretrain')
    path = str(tmp_path_factory.mktemp('auto') / 'teacher.pth')
    save_teacher(tiny_classifier(16), path, scope='mmpretrain')
    return path


def build(ckpt, losses):
    torch.manual_seed(0)
    return tiny_distill_classifier(ckpt, losses)


def fresh_losses(model, data):
    """The task losses and the unweighted KD value of a fresh forward of ``data``."""
    with model._recording(model.teachers.values()):
        model.teacher.run(data['inputs'], data['data_samples'])
        task = model.student.loss(data['inputs'], data['data_samples'])
        fs, ft = model._entry_feats(model.entries[0])
        return task, model.distill_losses['kd'][0](fs[0], ft[0].detach())


def independent_norms(model, batch):
    """||grad task|| and ||grad KD (unweighted)|| over the student's trainable parameters, each
    from its own fresh forward and ``.backward()``."""
    params = [p for p in model.student.parameters() if p.requires_grad]
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    norms = []
    for part in ('task', 'kd'):
        model.zero_grad()
        task, kd = fresh_losses(model, data)
        (sum(v for k, v in task.items() if 'loss' in k) if part == 'task' else kd).backward()
        norms.append(math.sqrt(sum(float(p.grad.double().square().sum()) for p in params)))
    model.zero_grad()
    return norms


def test_weight_equals_share_times_independent_norm_ratio(teacher_ckpt):
    model = build(teacher_ckpt, dict(kd=dict(KD, auto_weight=dict(share=0.25, iters=2))))
    model.train()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    task_sum = kd_sum = 0.0
    for step, seed in enumerate((0, 1, 2), 1):
        batch = cls_batch(seed=seed)
        if step <= 2:
            t, k = independent_norms(model, batch)
            task_sum, kd_sum = task_sum + t, kd_sum + k
        log = model.train_step(batch, optim)
        assert float(model.auto_weights['kd'].weight) == pytest.approx(0.25 * task_sum / kd_sum,
                                                                       rel=1e-5)
    assert not model.auto_weights['kd'].measuring and int(model.auto_weights['kd'].steps) == 2
    assert 'auto_weights.kd.weight' in model.state_dict()
    assert log['loss_kd'] > 0


def test_a_loss_times_c_gets_weight_over_c_and_the_same_weighted_loss(teacher_ckpt):
    """KD and CosineLoss, each with loss_weight 1 and 8: same weighted losses, weights in
    ratio 1/8."""
    auto = dict(share=0.5, iters=1)
    cases = [(dict(KD, auto_weight=auto), dict(KD, loss_weight=8.0, auto_weight=auto)),
             (dict(type='CosineLoss', student='head', teacher='head', auto_weight=auto),
              dict(type='CosineLoss', student='head', teacher='head', loss_weight=8.0,
                   auto_weight=auto))]
    for plain, scaled in cases:
        logs, weights = [], []
        for cfg in (plain, scaled):
            model = build(teacher_ckpt, dict(kd=cfg))
            model.train()
            logs.append(float(model.loss(**model.data_preprocessor(cls_batch(), True))['loss_kd']))
            weights.append(model.auto_weights['kd'])
        assert float(weights[1].weight) == pytest.approx(float(weights[0].weight) / 8, rel=1e-6)
        assert logs[1] == pytest.approx(logs[0], rel=1e-6)
        # the config line gives the same effective weight whichever loss_weight it started at
        assert weights[0].config_line() == weights[1].config_line()


def test_without_auto_weight_the_step_is_unchanged(teacher_ckpt):
    model = build(teacher_ckpt, dict(kd=dict(KD, loss_weight=0.9)))
    assert len(model.auto_weights) == 0
    assert not any(k.startswith('auto_weights') for k in model.state_dict())
    model.train()
    data = model.data_preprocessor(cls_batch(), True)
    losses = model.loss(**data)
    assert torch.equal(losses['loss_kd'], fresh_losses(model, data)[1] * (0.9 * 1.0))


# ---------------------------------------------------------------------------------- ranks
def _rank(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    auto = AutoWeight(share=0.25, iters=2, key='k')
    for task, loss in ((1.0 + rank, 4.0 - rank), (2.0, 1.0 + 2 * rank)):
        auto.update(task, loss)
    out[rank] = float(auto.weight)
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_get_the_same_weight():
    """Rank 0 measures (1, 4), (2, 1); rank 1 (2, 3), (2, 3): the weight is the share times the
    sum over steps of the rank-mean task norms over that of the loss norms, on both ranks."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(port, out), nprocs=2, join=True)
    expected = 0.25 * (1.5 + 2.0) / (3.5 + 2.0)
    assert out[0] == out[1] == pytest.approx(expected, rel=1e-12)
