"""Tests of CCDLoss against a loop reference written from the definition in METHODS.md."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.ccd import CCDLoss, momentum_update_prototypes
from mmdistill.registry import DISTILL_LOSSES


# ----------------------------------------------------------------------------------------------
# Reference: loops over classes and samples, align as a 1x1 conv applied before pooling.
# ----------------------------------------------------------------------------------------------
def ref_update(protos, feats, labels, momentum):
    new = [row for row in protos.detach().clone()]
    for c in range(protos.shape[0]):
        members = [feats[i] for i in range(len(labels)) if int(labels[i]) == c]
        if not members:
            continue
        mean = sum(members) / len(members)
        v = momentum * new[c] + (1 - momentum) * mean
        new[c] = v / v.norm()
    return torch.stack(new)


class RefCCD:
    def __init__(self, align_conv, num_classes, dim, temperature, momentum, proto_weight):
        self.align = align_conv
        self.P_s = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.P_t = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.T, self.m, self.w = temperature, momentum, proto_weight

    def __call__(self, feat_S, feat_T, labels):
        if labels.dim() == 2:
            labels = labels.argmax(1)
        fs = self.align(feat_S) if self.align is not None else feat_S
        s = F.adaptive_avg_pool2d(fs, 1).flatten(1)
        t = F.adaptive_avg_pool2d(feat_T.detach(), 1).flatten(1)
        s = s / s.norm(dim=1, keepdim=True)
        t = t / t.norm(dim=1, keepdim=True)
        P_t = ref_update(self.P_t, t, labels, self.m)
        P_s = ref_update(self.P_s, s, labels, self.m)
        self.P_t, self.P_s = P_t.detach().clone(), P_s.detach().clone()
        kl = 0
        for i in range(s.shape[0]):
            p_t = torch.softmax(t[i] @ P_t.t() / self.T, 0)
            p_s = torch.softmax(s[i] @ P_t.t() / self.T, 0)
            kl = kl + (p_t * torch.log(p_t / p_s)).sum()
        kl = kl / s.shape[0]
        mse = ((P_s - P_t) ** 2).sum() / P_s.numel()
        return self.T ** 2 * kl + self.w * mse


CS, CT, K, N = 6, 10, 7, 9


# ----------------------------------------------------------------------------------------------
def test_prototype_update_matches_loop_and_absent_unchanged():
    protos = F.normalize(torch.randn(K, CT, dtype=torch.float64), dim=1)
    feats = F.normalize(torch.randn(N, CT, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 2, 2, 5, 0, 0, 2, 5, 3])  # classes 1, 4, 6 absent
    got = momentum_update_prototypes(protos, feats, labels, 0.9)
    torch.testing.assert_close(got, ref_update(protos, feats, labels, 0.9), rtol=1e-10, atol=1e-12)
    for c in (1, 4, 6):
        assert torch.equal(got[c], protos[c])
    for c in (0, 2, 3, 5):
        assert not torch.allclose(got[c], protos[c])
        assert got[c].norm().item() == pytest.approx(1.0)


def test_first_update_from_zero_is_normalised_mean():
    feats = torch.randn(4, 3, dtype=torch.float64)
    labels = torch.tensor([1, 1, 0, 1])
    got = momentum_update_prototypes(torch.zeros(3, 3, dtype=torch.float64), feats, labels, 0.999)
    torch.testing.assert_close(got[1], F.normalize(feats[[0, 1, 3]].mean(0), dim=0))
    torch.testing.assert_close(got[0], F.normalize(feats[2], dim=0))
    assert torch.equal(got[2], torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize('soft_labels', [False, True])
@pytest.mark.parametrize('channels', [(CS, CT), (CT, CT)])
def test_matches_reference_over_steps(soft_labels, channels):
    cs, ct = channels
    ours = CCDLoss(cs, ct, num_classes=K, temperature=0.5, momentum=0.7,
                   proto_weight=0.8).double()
    if cs != ct:
        conv = nn.Conv2d(cs, ct, 1).double()
        with torch.no_grad():
            conv.weight.copy_(ours.align.weight[:, :, None, None])
            conv.bias.copy_(ours.align.bias)
    else:
        assert isinstance(ours.align, nn.Identity)
        conv = None
    ref = RefCCD(conv, K, ct, 0.5, 0.7, 0.8)
    for step in range(3):
        fs = torch.randn(N, cs, 3, 3, dtype=torch.float64, requires_grad=True)
        ft = torch.randn(N, ct, 3, 3, dtype=torch.float64)
        if soft_labels:
            labels = torch.softmax(torch.randn(N, K, dtype=torch.float64) * 3, dim=1)
        else:
            labels = torch.randint(0, K - 2, (N,))  # the last two classes stay absent
        got = ours(fs, ft, gt_labels=labels)
        (g_ours,) = torch.autograd.grad(got, fs)
        fs_ref = fs.detach().clone().requires_grad_(True)
        expected = ref(fs_ref, ft, labels)
        (g_ref,) = torch.autograd.grad(expected, fs_ref)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(ours.proto_t, ref.P_t, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours.proto_s, ref.P_s, rtol=1e-10, atol=1e-12)
        assert got.dim() == 0
    if not soft_labels:
        assert torch.equal(ours.proto_t[K - 2:], torch.zeros(2, ct, dtype=torch.float64))


def test_hand_computed_tiny_case():
    # momentum 0: prototypes = normalised class means. t = e1, e2 (labels 0, 1) -> P_t = I.
    # s = e1 for both samples -> P_s = [e1, e1]. T = 1.
    # row 0: identical distributions -> KL 0.
    # row 1: p_t = softmax([0, 1]), p_s = softmax([1, 0]) -> KL = (e - 1) / (e + 1).
    # mse(P_s, P_t) = (0 + 0 + 1 + 1) / 4 = 0.5
    loss = CCDLoss(2, 2, num_classes=2, temperature=1.0, momentum=0.0, proto_weight=0.5).double()
    fs = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    ft = torch.tensor([[3.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    out = loss(fs, ft, gt_labels=torch.tensor([0, 1]))
    e = math.e
    expected = (e - 1) / (e + 1) / 2 + 0.5 * 0.5
    assert out.item() == pytest.approx(expected, rel=1e-12)
    # T^2 factor: T = 2 halves the logits and multiplies by 4
    loss2 = CCDLoss(2, 2, num_classes=2, temperature=2.0, momentum=0.0, proto_weight=0.0).double()
    out2 = loss2(fs, ft, gt_labels=torch.tensor([0, 1]))
    a, b = 1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))
    assert out2.item() == pytest.approx(4 * (b - a) * 0.5 / 2, rel=1e-12)


def test_gradients():
    loss = CCDLoss(CS, CT, num_classes=K)
    fs = torch.randn(N, CS, 4, 4, requires_grad=True)
    ft = torch.randn(N, CT, 4, 4, requires_grad=True)
    out = loss(fs, ft, gt_labels=torch.randint(0, 3, (N,)))  # most classes absent
    out.backward()
    assert torch.isfinite(out)
    assert fs.grad is not None and torch.isfinite(fs.grad).all() and fs.grad.abs().sum() > 0
    assert ft.grad is None
    for name, p in loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert not loss.proto_s.requires_grad and not loss.proto_t.requires_grad


def test_proto_term_has_gradient():
    """Student features equal to the teacher's: the KL term is at its minimum (zero gradient),
    so any gradient comes from mse(P_s, P_t) through the batch-updated student prototypes."""
    loss = CCDLoss(CT, CT, num_classes=K, proto_weight=1.0, momentum=0.5).double()
    loss.proto_s.copy_(F.normalize(torch.randn(K, CT), dim=1))
    loss.proto_t.copy_(F.normalize(torch.randn(K, CT), dim=1))
    ft = torch.randn(N, CT, dtype=torch.float64)
    fs = ft.clone().requires_grad_(True)
    out = loss(fs, ft, gt_labels=torch.randint(0, K, (N,)))
    out.backward()
    assert fs.grad.abs().sum() > 1e-3
    loss2 = CCDLoss(CT, CT, num_classes=K, proto_weight=0.0, momentum=0.5).double()
    fs2 = ft.clone().requires_grad_(True)
    loss2(fs2, ft, gt_labels=torch.randint(0, K, (N,))).backward()
    assert fs2.grad.abs().max() < 1e-12


def test_low_precision_autocast_finite():
    loss = CCDLoss(CS, CT, num_classes=K)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = loss(torch.randn(N, CS, 2, 2) * 1e3, torch.randn(N, CT, 2, 2) * 1e3,
                   gt_labels=torch.randint(0, K, (N,)))
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_build_state_and_errors():
    loss = DISTILL_LOSSES.build(dict(type='CCDLoss', student_channels=CS, teacher_channels=CT,
                                     num_classes=K))
    assert loss.temperature == 0.1 and loss.momentum == 0.999 and loss.proto_weight == 0.5
    assert {'proto_s', 'proto_t'} <= set(loss.state_dict())
    assert loss.proto_t.shape == (K, CT)
    assert CCDLoss.extra_inputs == ('gt_labels',)
    assert CCDLoss.channel_args == ('student_channels', 'teacher_channels')
    with pytest.raises(ValueError, match='num_classes'):
        CCDLoss(CS, CT)
    with pytest.raises(ValueError, match='channels'):
        CCDLoss(num_classes=K)
