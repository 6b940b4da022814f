import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.sdd import SDDLoss, multi_scale_pool, sdd_kd_loss, sdd_region_weights
from mmdistill.registry import DISTILL_LOSSES


def reference_sdd(local_S, local_T, target, T):
    """Row loop in the official order: (N, K, M) -> permute (M, N, K) -> rows r = m * N + n;
    rows 0..N-1 are the global region. Four explicit cases, as the official masks."""
    n, k, m = local_S.shape
    rows_S = local_S.permute(2, 0, 1).reshape(m * n, k)
    rows_T = local_T.permute(2, 0, 1).reshape(m * n, k)
    target_r = target.repeat(m)
    global_right = [int(rows_T[i].argmax()) == int(target[i]) for i in range(n)]
    total = 0.0
    for r in range(m * n):
        p_t = torch.softmax(rows_T[r] / T, dim=0)
        log_p_s = torch.log_softmax(rows_S[r] / T, dim=0)
        kl = (p_t * (torch.log(p_t) - log_p_s)).sum() * T**2
        local_right = int(rows_T[r].argmax()) == int(target_r[r])
        g = global_right[r % n]
        if g and local_right:  # global true, local true
            w = 1.0
        elif not g and not local_right:  # global wrong, local wrong
            w = 1.0
        else:  # global true / local wrong or global wrong / local true
            w = 2.0
        total = total + kl * w
    return total / (m * n)


class _SPP(nn.Module):
    """Official-style SPP: 4x4 adaptive pool, then 2x2 and 1x1 from the 4x4, cat [1, 2, 4]."""

    def __init__(self):
        super().__init__()
        self.p4, self.p2, self.p1 = (nn.AdaptiveAvgPool2d(s) for s in (4, 2, 1))

    def forward(self, x):
        x4 = self.p4(x)
        return torch.cat([torch.flatten(self.p1(x4), 2), torch.flatten(self.p2(x4), 2),
                          torch.flatten(x4, 2)], dim=2)


@pytest.mark.parametrize('scales,T', [((1, 2, 4), 4.0), ((1, 2), 1.0), ((1, ), 2.0)])
def test_matches_reference(scales, T):
    m = sum(s * s for s in scales)
    n, k = 6, 5
    s = torch.randn(n, k, m, dtype=torch.float64) * 2
    t = torch.randn(n, k, m, dtype=torch.float64) * 2
    # Labels chosen so every case occurs: half of them the teacher's global prediction.
    y = torch.randint(0, k, (n, ))
    y[:3] = t[:3, :, 0].argmax(1)
    loss = SDDLoss(temperature=T, scales=scales)(s, t, y)
    assert loss.dim() == 0 and loss.dtype == torch.float64
    torch.testing.assert_close(loss, reference_sdd(s, t, y, T), rtol=1e-6, atol=0)


def test_weights_hand_built():
    """Teacher logits built per (sample, region) as right / wrong w.r.t. the label."""
    n, k, m = 4, 3, 5  # scales (1, 2)
    y = torch.tensor([0, 1, 2, 0])
    # right[i][j]: is the teacher's prediction for sample i, region j the label?
    right = [
        [True, True, False, True, False],  # global right: weights 1 1 2 1 2
        [False, True, False, False, True],  # global wrong: weights 1 2 1 1 2
        [True, True, True, True, True],  # all consistent
        [False, False, False, False, False],  # all wrong: consistent too
    ]
    t = torch.zeros(n, k, m, dtype=torch.float64)
    for i in range(n):
        for j in range(m):
            cls = int(y[i]) if right[i][j] else (int(y[i]) + 1) % k
            t[i, cls, j] = 5.0
    expected = torch.tensor([[1, 1, 2, 1, 2], [1, 2, 1, 1, 2], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]],
                            dtype=torch.float64)
    assert torch.equal(sdd_region_weights(t, y), expected)

    s = torch.randn(n, k, m, dtype=torch.float64)
    kl = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction='none').sum(1) * 16
    torch.testing.assert_close(sdd_kd_loss(s, t, y, 4.0), (kl * expected).sum() / (n * m),
                               rtol=1e-12, atol=0)


