"""Tests for ATLoss against mdistiller's single_stage_at_loss."""
import math

import pytest
import torch

from mmdistill.losses.at import ATLoss, attention_map
from mmdistill.registry import DISTILL_LOSSES
from mmdistill.testing import reference_at


@pytest.mark.parametrize('s_shape,t_shape', [
    ((3, 4, 6, 6), (3, 8, 6, 6)),
    ((3, 4, 8, 8), (3, 8, 4, 4)),    # student pooled
    ((3, 4, 4, 4), (3, 8, 8, 8)),    # teacher pooled
    ((3, 4, 7, 7), (3, 8, 3, 3)),    # non-integer ratio
])
@pytest.mark.parametrize('p', [2, 3])
@pytest.mark.parametrize('loss_weight', [1.0, 1000.0])
def test_matches_mdistiller(s_shape, t_shape, p, loss_weight):
    S = torch.randn(*s_shape, dtype=torch.float64)
    T = torch.randn(*t_shape, dtype=torch.float64)
    got = loss_weight * ATLoss(p=p)(S, T)
    expected = loss_weight * reference_at(S, T, p)
    assert got.dtype == torch.float64
    assert expected > 0
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_non_square_pools_each_dimension():
    # Student (8, 6) vs teacher (4, 3): the student is averaged over 2x2 blocks.
    S = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    T = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    pooled = S.reshape(2, 3, 4, 2, 3, 2).mean(dim=(3, 5))
    a_s = pooled.pow(2).mean(1).reshape(2, -1)
    a_t = T.pow(2).mean(1).reshape(2, -1)
    a_s = a_s / a_s.norm(dim=1, keepdim=True)
    a_t = a_t / a_t.norm(dim=1, keepdim=True)
    expected = (a_s - a_t).pow(2).mean()
    torch.testing.assert_close(ATLoss()(S, T), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(ATLoss()(T, S), expected, rtol=1e-6, atol=0)


def test_hand_computed():
    # Student: one channel [3, 4] -> squares [9, 16] -> / sqrt(337).
    # Teacher: two channels of ones -> mean of squares [1, 1] -> / sqrt(2).
    S = torch.tensor([[[[3.0, 4.0]]]], dtype=torch.float64)
    T = torch.ones(1, 2, 1, 2, dtype=torch.float64)
    n = math.sqrt(337.0)
    expected = ((9 / n - 1 / math.sqrt(2))**2 + (16 / n - 1 / math.sqrt(2))**2) / 2
    assert ATLoss()(S, T).item() == pytest.approx(expected, rel=1e-12)
    assert 1000.0 * ATLoss()(S, T).item() == pytest.approx(1000 * expected, rel=1e-12)
    # scaling a map does not change its attention: zero loss
    assert ATLoss()(S, 7 * S).item() == pytest.approx(0.0, abs=1e-15)


def test_gradients():
    S = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    T = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    ATLoss()(S, T).backward()
    assert S.grad is not None and S.grad.abs().sum() > 0
    assert T.grad is None
    assert list(ATLoss().parameters()) == []


@pytest.mark.parametrize('p', [2, 3, 1.5])
def test_gradients_match_mdistiller(p):
    # ATLoss has a hand-written backward for feat.pow(p).mean(1)
    S = torch.rand(3, 4, 8, 8, dtype=torch.float64) + 0.05
    T = torch.rand(3, 6, 4, 4, dtype=torch.float64)
    s1, s2 = S.clone().requires_grad_(), S.clone().requires_grad_()
    (1.7 * 3.0 * ATLoss(p=p)(s1, T)).backward()
    (1.7 * 3.0 * reference_at(s2, T, p)).backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-9, atol=1e-12)


def test_half_precision_large_magnitude():
    S64 = torch.randn(2, 4, 8, 8, dtype=torch.float64) * 1e3
    T64 = torch.randn(2, 4, 8, 8, dtype=torch.float64) * 1e3
    S, T = S64.half(), T64.half()
    assert not torch.isfinite(S.pow(2)).all()  # the naive fp16 computation overflows
    out = ATLoss()(S, T)
    assert out.dtype == torch.float32
    assert torch.isfinite(out)
    expected = reference_at(S.double(), T.double(), 2)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=0)


def test_errors_and_registry():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(3, 3, 4, 4\)'):
        ATLoss()(torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4))
    built = DISTILL_LOSSES.build(dict(type='ATLoss', p=2))
    assert isinstance(built, ATLoss) and built.p == 2
    assert ATLoss.channel_args is None
    assert ATLoss.extra_inputs == ()


@pytest.mark.parametrize('compiled', [False, True], ids=['eager', 'compiled'])
@pytest.mark.parametrize('p', [2, 3, 1.5])
def test_fast_form_matches_definition(p, compiled, monkeypatch):
    """The fast channel mean (one-pass backward; compiled: its kernels, eager where compiling
    fails) against the definition, attention_map through autograd, in float64."""
    S = torch.rand(3, 4, 8, 8, dtype=torch.float64) + 0.05
    T = torch.rand(3, 6, 8, 8, dtype=torch.float64)
    loss = ATLoss(p=p, compiled=compiled)
    grads, outs = [], []
    for fast_form in (True, False):
        monkeypatch.setattr(ATLoss, 'fast_form', fast_form)
        s = S.clone().requires_grad_()
        out = loss(s, T)
        (1.7 * out).backward()
        outs.append(out.detach())
        grads.append(s.grad)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(ATLoss(p=p).attention(S), attention_map(S, p), rtol=1e-12, atol=0)
