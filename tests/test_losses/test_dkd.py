import math
import uuid

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub

from mmdistill.losses.dkd import DKDLoss, dkd_loss
from mmdistill.registry import DISTILL_LOSSES
from mmdistill.schedule import WeightSchedule


def reference_dkd(logits_S, logits_T, target, alpha, beta, T):
    """Per-sample loop from the definition: TCKD on [p_gt, 1 - p_gt]; NCKD on the softmax over
    the non-target classes only (what mdistiller's -1000 * gt_mask trick computes)."""
    n, k = logits_S.shape
    tckd = 0.0
    nckd = 0.0
    for i in range(n):
        g = int(target[i])
        p_s = torch.softmax(logits_S[i] / T, dim=0)
        p_t = torch.softmax(logits_T[i] / T, dim=0)
        b_s = torch.stack([p_s[g], 1 - p_s[g]])
        b_t = torch.stack([p_t[g], 1 - p_t[g]])
        tckd = tckd + (b_t * (torch.log(b_t) - torch.log(b_s))).sum()
        keep = [j for j in range(k) if j != g]
        q_s = torch.softmax(logits_S[i, keep] / T, dim=0)
        q_t = torch.softmax(logits_T[i, keep] / T, dim=0)
        nckd = nckd + (q_t * (torch.log(q_t) - torch.log(q_s))).sum()
    return alpha * tckd * T**2 / n + beta * nckd * T**2 / n


def official_style_dkd(logits_S, logits_T, target, alpha, beta, T):
    """mdistiller's vectorised formula (scatter masks, cat_mask, torch.log, -1000 trick)."""
    gt = torch.zeros_like(logits_S).scatter_(1, target.unsqueeze(1), 1).bool()
    other = ~gt
    p_s = F.softmax(logits_S / T, dim=1)
    p_t = F.softmax(logits_T / T, dim=1)
    b_s = torch.cat([(p_s * gt).sum(1, keepdim=True), (p_s * other).sum(1, keepdim=True)], 1)
    b_t = torch.cat([(p_t * gt).sum(1, keepdim=True), (p_t * other).sum(1, keepdim=True)], 1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction='sum') * T**2 / target.shape[0]
    q_t = F.softmax(logits_T / T - 1000.0 * gt, dim=1)
    log_q_s = F.log_softmax(logits_S / T - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_q_s, q_t, reduction='sum') * T**2 / target.shape[0]
    return alpha * tckd + beta * nckd


@pytest.fixture
def hub():
    """A fresh MessageHub made current for the test, removed afterwards."""
    name = f'test_dkd_{uuid.uuid4().hex}'
    h = MessageHub.get_instance(name)
    assert MessageHub.get_current_instance() is h
    yield h
    MessageHub._instance_dict.pop(name, None)


def _inputs(n=6, k=10):
    s = torch.randn(n, k, dtype=torch.float64) * 2
    t = torch.randn(n, k, dtype=torch.float64) * 2
    y = torch.randint(0, k, (n, ))
    return s, t, y


@pytest.mark.parametrize('alpha,beta,T', [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.5, 2.5)])
def test_matches_reference(alpha, beta, T):
    s, t, y = _inputs()
    loss = DKDLoss(alpha=alpha, beta=beta, temperature=T)(s, t, y)
    assert loss.dim() == 0 and loss.dtype == torch.float64
    torch.testing.assert_close(loss, reference_dkd(s, t, y, alpha, beta, T), rtol=1e-6, atol=0)
    torch.testing.assert_close(loss, official_style_dkd(s, t, y, alpha, beta, T), rtol=1e-6,
                               atol=0)


