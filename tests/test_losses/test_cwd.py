"""Tests for CWDLoss against mmrazor's ChannelWiseDivergence (mmdistill.testing.reference_cwd)."""
import math

import pytest
import torch
import torch.nn as nn

from mmdistill.losses.cwd import CWDLoss
from mmdistill.registry import DISTILL_LOSSES
from mmdistill.testing import reference_cwd


@pytest.mark.parametrize('tau,loss_weight', [(1.0, 1.0), (4.0, 3.0), (1.0, 10.0), (0.5, 5.0)])
def test_matches_reference(tau, loss_weight):
    S = torch.randn(3, 5, 6, 7, dtype=torch.float64) * 2
    T = torch.randn(3, 5, 6, 7, dtype=torch.float64) * 2
    got = loss_weight * CWDLoss(tau=tau)(S, T)
    expected = reference_cwd(S, T, tau, loss_weight)
    assert got.dtype == torch.float64
    assert expected > 0
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_matches_reference_with_align():
    loss = CWDLoss(tau=2.0, student_channels=4, teacher_channels=6).double()
    assert isinstance(loss.align, nn.Conv2d)
    align = nn.Conv2d(4, 6, kernel_size=1).double()
    nn.init.normal_(align.weight, std=0.5)
    nn.init.normal_(align.bias, std=0.5)
    loss.align.load_state_dict(align.state_dict())
    S = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    T = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    expected = reference_cwd(align(S), T, 2.0, 3.0)
    torch.testing.assert_close(3.0 * loss(S, T), expected, rtol=1e-6, atol=0)


def test_no_align_when_channels_equal_or_missing():
    assert CWDLoss(student_channels=8, teacher_channels=8).align is None
    assert CWDLoss(student_channels=8).align is None
    assert list(CWDLoss().parameters()) == []


def test_hand_computed():
    # One channel of two locations: S = [0, 0], T = [0, ln 3].
    # p_T = [1/4, 3/4], p_S = [1/2, 1/2];
    # KL = 1/4 ln(1/2) + 3/4 ln(3/2); N * C = 1.
    S = torch.tensor([[[[0.0, 0.0]]]], dtype=torch.float64)
    T = torch.tensor([[[[0.0, math.log(3.0)]]]], dtype=torch.float64)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert CWDLoss()(S, T).item() == pytest.approx(kl, rel=1e-12)
    assert 2.0 * CWDLoss()(S, T).item() == pytest.approx(2 * kl, rel=1e-12)
    # tau = 2: T / 2 = [0, ln sqrt(3)] -> p_T = [1, sqrt 3] / (1 + sqrt 3); times tau^2 = 4
    r = math.sqrt(3.0)
    p0, p1 = 1 / (1 + r), r / (1 + r)
    kl2 = p0 * math.log(p0 / 0.5) + p1 * math.log(p1 / 0.5)
    assert CWDLoss(tau=2.0)(S, T).item() == pytest.approx(4 * kl2, rel=1e-12)
    # averaging over N * C: two channels, the second identical in S and T (KL 0)
    S2 = torch.cat([S, T], dim=1)
    T2 = torch.cat([T, T], dim=1)
    assert CWDLoss()(S2, T2).item() == pytest.approx(kl / 2, rel=1e-12)


def test_zero_for_per_channel_shift():
    T = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    S = T + torch.randn(2, 3, 1, 1, dtype=torch.float64) * 5  # softmax is shift invariant
    assert CWDLoss(tau=3.0)(S, T).abs().item() < 1e-12


def test_gradients():
    loss = CWDLoss(tau=2.0, student_channels=3, teacher_channels=5).double()
    S = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    T = torch.randn(2, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    loss(S, T).backward()
    assert S.grad is not None and S.grad.abs().sum() > 0
    assert T.grad is None
    for name, p in loss.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_half_precision_large_magnitude():
    S64 = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 2e4
    T64 = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 2e4
    S, T = S64.half(), T64.half()
    out = 5.0 * CWDLoss(tau=1.0)(S, T)
    assert out.dtype == torch.float32
    assert torch.isfinite(out)
    expected = reference_cwd(S.double(), T.double(), 1.0, 5.0)
    torch.testing.assert_close(out.double(), expected, rtol=1e-3, atol=0)


def test_shape_errors_and_registry():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 3, 8, 8\)'):
        CWDLoss()(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match='student_channels'):
        CWDLoss()(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))
    built = DISTILL_LOSSES.build(dict(type='CWDLoss', tau=4.0))
    assert isinstance(built, CWDLoss) and built.tau == 4.0
    assert CWDLoss.channel_args == ('student_channels', 'teacher_channels')
    assert CWDLoss.extra_inputs == ()


