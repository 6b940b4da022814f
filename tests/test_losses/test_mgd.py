"""Tests for MGDLoss against a reference written the way yzd-v/MGD writes it."""
import pytest
import torch
import torch.nn as nn

from mmdistill.losses.mgd import MGDLoss
from mmdistill.registry import DISTILL_LOSSES
from mmdistill.testing import RefMGD


def _pair(cs, ct, alpha, lam, mask_type):
    ours = MGDLoss(student_channels=cs, teacher_channels=ct, alpha_mgd=alpha, lambda_mgd=lam,
                   mask_type=mask_type)
    ref = RefMGD(cs, ct, alpha, lam, cls=mask_type == 'channel')
    # random, non-trivial weights (biases included), shared between the two
    for p in ref.parameters():
        nn.init.normal_(p, std=0.3)
    ours.load_state_dict(ref.state_dict())
    return ours.double(), ref.double()


@pytest.mark.parametrize('mask_type,alpha,lam', [('spatial', 2e-5, 0.65), ('spatial', 2e-5, 0.75),
                                                 ('channel', 7e-5, 0.15), ('channel', 7e-5, 0.5)])
@pytest.mark.parametrize('cs,ct', [(6, 6), (4, 6)])
def test_matches_official(mask_type, alpha, lam, cs, ct):
    ours, ref = _pair(cs, ct, alpha, lam, mask_type)
    S = torch.randn(3, cs, 5, 7, dtype=torch.float64)
    T = torch.randn(3, ct, 5, 7, dtype=torch.float64)
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        expected = ref(S, T)
        torch.manual_seed(seed)
        got = ours(S, T)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    # the mask is random: different seeds give different values
    torch.manual_seed(1)
    a = ours(S, T)
    torch.manual_seed(2)
    b = ours(S, T)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize('mask_type,lam', [('spatial', 0.65), ('channel', 0.15)])
def test_mask_ratio_and_shape(mask_type, lam):
    loss = MGDLoss(teacher_channels=4, lambda_mgd=lam, mask_type=mask_type)
    mask = loss.random_mask(64, 32, 16, 16, torch.device('cpu'))
    shape = (64, 1, 16, 16) if mask_type == 'spatial' else (64, 32, 1, 1)
    assert mask.shape == shape
    assert set(mask.unique().tolist()) <= {0, 1}
    masked = 1 - mask.double().mean().item()
    assert abs(masked - lam) < 0.03


@pytest.mark.parametrize('mask_type', ['spatial', 'channel'])
def test_hand_computed(mask_type):
    # N = C = H = W = 1: only the centre tap of each 3x3 kernel sees the pixel, so
    # generation(x) = w2 * relu(w1 * x + b1) + b2.
    loss = MGDLoss(student_channels=1, teacher_channels=1, alpha_mgd=1.0, lambda_mgd=0.0,
                   mask_type=mask_type).double()
    conv1, conv2 = loss.generation[0], loss.generation[2]
    with torch.no_grad():
        for conv in (conv1, conv2):
            conv.weight.zero_()
        conv1.weight[0, 0, 1, 1] = 3.0
        conv1.bias.fill_(-1.0)
        conv2.weight[0, 0, 1, 1] = 0.5
        conv2.bias.fill_(0.25)
    S = torch.full((1, 1, 1, 1), 2.0, dtype=torch.float64)
    T = torch.full((1, 1, 1, 1), 1.0, dtype=torch.float64)
    # lambda 0: nothing masked, 0.5 * relu(3 * 2 - 1) + 0.25 = 2.75, (2.75 - 1)^2 = 3.0625
    assert loss(S, T).item() == pytest.approx(3.0625, rel=1e-12)
    # lambda 1: everything masked, 0.5 * relu(-1) + 0.25 = 0.25, (0.25 - 1)^2 = 0.5625
    loss.lambda_mgd = 1.0
    assert loss(S, T).item() == pytest.approx(0.5625, rel=1e-12)
    # batch of 2 identical samples: sum / N leaves the value unchanged; alpha scales it
    loss.alpha_mgd = 2e-5
    assert loss(S.repeat(2, 1, 1, 1), T.repeat(2, 1, 1, 1)).item() == pytest.approx(
        2e-5 * 0.5625, rel=1e-12)


@pytest.mark.parametrize('mask_type', ['spatial', 'channel'])
@pytest.mark.parametrize('cs,ct', [(4, 4), (3, 4)])
def test_gradients(mask_type, cs, ct):
    loss = MGDLoss(cs, ct, alpha_mgd=1.0, lambda_mgd=0.5, mask_type=mask_type).double()
    S = torch.randn(2, cs, 4, 4, dtype=torch.float64, requires_grad=True)
    T = torch.randn(2, ct, 4, 4, dtype=torch.float64, requires_grad=True)
    loss(S, T).backward()
    assert S.grad is not None and S.grad.abs().sum() > 0
    assert T.grad is None
    params = dict(loss.named_parameters())
    assert ('align.weight' in params) == (cs != ct)
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_channel_mask_accepts_vectors():
    loss = MGDLoss(5, 6, alpha_mgd=1.0, lambda_mgd=0.3, mask_type='channel').double()
    S = torch.randn(4, 5, dtype=torch.float64)
    T = torch.randn(4, 6, dtype=torch.float64)
    torch.manual_seed(7)
    a = loss(S, T)
    torch.manual_seed(7)
    b = loss(S[:, :, None, None], T[:, :, None, None])
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize('module_half', [False, True])
def test_half_precision_large_magnitude(module_half):
    loss = MGDLoss(4, 4, alpha_mgd=2e-5, lambda_mgd=0.65)
    if module_half:
        loss = loss.half()
    S = (torch.randn(2, 4, 8, 8) * 300).half()
    T = (torch.randn(2, 4, 8, 8) * 300).half()
    out = loss(S, T)
    assert out.dtype == torch.float32
    assert torch.isfinite(out)
    # the sum of squares alone is far beyond the fp16 range (65504)
    assert out.item() / 2e-5 * 2 > 65504


def test_errors_and_registry():
    with pytest.raises(ValueError, match='teacher_channels'):
        MGDLoss(student_channels=4)
    with pytest.raises(ValueError, match='mask_type'):
        MGDLoss(4, 4, mask_type='pixel')
    loss = MGDLoss(4, 4)
    with pytest.raises(ValueError, match=r'\(2, 4, 5, 5\).*\(2, 4, 6, 6\)'):
        loss(torch.randn(2, 4, 5, 5), torch.randn(2, 4, 6, 6))
    built = DISTILL_LOSSES.build(dict(type='MGDLoss', student_channels=8, teacher_channels=16))
    assert isinstance(built, MGDLoss) and built.align is not None
    assert built.alpha_mgd == 2e-5 and built.lambda_mgd == 0.65
    assert MGDLoss.channel_args == ('student_channels', 'teacher_channels')
    assert MGDLoss.extra_inputs == ()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_mask_on_device():
    loss = MGDLoss(4, 4).cuda()
    S = torch.randn(2, 4, 8, 8, device='cuda')
    T = torch.randn(2, 4, 8, 8, device='cuda')
    torch.manual_seed(3)
    a = loss(S, T)
    torch.manual_seed(3)
    b = loss(S, T)
    assert a.device.type == 'cuda'
    torch.testing.assert_close(a, b)