def test_weights_use_teacher_not_student():
    n, k, m = 3, 4, 5
    t = torch.randn(n, k, m, dtype=torch.float64)
    y = t[:, :, 0].argmax(1)
    w = sdd_region_weights(t, y)
    s1 = torch.randn(n, k, m, dtype=torch.float64)
    # Changing the student changes the KL but never the weights: loss / weights consistent.
    for s in (s1, -s1):
        kl = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction='none').sum(1)
        torch.testing.assert_close(sdd_kd_loss(s, t, y, 1.0), (kl * w).sum() / (n * m),
                                   rtol=1e-12, atol=0)
    assert torch.all(w[:, 0] == 1)


def test_pool_ordering_hand_built():
    # 8x8 map whose 2x2 blocks hold the 4x4-cell index 0..15 (row-major) in channel 0 and a
    # constant in channel 1.
    cell = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    ch0 = cell.repeat_interleave(2, 0).repeat_interleave(2, 1)
    feat = torch.stack([ch0, torch.full((8, 8), 3.0, dtype=torch.float64)]).unsqueeze(0)
    out = multi_scale_pool(feat, (1, 2, 4))
    assert out.shape == (1, 2, 21)
    # [1x1 | 2x2: top-left, top-right, bottom-left, bottom-right | 4x4 row-major]
    expected = [7.5] + [2.5, 4.5, 10.5, 12.5] + list(range(16))
    torch.testing.assert_close(out[0, 0], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(out[0, 1], torch.full((21, ), 3.0, dtype=torch.float64))
    assert multi_scale_pool(feat, (1, 2)).shape == (1, 2, 5)


@pytest.mark.parametrize('hw', [(8, 8), (7, 7), (14, 10)])
def test_pool_matches_official_spp(hw):
    """Also for sizes not divisible by 4, where pooling 1x1 / 2x2 from the 4x4 grid differs
    from pooling the map directly."""
    feat = torch.randn(2, 3, *hw, dtype=torch.float64)
    torch.testing.assert_close(multi_scale_pool(feat), _SPP()(feat), rtol=0, atol=0)
    torch.testing.assert_close(multi_scale_pool(feat, (1, 2)), _SPP()(feat)[:, :, :5], rtol=0,
                               atol=0)


def test_soft_labels_use_argmax():
    n, k, m = 5, 6, 21
    s = torch.randn(n, k, m, dtype=torch.float64)
    t = torch.randn(n, k, m, dtype=torch.float64)
    y = torch.randint(0, k, (n, ))
    soft = 0.6 * F.one_hot(y, k).double() + 0.4 / k
    loss = SDDLoss()
    torch.testing.assert_close(loss(s, t, soft), loss(s, t, y), rtol=0, atol=0)


def test_gradients_reach_student_only():
    s = torch.randn(3, 4, 21, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, 21, dtype=torch.float64, requires_grad=True)
    SDDLoss()(s, t, torch.tensor([0, 1, 2])).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_half_precision_finite():
    s = (torch.randn(3, 10, 21) * 3e4).clamp(-6e4, 6e4).half()
    t = (torch.randn(3, 10, 21) * 3e4).clamp(-6e4, 6e4).half()
    out = SDDLoss(temperature=1.0)(s, t, torch.tensor([0, 1, 2]))
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_shape_and_scale_checks():
    with pytest.raises(ValueError):
        SDDLoss(scales=(2, 4))  # the global region must come first
    with pytest.raises(ValueError):
        SDDLoss(scales=(1, 3, 4))
    loss = SDDLoss(scales=(1, 2))
    with pytest.raises(ValueError, match='M=5'):
        loss(torch.randn(2, 3, 21), torch.randn(2, 3, 21), torch.tensor([0, 1]))
    built = DISTILL_LOSSES.build(dict(type='SDDLoss', temperature=2.0, scales=[1, 2, 4]))
    assert built.scales == (1, 2, 4) and built.num_regions == 21
    assert SDDLoss.extra_inputs == ('gt_labels', ) and SDDLoss.channel_args is None
