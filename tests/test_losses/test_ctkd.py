import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import HOOKS

from mmdistill.hooks import CTKDTemperatureHook
from mmdistill.hooks.ctkd_hook import cosine_lambda
from mmdistill.losses.ctkd import CTKDLoss, GlobalTemperature, GradientReversal
from mmdistill.losses.dkd import dkd_loss
from mmdistill.losses.kd import kd_loss
from mmdistill.losses.sdd import sdd_kd_loss
from mmdistill.registry import DISTILL_LOSSES


def official_distill_kl(y_s, y_t, T):
    """CTKD's DistillKL: KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T)) * T * T."""
    return nn.KLDivLoss(reduction='batchmean')(F.log_softmax(y_s / T, dim=1),
                                               F.softmax(y_t / T, dim=1)) * T * T


class OfficialCosineDecay:
    """Transcription of CTKD's train_student.CosineDecay (run with max 0, min -1)."""

    def __init__(self, max_value, min_value, num_loops):
        self._max_value, self._min_value, self._num_loops = max_value, min_value, num_loops

    def get_value(self, i):
        i = min(max(i, 0), self._num_loops)
        value = (math.cos(i * math.pi / self._num_loops) + 1.0) * 0.5
        return value * (self._max_value - self._min_value) + self._min_value


def _logits(n=5, k=8):
    return (torch.randn(n, k, dtype=torch.float64) * 2, torch.randn(n, k, dtype=torch.float64) * 2)


def test_gradient_reversal_function():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    y = GradientReversal.apply(x, 0.3)
    assert torch.equal(y, x)
    g = torch.randn(3, dtype=torch.float64)
    y.backward(g)
    torch.testing.assert_close(x.grad, -0.3 * g, rtol=0, atol=0)


@pytest.mark.parametrize('lam', [0.0, 0.35, 1.0])
def test_reversed_gradient_on_theta(lam):
    s, t = _logits()
    s.requires_grad_(True)
    loss_mod = CTKDLoss(base='kd').double()
    with torch.no_grad():
        loss_mod.global_temperature.theta.fill_(0.3)
    loss_mod.lambda_ = lam
    loss = loss_mod(s, t)
    g_theta, g_s = torch.autograd.grad(loss, [loss_mod.global_temperature.theta, s])

    # Independent graph without reversal: T = 1 + 20 * sigmoid(theta).
    theta = torch.full((1, ), 0.3, dtype=torch.float64, requires_grad=True)
    s2 = s.detach().clone().requires_grad_(True)
    T = 1.0 + 20.0 * torch.sigmoid(theta)
    ref = official_distill_kl(s2, t, T)
    torch.testing.assert_close(loss, ref.reshape(()), rtol=1e-12, atol=0)
    r_theta, r_s = torch.autograd.grad(ref, [theta, s2])
    assert r_theta.abs().item() > 0
    torch.testing.assert_close(g_theta, -lam * r_theta, rtol=1e-10, atol=0)
    torch.testing.assert_close(g_s, r_s, rtol=1e-10, atol=0)  # the student is not reversed


def test_temperature_range_and_init():
    temp = GlobalTemperature(t_start=1.0, t_end=20.0).double()
    assert temp.theta.shape == (1, ) and temp.theta.item() == 1.0 and temp.lambda_ == 0.0
    T0 = temp()
    assert T0.dim() == 0
    assert T0.item() == pytest.approx(1.0 + 20.0 / (1.0 + math.exp(-1.0)), rel=1e-12)
    for v in (-30.0, -3.0, 0.0, 3.0, 30.0):
        with torch.no_grad():
            temp.theta.fill_(v)
        assert 1.0 <= temp().item() <= 21.0
    with torch.no_grad():
        temp.theta.fill_(-50.0)
    assert temp().item() == pytest.approx(1.0, abs=1e-12)
    with torch.no_grad():
        temp.theta.fill_(50.0)
    assert temp().item() == pytest.approx(21.0, abs=1e-12)