# The CPU kernel (the default on the CPU) against the definition (cpu_kernel=False) through
# autograd: loss and student gradient, with and without a gradient, in float64 (the C library's
# exp) and in float32 (the kernel's polynomial exp) on logits whose exponentials span the whole
# float32 range below 1.
def _kernel_and_definition(S, T, tau, weight=1.0, **kwargs):
    from mmdistill.losses.fast import cwd_kernel
    assert cwd_kernel.available(S), cwd_kernel.KERNEL.failed
    out = []
    for kernel in (True, False):
        s = S.clone().requires_grad_()
        loss = CWDLoss(tau=tau, cpu_kernel=kernel, **kwargs).to(S.dtype)
        value = loss(s, T)
        (weight * value).backward()
        with torch.no_grad():
            # the value-only path (its sums may be vectorised otherwise: rounding apart)
            assert float(loss(S, T)) == pytest.approx(float(value), rel=1e-6)
        out.append((value.detach(), s.grad))
    return out


@pytest.mark.parametrize('tau', [1.0, 0.5, 4.0])
def test_cpu_kernel_equals_definition_in_float64(tau):
    S = torch.randn(3, 5, 9, 11, dtype=torch.float64) * 3
    T = torch.randn(3, 5, 9, 11, dtype=torch.float64) * 2 + 1
    (v, g), (v_ref, g_ref) = _kernel_and_definition(S, T, tau, weight=1.3)
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-14 * g_ref.abs().max())


@pytest.mark.parametrize('tau', [1.0, 2.0])
def test_cpu_kernel_float32_within_float32_rounding(tau):
    # exponents from 0 down to about -100 (below exp's float32 range: the kernel clamps at -87)
    S = torch.linspace(-100 * tau, 0, 2 * 4 * 300, dtype=torch.float64).reshape(2, 4, 20, 15)
    S = S[:, :, torch.randperm(20)]
    T = torch.randn(2, 4, 20, 15, dtype=torch.float64) * 4
    (v, g), _ = _kernel_and_definition(S.float(), T.float(), tau)
    (v_ref, g_ref), _ = _kernel_and_definition(S, T, tau)
    assert v.dtype == torch.float32
    assert float(v) == pytest.approx(float(v_ref), rel=1e-5)
    assert float((g.double() - g_ref).abs().max()) <= 1e-5 * float(g_ref.abs().max())


def test_cpu_kernel_large_logits_and_align():
    """Logits of thousands (exp of them overflows without the row maxima), an align conv."""
    S = torch.randn(2, 4, 6, 7, dtype=torch.float64) * 1000
    T = torch.randn(2, 6, 6, 7, dtype=torch.float64) * 1000
    torch.manual_seed(0)
    loss = CWDLoss(tau=1.0, student_channels=4, teacher_channels=6).double()
    ref = CWDLoss(tau=1.0, student_channels=4, teacher_channels=6, cpu_kernel=False).double()
    ref.load_state_dict(loss.state_dict())
    outs = []
    for m in (loss, ref):
        s = S.clone().requires_grad_()
        out = m(s, T)
        out.backward()
        outs.append((out.detach(), s.grad, m.align.weight.grad))
    assert torch.isfinite(outs[0][0])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * b.abs().max())


def test_cpu_kernel_not_built_runs_the_definition(monkeypatch):
    from mmdistill.losses.fast import cwd_kernel
    monkeypatch.setattr(cwd_kernel.KERNEL, 'failed', 'no compiler (test)')
    S = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    T = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    assert not cwd_kernel.available(S)
    got = CWDLoss(tau=2.0)(S, T)
    assert float(got) == float(CWDLoss(tau=2.0, cpu_kernel=False)(S, T))
    with pytest.raises(ValueError, match='tau must be positive'):
        CWDLoss(tau=0.0)
