"""Tests of OFALoss against a reference written the way OFAKD's distillers/ofa.py writes it."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.ofa import OFALoss, SepConv, ofa_loss
from mmdistill.registry import DISTILL_LOSSES


# ----------------------------------------------------------------------------------------------
# Reference, written as the official code (Hao840/OFAKD distillers/ofa.py + utils.py)
# ----------------------------------------------------------------------------------------------
def ref_ofa_loss(logits_student, logits_teacher, target_mask, eps, temperature=1.):
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    prod = (pred_teacher + target_mask) ** eps
    loss = torch.sum(- (prod - target_mask) * torch.log(pred_student), dim=-1)
    return loss.mean()


class RefSepConv(nn.Module):
    def __init__(self, channel_in, channel_out, kernel_size=3, stride=2, padding=1, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(channel_in, channel_in, kernel_size=kernel_size, stride=stride,
                      padding=padding, groups=channel_in, bias=False),
            nn.Conv2d(channel_in, channel_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(channel_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(channel_in, channel_in, kernel_size=kernel_size, stride=1, padding=padding,
                      groups=channel_in, bias=False),
            nn.Conv2d(channel_in, channel_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(channel_out, affine=affine),
            nn.ReLU(inplace=False),
        )

    def forward(self, x):
        return self.op(x)


class RefOFA(nn.Module):
    """The official OFA distiller's projector construction and loss, CNN student only."""

    def __init__(self, stage_channels, feature_dim_s, feature_dim_t, num_classes, ofa_stage,
                 ofa_eps, ofa_temperature, ofa_loss_weight, kd_loss_weight):
        super().__init__()
        if len(ofa_eps) == 1:
            ofa_eps = [ofa_eps[0] for _ in range(len(ofa_stage) + 1)]
        assert len(ofa_stage) + 1 == len(ofa_eps)
        self.ofa_stage, self.ofa_eps = ofa_stage, ofa_eps
        self.ofa_temperature = ofa_temperature
        self.ofa_loss_weight, self.kd_loss_weight = ofa_loss_weight, kd_loss_weight
        self.projector = nn.ModuleDict()
        for stage in ofa_stage:
            in_chans = stage_channels[stage - 1]
            if stage != 4:
                down_sample_blk_num = 4 - stage
                down_sample_blks = []
                for i in range(down_sample_blk_num):
                    if i == down_sample_blk_num - 1:
                        out_chans = max(feature_dim_s, feature_dim_t)
                    else:
                        out_chans = in_chans * 2
                    down_sample_blks.append(RefSepConv(in_chans, out_chans))
                    in_chans *= 2
            else:
                down_sample_blks = [nn.Conv2d(in_chans, max(feature_dim_s, feature_dim_t), 1, 1, 0)]
            self.projector[str(stage)] = nn.Sequential(
                *down_sample_blks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                nn.Linear(max(feature_dim_s, feature_dim_t), num_classes))

    def forward(self, feat_student, logits_student, logits_teacher, label):
        num_classes = logits_student.size(-1)
        if len(label.shape) != 1:
            target_mask = F.one_hot(label.argmax(-1), num_classes)
        else:
            target_mask = F.one_hot(label, num_classes)
        ofa_losses = []
        for stage, eps in zip(self.ofa_stage, self.ofa_eps):
            feat_s = feat_student[stage - 1]
            logits_student_head = self.projector[str(stage)](feat_s)
            ofa_losses.append(ref_ofa_loss(logits_student_head, logits_teacher, target_mask, eps,
                                           self.ofa_temperature))
        loss_ofa = self.ofa_loss_weight * sum(ofa_losses)
        loss_kd = self.kd_loss_weight * ofa_loss_ref_logits(
            logits_student, logits_teacher, target_mask, self.ofa_eps[-1], self.ofa_temperature)
        return loss_kd + loss_ofa


def ofa_loss_ref_logits(*args):
    return ref_ofa_loss(*args)


# A tiny "ResNet": stage channels and spatial sizes of stages 1..4.
CHANNELS = (4, 8, 16, 32)
SIZES = (16, 8, 4, 2)
N, K = 5, 7


def _stage_feats(dtype=torch.float64, requires_grad=False):
    return [torch.randn(N, c, s, s, dtype=dtype, requires_grad=requires_grad)
            for c, s in zip(CHANNELS, SIZES)]


