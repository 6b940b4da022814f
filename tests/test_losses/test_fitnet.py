"""Tests for FitNetLoss against mdistiller's FitNet (ConvReg + F.mse_loss)."""
import math

import pytest
import torch

from mmdistill.losses.fitnet import FitNetLoss
from mmdistill.registry import DISTILL_LOSSES
from mmdistill.testing import RefConvReg, reference_fitnet


@pytest.mark.parametrize('s_shape,t_shape', [
    ((4, 6, 5, 5), (4, 6, 5, 5)),   # same channels: still a 1x1 conv
    ((4, 3, 5, 5), (4, 7, 5, 5)),   # 1x1 conv, channels differ
    ((4, 3, 8, 8), (4, 5, 4, 4)),   # student twice as large: 3x3 stride 2
    ((4, 3, 4, 4), (4, 5, 8, 8)),   # student half as large: transposed conv
    ((4, 3, 6, 7), (4, 5, 4, 4)),   # larger student: kernel (3, 4)
])
@pytest.mark.parametrize('use_relu', [True, False])
def test_matches_mdistiller(s_shape, t_shape, use_relu):
    ref = RefConvReg(s_shape, t_shape, use_relu=use_relu).double()
    same = s_shape[2:] == t_shape[2:]
    ours = FitNetLoss(s_shape[1], t_shape[1],
                      student_hw=None if same else s_shape[2:],
                      teacher_hw=None if same else t_shape[2:], use_relu=use_relu).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(std=0.5)  # non-trivial BN affine too
    ours.load_state_dict(ref.state_dict())
    S = torch.randn(*s_shape, dtype=torch.float64)
    T = torch.randn(*t_shape, dtype=torch.float64)
    for train in (True, False):  # batch statistics, then running statistics
        ref.train(train)
        ours.train(train)
        expected = reference_fitnet(ref, S, T, 100.0)
        got = 100.0 * ours(S, T)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours.bn.running_mean, ref.bn.running_mean)


def test_hand_computed():
    # Cs = Ct = 1, N = 2, 1x1 maps; conv = identity; BN (train) turns [1, 3] into
    # [-1, 1] / sqrt(1 + eps); ReLU -> [0, 1 / sqrt(1 + eps)]; T = [0.5, 0.5].
    loss = FitNetLoss(1, 1).double()
    with torch.no_grad():
        loss.conv.weight.fill_(1.0)
        loss.conv.bias.zero_()
    S = torch.tensor([1.0, 3.0], dtype=torch.float64).view(2, 1, 1, 1)
    T = torch.full((2, 1, 1, 1), 0.5, dtype=torch.float64)
    b = 1 / math.sqrt(1 + 1e-5)
    expected = 4.0 * ((0 - 0.5)**2 + (b - 0.5)**2) / 2
    assert 4.0 * loss(S, T).item() == pytest.approx(expected, rel=1e-12)


def test_gradients():
    loss = FitNetLoss(3, 5).double()
    S = torch.randn(4, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    T = torch.randn(4, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    loss(S, T).backward()
    assert S.grad is not None and S.grad.abs().sum() > 0
    assert T.grad is None
    names = {n for n, _ in loss.named_parameters()}
    assert names == {'conv.weight', 'conv.bias', 'bn.weight', 'bn.bias'}
    for name, p in loss.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('module_half', [False, True])
def test_half_precision_large_magnitude(module_half):
    loss = FitNetLoss(4, 4)
    if module_half:
        loss = loss.half()
    S = (torch.randn(2, 4, 8, 8) * 300).half()
    T = (torch.randn(2, 4, 8, 8) * 300).half()
    out = loss(S, T)
    assert out.dtype == torch.float32
    assert torch.isfinite(out)
    assert out.item() > 65504 / 2  # squares of ~300 are outside the fp16 range


def test_errors_and_registry():
    with pytest.raises(ValueError, match='student_channels'):
        FitNetLoss()
    with pytest.raises(ValueError, match='teacher_channels'):
        FitNetLoss(student_channels=4)
    with pytest.raises(ValueError, match='student_hw'):
        FitNetLoss(4, 4, student_hw=(8, 8))
    with pytest.raises(ValueError, match=r'\(3, 3\)'):
        FitNetLoss(4, 4, student_hw=(3, 3), teacher_hw=(5, 5))
    loss = FitNetLoss(4, 6)
    with pytest.raises(ValueError, match=r'\(2, 6, 8, 8\).*\(2, 6, 4, 4\).*student_hw'):
        loss(torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4))
    built = DISTILL_LOSSES.build(dict(type='FitNetLoss', student_channels=4,
                                      teacher_channels=8))
    assert isinstance(built, FitNetLoss) and built.conv.out_channels == 8
    assert FitNetLoss.channel_args == ('student_channels', 'teacher_channels')
    assert FitNetLoss.extra_inputs == ()


def test_tutorial_regressor():
    """kernel_size=3, no BN, no ReLU: the PyTorch KD tutorial's regressor, a plain
    Conv2d(Cs, Ct, 3, padding=1), and its nn.MSELoss."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 32, kernel_size=3, padding=1).double()
    ours = FitNetLoss(16, 32, kernel_size=3, use_bn=False,
                      use_relu=False).double()
    ours.conv.load_state_dict(conv.state_dict())
    S = torch.randn(4, 16, 8, 8, dtype=torch.float64)
    T = torch.randn(4, 32, 8, 8, dtype=torch.float64)
    expected = 0.25 * torch.nn.MSELoss()(conv(S), T)
    torch.testing.assert_close(0.25 * ours(S, T), expected, rtol=1e-12, atol=0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.modules())
    with pytest.raises(ValueError, match='kernel_size must be odd'):
        FitNetLoss(16, 32, kernel_size=2)