def test_theta_trained_adversarially():
    """One SGD step with lambda 1 moves T so that the KD loss goes up."""
    s, t = _logits()
    loss_mod = CTKDLoss(base='kd').double()
    loss_mod.lambda_ = 1.0
    opt = torch.optim.SGD(loss_mod.parameters(), lr=0.5)
    before = loss_mod(s, t)
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_mod(s, t)
    assert after > before


def test_ctkd_kd_equals_kd_at_same_temperature():
    s, t = _logits()
    for stand in (False, True):
        loss_mod = CTKDLoss(base='kd', logit_stand=stand).double()
        T = loss_mod.global_temperature().item()
        torch.testing.assert_close(loss_mod(s, t), kd_loss(s, t, T, logit_stand=stand),
                                   rtol=1e-12, atol=0)
    loss_mod = CTKDLoss(base='kd').double()
    T = loss_mod.global_temperature().detach()
    torch.testing.assert_close(loss_mod(s, t), official_distill_kl(s, t, T), rtol=1e-12, atol=0)


def test_ctkd_dkd_and_sdd_bases():
    s, t = _logits()
    y = torch.randint(0, 8, (5, ))
    dkd = CTKDLoss(base='dkd', alpha=1.0, beta=2.0).double()
    T = dkd.global_temperature().item()
    torch.testing.assert_close(dkd(s, t, y), dkd_loss(s, t, y, 1.0, 2.0, T), rtol=1e-12, atol=0)
    with pytest.raises(TypeError, match='warmup'):  # a warm-up is the entry's weight_schedule
        CTKDLoss(base='dkd', warmup=4)

    ls = torch.randn(5, 8, 21, dtype=torch.float64)
    lt = torch.randn(5, 8, 21, dtype=torch.float64)
    sdd = CTKDLoss(base='sdd').double()
    torch.testing.assert_close(sdd(ls, lt, y), sdd_kd_loss(ls, lt, y, T), rtol=1e-12, atol=0)
    sdd(ls, lt, y).backward()
    assert sdd.global_temperature.theta.grad is not None  # zero at lambda 0, but connected

    assert sdd.scales == (1, 2, 4) and sdd.num_regions == 21
    assert CTKDLoss.extra_inputs == ('gt_labels', )  # declared once on the class ('kd': unused)


def test_gradients_reach_student_and_theta_not_teacher():
    s, t = _logits()
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss_mod = CTKDLoss(base='kd').double()
    loss_mod.lambda_ = 0.5
    loss_mod(s, t).backward()
    assert s.grad.abs().sum() > 0
    assert loss_mod.global_temperature.theta.grad.abs().item() > 0
    assert t.grad is None


def test_half_precision_finite():
    s = (torch.randn(4, 10) * 3e4).clamp(-6e4, 6e4).half()
    t = (torch.randn(4, 10) * 3e4).clamp(-6e4, 6e4).half()
    out = CTKDLoss(base='kd')(s, t)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_argument_checks_and_registry():
    with pytest.raises(ValueError):
        CTKDLoss(base='ofa')
    with pytest.raises(TypeError):
        CTKDLoss(base='kd', alpha=1.0)
    with pytest.raises(ValueError):
        CTKDLoss(base='sdd', scales=(2, 4))
    with pytest.raises(ValueError):
        CTKDLoss(base='dkd')(*_logits())  # no gt_labels
    built = DISTILL_LOSSES.build(dict(type='CTKDLoss', base='dkd', t_start=1.0, t_end=20.0,
                                      beta=2.0))
    assert isinstance(built, CTKDLoss) and built.base_kwargs['beta'] == 2.0


# ----------------------------------------------------------------------------- hook


