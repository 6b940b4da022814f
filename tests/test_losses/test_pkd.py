"""Tests for PKDLoss against mmrazor's PKDLoss, written the way the official code computes it."""
import pytest
import torch
import torch.nn.functional as F

from mmdistill.losses.pkd import PKDLoss
from mmdistill.registry import DISTILL_LOSSES


def reference_pkd(preds_S, preds_T, loss_weight=1.0, resize_stu=True):
    """mmrazor PKDLoss: channels-first reshape, per-channel mean/std, MSE / 2 per level."""
    def norm(feat):
        n, c, h, w = feat.shape
        feat = feat.permute(1, 0, 2, 3).reshape(c, -1)
        mean = feat.mean(dim=-1, keepdim=True)
        std = feat.std(dim=-1, keepdim=True)
        feat = (feat - mean) / (std + 1e-6)
        return feat.reshape(c, n, h, w).permute(1, 0, 2, 3)

    if isinstance(preds_S, torch.Tensor):
        preds_S, preds_T = (preds_S, ), (preds_T, )
    loss = 0.
    for pred_S, pred_T in zip(preds_S, preds_T):
        size_S, size_T = pred_S.shape[2:], pred_T.shape[2:]
        if size_S[0] != size_T[0]:
            if resize_stu:
                pred_S = F.interpolate(pred_S, size_T, mode='bilinear')
            else:
                pred_T = F.interpolate(pred_T, size_S, mode='bilinear')
        loss += F.mse_loss(norm(pred_S), norm(pred_T)) / 2
    return loss * loss_weight


@pytest.mark.parametrize('loss_weight', [1.0, 6.0])
def test_matches_reference(loss_weight):
    S = torch.randn(3, 5, 6, 7, dtype=torch.float64) * 3 + 1
    T = torch.randn(3, 5, 6, 7, dtype=torch.float64) * 0.5 - 2
    got = loss_weight * PKDLoss()(S, T)
    expected = reference_pkd(S, T, loss_weight)
    assert expected > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize('resize_stu', [True, False])
def test_resize_matches_reference(resize_stu):
    S = torch.randn(2, 4, 10, 12, dtype=torch.float64)
    T = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    got = PKDLoss(resize_stu=resize_stu)(S, T)
    torch.testing.assert_close(got, reference_pkd(S, T, 1.0, resize_stu), rtol=1e-6, atol=0)


def test_pearson_identity_and_invariance():
    # (1 - r) per channel: the loss of a map with itself is 0; a per-channel affine map of the
    # teacher (positive scale) is still 0; a sign flip gives 1 - (-1) = 2 per channel, i.e.
    # mean((z + z)^2) / 2 = 2 * mean(z^2) = 2 (n - 1) / n with the unbiased std.
    T = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    scale = torch.tensor([2.0, 0.1, 7.0], dtype=torch.float64).view(1, 3, 1, 1)
    shift = torch.tensor([-3.0, 1.0, 10.0], dtype=torch.float64).view(1, 3, 1, 1)
    loss = PKDLoss()
    assert loss(T, T).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(T * scale + shift, T).item() == pytest.approx(0.0, abs=1e-10)
    n = 2 * 4 * 5
    assert loss(-T, T).item() == pytest.approx(2 * (n - 1) / n, rel=1e-5)


def test_gradient_reaches_student_only():
    S = torch.randn(2, 4, 6, 6, requires_grad=True)
    T = torch.randn(2, 4, 6, 6, requires_grad=True)
    (6.0 * PKDLoss()(S, T)).backward()
    assert S.grad is not None and S.grad.abs().sum() > 0
    assert T.grad is None


def test_align_when_channels_differ():
    loss = PKDLoss(student_channels=4, teacher_channels=6).double()
    assert loss.align.weight.shape == (6, 4, 1, 1) and loss.align.bias is None
    S = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    T = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(loss(S, T), reference_pkd(loss.align(S), T), rtol=1e-6, atol=0)
    assert PKDLoss(student_channels=8, teacher_channels=8).align is None
    with pytest.raises(ValueError, match='student_channels'):
        PKDLoss()(S, T)


def test_half_inputs_computed_in_float32():
    S = (torch.randn(2, 3, 4, 4) * 100).half()
    T = (torch.randn(2, 3, 4, 4) * 100).half()
    got = PKDLoss()(S, T)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, reference_pkd(S.float(), T.float()), rtol=1e-5, atol=1e-6)


def test_registered():
    assert DISTILL_LOSSES.get('PKDLoss') is PKDLoss
