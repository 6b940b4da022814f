import math

import pytest
import torch

from mmdistill.losses.kd import KDLoss, kd_loss, standardize_logits
from mmdistill.registry import DISTILL_LOSSES


def reference_kd(logits_S, logits_T, T, logit_stand=False):
    """Per-sample loop, written from the definition (mdistiller kd_loss / LSKD normalize)."""
    total = 0.0
    n, k = logits_S.shape
    for i in range(n):
        s, t = logits_S[i], logits_T[i]
        if logit_stand:
            s_std = torch.sqrt(((s - s.mean())**2).sum() / (k - 1))
            t_std = torch.sqrt(((t - t.mean())**2).sum() / (k - 1))
            s = (s - s.mean()) / (1e-7 + s_std)
            t = (t - t.mean()) / (1e-7 + t_std)
        p_t = torch.exp(t / T) / torch.exp(t / T).sum()
        log_p_s = s / T - torch.log(torch.exp(s / T).sum())
        total = total + (p_t * (torch.log(p_t) - log_p_s)).sum()
    return total / n * T**2


@pytest.mark.parametrize('logit_stand', [False, True])
@pytest.mark.parametrize('T', [1.0, 4.0])
def test_matches_reference(logit_stand, T):
    s = torch.randn(6, 10, dtype=torch.float64) * 3
    t = torch.randn(6, 10, dtype=torch.float64) * 3
    loss = KDLoss(temperature=T, logit_stand=logit_stand)(s, t)
    assert loss.dim() == 0 and loss.dtype == torch.float64
    torch.testing.assert_close(loss, reference_kd(s, t, T, logit_stand), rtol=1e-6, atol=0)


def test_hand_computed():
    # p_T = [3/4, 1/4], p_S = [1/2, 1/2], T = 1.
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert KDLoss(temperature=1.0)(s, t).item() == pytest.approx(expected, rel=1e-12)
    # T = 2 on doubled logits gives the same distributions, times T^2 = 4.
    assert KDLoss(temperature=2.0)(2 * s, 2 * t).item() == pytest.approx(4 * expected, rel=1e-12)


def test_identical_logits_give_zero():
    x = torch.randn(4, 7, dtype=torch.float64)
    assert KDLoss()(x, x.clone()).abs().item() < 1e-12


def test_standardize_unbiased_std():
    x = torch.randn(3, 9, dtype=torch.float64)
    z = standardize_logits(x)
    torch.testing.assert_close(z.mean(-1), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(-1, unbiased=True), torch.ones(3, dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_logit_stand_invariant_to_affine_maps():
    s = torch.randn(5, 8, dtype=torch.float64)
    t = torch.randn(5, 8, dtype=torch.float64)
    loss = KDLoss(temperature=2.0, logit_stand=True)
    torch.testing.assert_close(loss(3.0 * s + 7.0, 0.5 * t - 2.0), loss(s, t), rtol=1e-6, atol=0)
    # Without standardization the loss does change.
    plain = KDLoss(temperature=2.0)
    assert not torch.allclose(plain(3.0 * s + 7.0, 0.5 * t - 2.0), plain(s, t))


def test_tensor_temperature():
    s = torch.randn(4, 5, dtype=torch.float64)
    t = torch.randn(4, 5, dtype=torch.float64)
    expected = kd_loss(s, t, 3.0)
    for T in (torch.tensor(3.0, dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64)):
        out = kd_loss(s, t, T)
        assert out.dim() == 0
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)


def test_gradients_reach_student_only():
    s = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    KDLoss(logit_stand=True)(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_large_logits_finite(dtype):
    # Large but representable magnitudes (fp16 max is 65504).
    s = (torch.randn(4, 10) * 3e4).clamp(-6e4, 6e4).to(dtype)
    t = (torch.randn(4, 10) * 3e4).clamp(-6e4, 6e4).to(dtype)
    assert torch.isfinite(s).all() and torch.isfinite(t).all()
    for stand in (False, True):
        out = KDLoss(temperature=1.0, logit_stand=stand)(s, t)
        assert out.dtype == torch.float32 and torch.isfinite(out)


def test_registry_build():
    loss = DISTILL_LOSSES.build(dict(type='KDLoss', temperature=2.0, logit_stand=True))
    assert isinstance(loss, KDLoss) and loss.temperature == 2.0 and loss.logit_stand
    assert KDLoss.extra_inputs == () and KDLoss.channel_args is None


def test_class_weight_weighs_each_class_term():
    """KDLoss(class_weight=w): T^2 * mean_n sum_k w_k p_T,k (log p_T,k - log p_S,k), written
    out with explicit softmaxes; all-ones weights are plain KD."""
    g = torch.Generator().manual_seed(3)
    s = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 4, generator=g, dtype=torch.float64)
    w = [1.0, 3.0, 0.5, 2.0]
    T = 2.0
    p_t = torch.softmax(t / T, 1)
    ref = (torch.tensor(w, dtype=torch.float64) * p_t
           * (p_t.log() - torch.log_softmax(s / T, 1))).sum(1).mean() * T**2
    loss = KDLoss(temperature=T, class_weight=w)(s, t)
    assert float(loss) == pytest.approx(float(ref), rel=1e-10)
    assert float(KDLoss(temperature=T, class_weight=[1.0] * 4)(s, t)) == pytest.approx(
        float(KDLoss(temperature=T)(s, t)), rel=1e-12)
    with pytest.raises(ValueError, match='class_weight has 3 entries for 4 classes'):
        KDLoss(class_weight=[1.0, 1.0, 1.0])(s, t)