def test_cosine_curriculum_values():
    L = 10
    official = OfficialCosineDecay(max_value=0, min_value=-1, num_loops=L)
    for epoch in [0, 1, 2, 5, 7, 10, 11, 240]:
        hand = 0.5 * (1 - math.cos(math.pi * min(epoch, L) / L))
        assert cosine_lambda(epoch, 1.0, 0.0, L) == pytest.approx(hand, abs=1e-12)
        # official GRL multiplies by the CosineDecay value; ours by -lambda
        assert -cosine_lambda(epoch, 1.0, 0.0, L) == pytest.approx(official.get_value(epoch),
                                                                   abs=1e-12)
    assert cosine_lambda(5, 1.0, 0.0, 10) == pytest.approx(0.5)
    assert cosine_lambda(10, 1.0, 0.0, 10) == pytest.approx(1.0)
    assert cosine_lambda(0, 0.8, 0.2, 4) == pytest.approx(0.2)
    assert cosine_lambda(2, 0.8, 0.2, 4) == pytest.approx(0.5)


class _Model(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.distill_losses = nn.ModuleDict(dict(a=CTKDLoss(base='kd'), b=CTKDLoss(base='dkd')))


def test_hook_sets_lambda_per_epoch_and_unwraps_ddp():
    model = _Model()
    wrapped = SimpleNamespace(module=model)  # like DDP / MMDistributedDataParallel
    hook = HOOKS.build(dict(type='CTKDTemperatureHook', decay_loops=10))
    assert isinstance(hook, CTKDTemperatureHook)
    runner = SimpleNamespace(model=wrapped, epoch=0, iter=0)
    hook.before_train(runner)
    for epoch0 in [0, 4, 9, 20]:
        runner.epoch = epoch0
        hook.before_train_epoch(runner)
        expected = 0.5 * (1 - math.cos(math.pi * min(epoch0 + 1, 10) / 10))
        for loss in model.distill_losses.values():
            assert loss.lambda_ == pytest.approx(expected, abs=1e-12)
            assert loss.global_temperature.lambda_ == loss.lambda_
    hook.before_train_iter(runner, 0)  # by_epoch: iterations do not change it
    assert model.distill_losses['a'].lambda_ == pytest.approx(1.0)


def test_hook_by_iter():
    model = _Model()
    hook = CTKDTemperatureHook(decay_loops=100, by_epoch=False)
    runner = SimpleNamespace(model=model, epoch=0, iter=49)
    hook.before_train_epoch(runner)
    assert model.distill_losses['a'].lambda_ == 0.0
    hook.before_train_iter(runner, 0)
    assert model.distill_losses['a'].lambda_ == pytest.approx(0.5, abs=1e-12)


def test_hook_without_ctkd_module_raises():
    runner = SimpleNamespace(model=nn.Linear(2, 2), epoch=0, iter=0)
    with pytest.raises(RuntimeError, match='CTKD'):
        CTKDTemperatureHook().before_train(runner)


def test_hook_in_mmengine_runner(tmp_path):
    """A real EpochBasedTrainLoop: the hook sees 0-based runner.epoch and sets lambda."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    seen = []

    class ToyModel(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.kd = CTKDLoss(base='kd')

        def forward(self, inputs, labels=None, mode='tensor'):
            logits = self.fc(inputs)
            if mode == 'loss':
                seen.append(self.kd.lambda_)
                return dict(loss_kd=self.kd(logits, logits.detach().flip(1)),
                            loss_ce=F.cross_entropy(logits, labels))
            return logits

    data = [dict(inputs=torch.randn(4), labels=torch.tensor(i % 3)) for i in range(4)]
    runner = Runner(
        model=ToyModel(),
        work_dir=str(tmp_path),
        train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        custom_hooks=[dict(type='CTKDTemperatureHook', decay_loops=2)],
        default_hooks=dict(logger=None, checkpoint=None),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='ERROR')
    theta0 = runner.model.kd.global_temperature.theta.detach().clone()
    try:
        runner.train()
    finally:  # do not leave this run's epoch info as the current MessageHub for other tests
        from mmengine.logging import MessageHub
        MessageHub._instance_dict.pop(runner.message_hub.instance_name, None)
    expected = [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]  # epochs 1, 2, 3 with decay_loops 2
    assert seen == pytest.approx(expected, abs=1e-12)
    assert not torch.equal(runner.model.kd.global_temperature.theta.detach(), theta0)