def test_hand_computed():
    # K = 3, target 0, T = 1. Student uniform; teacher logits [log 2, 0, 0] -> [1/2, 1/4, 1/4].
    s = torch.zeros(1, 3, dtype=torch.float64)
    t = torch.tensor([[math.log(2.0), 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    tckd = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    nckd = 0.0  # both non-target distributions are [1/2, 1/2]
    out = dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=1.0)
    assert out.item() == pytest.approx(tckd + 8.0 * nckd, rel=1e-12)
    # Teacher [log 2, log 3, 0]: non-target [3/4, 1/4] against student [1/2, 1/2].
    t2 = torch.tensor([[math.log(2.0), math.log(3.0), 0.0]], dtype=torch.float64)
    p_gt = 2 / 6
    tckd2 = p_gt * math.log(p_gt / (1 / 3)) + (1 - p_gt) * math.log((1 - p_gt) / (2 / 3))
    nckd2 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    out2 = dkd_loss(s, t2, y, alpha=1.0, beta=8.0, temperature=1.0)
    assert out2.item() == pytest.approx(tckd2 + 8.0 * nckd2, rel=1e-12)


def test_soft_labels_use_argmax():
    s, t, y = _inputs()
    soft = 0.7 * F.one_hot(y, 10).double() + 0.3 * torch.rand(6, 10, dtype=torch.float64) / 10
    assert torch.equal(soft.argmax(1), y)
    loss = DKDLoss()
    torch.testing.assert_close(loss(s, t, soft), loss(s, t, y), rtol=0, atol=0)


def test_tensor_temperature():
    s, t, y = _inputs()
    ref = dkd_loss(s, t, y, 1.0, 8.0, 3.0)
    T = torch.tensor([3.0], dtype=torch.float64)
    out = dkd_loss(s, t, y, 1.0, 8.0, T)
    assert out.dim() == 0
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)


def test_gradients_reach_student_only():
    s, t, y = _inputs()
    s.requires_grad_(True)
    t.requires_grad_(True)
    DKDLoss()(s, t, y).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_large_logits_stay_finite():
    """float32 logits whose target probability underflows: mdistiller's torch.log gives inf or nan,
    ours stays finite and agrees with a float64 evaluation."""
    s, t, y = _inputs(n=8)
    s, t = s * 60, t * 60
    y = t.argmin(1)  # teacher sure it is not the target; student p_gt underflows in float32
    s32, t32 = s.float(), t.float()
    assert not torch.isfinite(official_style_dkd(s32, t32, y, 1.0, 8.0, 1.0))
    out = dkd_loss(s32, t32, y, 1.0, 8.0, 1.0)
    assert torch.isfinite(out)
    torch.testing.assert_close(out.double(), reference_dkd(s, t, y, 1.0, 8.0, 1.0), rtol=1e-4,
                               atol=0)


@pytest.mark.parametrize('scale', [100.0, 3e4])
def test_half_precision_finite(scale):
    s = (torch.randn(4, 10) * scale).clamp(-6e4, 6e4).half()
    t = (torch.randn(4, 10) * scale).clamp(-6e4, 6e4).half()
    y = torch.randint(0, 10, (4, ))
    out = DKDLoss(temperature=1.0)(s, t, y)
    assert out.dtype == torch.float32 and torch.isfinite(out)


# ----------------------------------------------------------------------------- warmup
# DKD's warm-up min(epoch / warmup, 1) (1-based epochs) is the entry's weight_schedule.
def _dkd_schedule(**cfg) -> WeightSchedule:
    return WeightSchedule.build(cfg, 'model.distill_losses.dkd.weight_schedule')


def test_warmup_factor_function():
    assert _dkd_schedule(warmup=20, by_epoch=True).factor(1) == 1 / 20
    assert _dkd_schedule(warmup=20, by_epoch=True).factor(10) == 0.5
    assert _dkd_schedule(warmup=20, by_epoch=True).factor(40) == 1.0
    assert _dkd_schedule(warmup=0, by_epoch=True).factor(1) == 1.0
    assert _dkd_schedule(warmup=1, by_epoch=True).factor(1) == 1.0  # ImageNet setting: warmup 1


def test_shipped_configs_keep_dkds_warmup():
    from mmengine.config import Config

    from mmdistill.entries import parse_entry
    for path, warmup in [('configs/dkd/dkd_resnet50_resnet18_1xb64_cifar100.py', 20),
                         ('configs/dkd/dkd_resnet34_resnet18_8xb32_in1k.py', 1)]:
        cfg = Config.fromfile(path).model.distill_losses.dkd
        entry = parse_entry('dkd', cfg.to_dict())
        assert entry.schedule == WeightSchedule(warmup=warmup, by_epoch=True)


def test_warmup_from_message_hub(hub):
    s, t, y = _inputs()
    full = dkd_loss(s, t, y, 1.0, 8.0, 4.0)
    loss, schedule = DKDLoss(), _dkd_schedule(warmup=20, by_epoch=True)
    for epoch0, factor in [(0, 1 / 20), (9, 10 / 20), (19, 1.0), (30, 1.0)]:
        hub.update_info('epoch', epoch0)  # mmengine's epoch is 0-based
        torch.testing.assert_close(schedule.current() * loss(s, t, y), factor * full,
                                   rtol=1e-12, atol=0)


def test_warmup_by_iter(hub):
    s, t, y = _inputs()
    full = dkd_loss(s, t, y, 1.0, 8.0, 4.0)
    loss, schedule = DKDLoss(), _dkd_schedule(warmup=10)
    hub.update_info('epoch', 0)
    hub.update_info('iter', 4)
    torch.testing.assert_close(schedule.current() * loss(s, t, y), 0.5 * full, rtol=1e-12,
                               atol=0)
    hub.update_info('iter', 100)
    torch.testing.assert_close(schedule.current() * loss(s, t, y), full, rtol=1e-12, atol=0)


def test_no_hub_info_means_no_warmup(hub):
    """Bare-tensor use: no epoch in the hub -> the warm-up counts as done."""
    s, t, y = _inputs()
    assert _dkd_schedule(warmup=20, by_epoch=True).current() == 1.0
    torch.testing.assert_close(DKDLoss()(s, t, y), dkd_loss(s, t, y, 1.0, 8.0, 4.0),
                               rtol=1e-12, atol=0)


def test_registry_build_and_validation():
    loss = DISTILL_LOSSES.build(dict(type='DKDLoss', alpha=1.0, beta=0.5, temperature=1.0))
    assert isinstance(loss, DKDLoss) and loss.beta == 0.5
    assert DKDLoss.extra_inputs == ('gt_labels', ) and DKDLoss.channel_args is None
    with pytest.raises(TypeError):
        DKDLoss(warmup=20)  # the warm-up is the entry's weight_schedule