def _randomise_bn(module):
    """Non-trivial BN affine parameters (official init gives 1 / 0)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)


# ----------------------------------------------------------------------------------------------
def test_ofa_loss_hand_computed():
    # teacher uniform over 2 classes, label 0, eps 2: target = [(0.5+1)^2 - 1, 0.5^2] = [1.25, .25]
    # student softmax = [0.75, 0.25]
    logits_T = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    logits_S = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    onehot = torch.tensor([[1, 0]])
    expected = -(1.25 * math.log(0.75) + 0.25 * math.log(0.25))
    assert ofa_loss(logits_S, logits_T, onehot, 2.0).item() == pytest.approx(expected, rel=1e-12)
    # temperature 2 on doubled logits gives the same distributions; no T^2 factor
    assert ofa_loss(2 * logits_S, 2 * logits_T, onehot, 2.0, temperature=2.0).item() == \
        pytest.approx(expected, rel=1e-12)
    # eps = 1: plain cross entropy with the teacher distribution
    expected1 = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    assert ofa_loss(logits_S, logits_T, onehot, 1.0).item() == pytest.approx(expected1, rel=1e-12)
    # batch mean over two rows (second row: label 1)
    ls2 = torch.cat([logits_S, logits_S])
    lt2 = torch.cat([logits_T, logits_T])
    oh2 = torch.tensor([[1, 0], [0, 1]])
    expected_row2 = -(0.25 * math.log(0.75) + 1.25 * math.log(0.25))
    assert ofa_loss(ls2, lt2, oh2, 2.0).item() == pytest.approx(
        (expected + expected_row2) / 2, rel=1e-12)


@pytest.mark.parametrize('eps', [1.0, 1.5, 0.7])
@pytest.mark.parametrize('temperature', [1.0, 3.0])
def test_ofa_loss_matches_official(eps, temperature):
    ls = torch.randn(6, 10, dtype=torch.float64) * 3
    lt = torch.randn(6, 10, dtype=torch.float64) * 3
    mask = F.one_hot(torch.randint(0, 10, (6,)), 10)
    ours = ofa_loss(ls, lt, mask, eps, temperature)
    ref = ref_ofa_loss(ls, lt, mask, eps, temperature)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize('soft_labels', [False, True])
@pytest.mark.parametrize('stages,eps,dim_t', [
    ((1, 2, 3, 4), (1.0,), 48),              # Dt > Ds: projectors end in Dt channels
    ((1, 2, 3, 4), (1.5, 1.2, 0.8, 1.1, 1.3), 24),  # Ds > Dt, per-stage eps
    ((2, 4), (1.0, 1.5, 2.0), 32),
])
def test_matches_official(soft_labels, stages, eps, dim_t):
    ours = OFALoss(student_channels=[CHANNELS[s - 1] for s in stages], num_classes=K,
                   ofa_eps=eps, ofa_stage=stages, ofa_temperature=2.0, ofa_loss_weight=0.7,
                   kd_loss_weight=1.3, teacher_channels=dim_t).double()
    _randomise_bn(ours)
    ref = RefOFA(CHANNELS, feature_dim_s=CHANNELS[-1], feature_dim_t=dim_t, num_classes=K,
                 ofa_stage=list(stages), ofa_eps=list(eps), ofa_temperature=2.0,
                 ofa_loss_weight=0.7, kd_loss_weight=1.3).double()
    # identical parameter layout to the official projector: strict load must succeed
    ref.load_state_dict(ours.state_dict(), strict=True)

    feats = _stage_feats()
    logits_S = torch.randn(N, K, dtype=torch.float64) * 2
    logits_T = torch.randn(N, K, dtype=torch.float64) * 2
    if soft_labels:
        labels = torch.softmax(torch.randn(N, K, dtype=torch.float64), dim=1)
    else:
        labels = torch.randint(0, K, (N,))
    expected = ref(feats, logits_S, logits_T, labels)
    # ours: one feature per chosen stage, and the "all four stages" form
    got = ours([feats[s - 1] for s in stages], logits_T, gt_labels=labels, logits_S=logits_S)
    got_all = ours(feats, logits_T, gt_labels=labels, logits_S=logits_S)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(got_all, expected, rtol=1e-6, atol=0)
    assert got.dim() == 0


def test_weights_and_eps_split():
    """kd term uses eps[-1]; branch terms use eps[i]; weights scale each part."""
    stages = (3, 4)
    loss = OFALoss([16, 32], num_classes=K, ofa_eps=(0.9, 1.4, 2.0), ofa_stage=stages,
                   ofa_loss_weight=0.0, kd_loss_weight=2.0, teacher_channels=32).double()
    feats = _stage_feats()
    ls, lt = torch.randn(N, K, dtype=torch.float64), torch.randn(N, K, dtype=torch.float64)
    y = torch.randint(0, K, (N,))
    mask = F.one_hot(y, K)
    torch.testing.assert_close(loss(feats[2:], lt, gt_labels=y, logits_S=ls),
                               2.0 * ref_ofa_loss(ls, lt, mask, 2.0), rtol=1e-6, atol=0)
    loss.kd_loss_weight, loss.ofa_loss_weight = 0.0, 1.0
    with torch.no_grad():
        h3 = loss.projector['3'](feats[2])
        h4 = loss.projector['4'](feats[3])
    expected = ref_ofa_loss(h3, lt, mask, 0.9) + ref_ofa_loss(h4, lt, mask, 1.4)
    # kd_loss_weight 0: logits_S may be omitted
    torch.testing.assert_close(loss(feats[2:], lt, gt_labels=y), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize('stage', [1, 2, 3, 4])
def test_projector_shapes(stage):
    dim_t = 40
    loss = OFALoss([CHANNELS[stage - 1]], num_classes=K, ofa_stage=(stage,), teacher_dim=dim_t,
                   student_dim=CHANNELS[-1])
    proj = loss.projector[str(stage)]
    blocks = list(proj.children())[:-3]
    assert isinstance(proj[-1], nn.Linear) and proj[-1].out_features == K
    assert proj[-1].in_features == max(CHANNELS[-1], dim_t)
    if stage == 4:
        assert len(blocks) == 1 and isinstance(blocks[0], nn.Conv2d)
        assert blocks[0].kernel_size == (1, 1) and blocks[0].bias is not None
    else:
        assert len(blocks) == 4 - stage and all(isinstance(b, SepConv) for b in blocks)
        op = blocks[0].op
        kinds = [type(m) for m in op]
        assert kinds == [nn.Conv2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU,
                         nn.Conv2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        assert op[0].stride == (2, 2) and op[0].groups == CHANNELS[stage - 1]
        assert op[0].kernel_size == (3, 3) and op[4].stride == (1, 1)
        assert op[1].kernel_size == (1, 1) and op[5].kernel_size == (1, 1)
        # channels double per block except the last, which outputs max(Ds, Dt)
        for i, b in enumerate(blocks):
            want = max(CHANNELS[-1], dim_t) if i == len(blocks) - 1 else \
                CHANNELS[stage - 1] * 2 ** (i + 1)
            assert b.op[5].out_channels == want
    x = torch.randn(N, CHANNELS[stage - 1], SIZES[stage - 1], SIZES[stage - 1])
    h = nn.Sequential(*blocks)(x)
    assert h.shape == (N, max(CHANNELS[-1], dim_t), SIZES[-1], SIZES[-1])
    assert proj(x).shape == (N, K)


def test_gradients():
    loss = OFALoss(list(CHANNELS), num_classes=K, teacher_channels=[8, 16, 24, 48])
    feats = _stage_feats(torch.float32, requires_grad=True)
    logits_S = torch.randn(N, K, requires_grad=True)
    logits_T = torch.randn(N, K, requires_grad=True)
    out = loss(feats, logits_T, gt_labels=torch.randint(0, K, (N,)), logits_S=logits_S)
    out.backward()
    assert torch.isfinite(out)
    for f in feats:
        assert f.grad is not None and f.grad.abs().sum() > 0
    assert logits_S.grad is not None and logits_S.grad.abs().sum() > 0
    assert logits_T.grad is None
    for name, p in loss.named_parameters():
        assert p.grad is not None, name
    assert sum(p.grad.abs().sum() for p in loss.parameters()) > 0


def test_half_precision_large_logits_finite():
    ls = (torch.randn(4, 10) * 2e4).clamp(-6e4, 6e4).half()
    lt = (torch.randn(4, 10) * 2e4).clamp(-6e4, 6e4).half()
    out = ofa_loss(ls, lt, F.one_hot(torch.randint(0, 10, (4,)), 10), 1.5)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_build_and_errors():
    loss = DISTILL_LOSSES.build(dict(type='OFALoss', student_channels=[4, 8, 16, 32],
                                     num_classes=K, teacher_channels=64))
    assert isinstance(loss, OFALoss) and loss.ofa_eps == (1.0,) * 5
    assert OFALoss.extra_inputs == ('gt_labels', 'logits_S')
    with pytest.raises(ValueError, match='ofa_eps'):
        OFALoss([4, 8], num_classes=K, ofa_stage=(3, 4), ofa_eps=(1.0, 1.0), teacher_channels=8)
    with pytest.raises(ValueError, match='student_channels'):
        OFALoss([4, 8], num_classes=K, teacher_channels=8)
    with pytest.raises(ValueError, match='teacher'):
        OFALoss([4, 8, 16, 32], num_classes=K)
    with pytest.raises(ValueError, match='student_dim'):
        OFALoss([4, 8], num_classes=K, ofa_stage=(1, 2), teacher_channels=8)
    with pytest.raises(ValueError, match='logits_S'):
        loss(_stage_feats(torch.float32), torch.randn(N, K), gt_labels=torch.zeros(N).long())
