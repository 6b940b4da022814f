"""Tests of CRDLoss against a reference written the way RepDistiller's crd/ writes it."""
import math

import pytest
import torch
import torch.nn as nn

from mmdistill.losses.crd import CRDLoss, contrast_loss
from mmdistill.registry import DISTILL_LOSSES

# ----------------------------------------------------------------------------------------------
# Reference, written as the official code (HobbitLong/RepDistiller crd/criterion.py, memory.py);
# negatives are passed in explicitly (the official ``contrast_idx`` argument).
# ----------------------------------------------------------------------------------------------
eps = 1e-7


class RefNormalize(nn.Module):
    def __init__(self, power=2):
        super().__init__()
        self.power = power

    def forward(self, x):
        norm = x.pow(self.power).sum(1, keepdim=True).pow(1. / self.power)
        return x.div(norm)


class RefEmbed(nn.Module):
    def __init__(self, dim_in=1024, dim_out=128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.l2norm = RefNormalize(2)

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        x = self.linear(x)
        return self.l2norm(x)


class RefContrastLoss(nn.Module):
    def __init__(self, n_data):
        super().__init__()
        self.n_data = n_data

    def forward(self, x):
        bsz = x.shape[0]
        m = x.size(1) - 1
        Pn = 1 / float(self.n_data)
        P_pos = x.select(1, 0)
        log_D1 = torch.div(P_pos, P_pos.add(m * Pn + eps)).log_()
        P_neg = x.narrow(1, 1, m)
        log_D0 = torch.div(P_neg.clone().fill_(m * Pn), P_neg.add(m * Pn + eps)).log_()
        loss = - (log_D1.sum(0) + log_D0.view(-1, 1).sum(0)) / bsz
        return loss


class RefContrastMemory(nn.Module):
    def __init__(self, inputSize, outputSize, K, T=0.07, momentum=0.5):
        super().__init__()
        self.K = K
        # float64 here (official: float32, which rounds T and momentum by ~1e-8 relative)
        self.register_buffer('params', torch.tensor([K, T, -1, -1, momentum], dtype=torch.float64))
        stdv = 1. / math.sqrt(inputSize / 3)
        self.register_buffer('memory_v1',
                             torch.rand(outputSize, inputSize).mul_(2 * stdv).add_(-stdv))
        self.register_buffer('memory_v2',
                             torch.rand(outputSize, inputSize).mul_(2 * stdv).add_(-stdv))

    def forward(self, v1, v2, y, idx):
        K = int(self.params[0].item())
        T = self.params[1].item()
        Z_v1 = self.params[2].item()
        Z_v2 = self.params[3].item()
        momentum = self.params[4].item()
        batchSize = v1.size(0)
        outputSize = self.memory_v1.size(0)
        inputSize = self.memory_v1.size(1)
        weight_v1 = torch.index_select(self.memory_v1, 0, idx.view(-1)).detach()
        weight_v1 = weight_v1.view(batchSize, K + 1, inputSize)
        out_v2 = torch.bmm(weight_v1, v2.view(batchSize, inputSize, 1))
        out_v2 = torch.exp(torch.div(out_v2, T))
        weight_v2 = torch.index_select(self.memory_v2, 0, idx.view(-1)).detach()
        weight_v2 = weight_v2.view(batchSize, K + 1, inputSize)
        out_v1 = torch.bmm(weight_v2, v1.view(batchSize, inputSize, 1))
        out_v1 = torch.exp(torch.div(out_v1, T))
        if Z_v1 < 0:
            self.params[2] = out_v1.mean().detach() * outputSize
            Z_v1 = self.params[2].clone().detach().item()
        if Z_v2 < 0:
            self.params[3] = out_v2.mean().detach() * outputSize
            Z_v2 = self.params[3].clone().detach().item()
        out_v1 = torch.div(out_v1, Z_v1).contiguous()
        out_v2 = torch.div(out_v2, Z_v2).contiguous()
        with torch.no_grad():
            # per-sample loop (the official code does this with index_copy_)
            for i in range(batchSize):
                row = self.memory_v1[y[i]] * momentum + v1[i] * (1 - momentum)
                self.memory_v1[y[i]] = row / row.pow(2).sum().pow(0.5)
                row = self.memory_v2[y[i]] * momentum + v2[i] * (1 - momentum)
                self.memory_v2[y[i]] = row / row.pow(2).sum().pow(0.5)
        return out_v1, out_v2


class RefCRDLoss(nn.Module):
    def __init__(self, s_dim, t_dim, feat_dim, nce_k, nce_t, nce_m, n_data):
        super().__init__()
        self.embed_s = RefEmbed(s_dim, feat_dim)
        self.embed_t = RefEmbed(t_dim, feat_dim)
        self.contrast = RefContrastMemory(feat_dim, n_data, nce_k, nce_t, nce_m)
        self.criterion_t = RefContrastLoss(n_data)
        self.criterion_s = RefContrastLoss(n_data)

    def forward(self, f_s, f_t, idx, contrast_idx):
        f_s = self.embed_s(f_s)
        f_t = self.embed_t(f_t)
        out_s, out_t = self.contrast(f_s, f_t, idx, contrast_idx)
        return self.criterion_s(out_s) + self.criterion_t(out_t)


CS, CT, D, K, N_DATA, N = 12, 20, 8, 6, 40, 5


def _pair(nce_t=0.07, nce_m=0.5):
    ours = CRDLoss(CS, CT, feat_dim=D, nce_k=K, nce_t=nce_t, nce_m=nce_m, n_data=N_DATA).double()
    ref = RefCRDLoss(CS, CT, D, K, nce_t, nce_m, N_DATA).double()
    ref.embed_s.load_state_dict(ours.embed_s.state_dict())
    ref.embed_t.load_state_dict(ours.embed_t.state_dict())
    ref.contrast.memory_v1.copy_(ours.memory_v1)
    ref.contrast.memory_v2.copy_(ours.memory_v2)
    return ours, ref


def _batch(step):
    g = torch.Generator().manual_seed(100 + step)
    f_s = torch.randn(N, CS, generator=g, dtype=torch.float64)
    f_t = torch.randn(N, CT, generator=g, dtype=torch.float64)
    idx = torch.randperm(N_DATA, generator=g)[:N]
    cidx = torch.randint(0, N_DATA, (N, K + 1), generator=g)
    cidx[:, 0] = idx
    return f_s, f_t, idx, cidx


# ----------------------------------------------------------------------------------------------
def test_contrast_loss_hand_computed():
    # n_data 1, one negative: Pn = 1, m*Pn = 1
    x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    expected = math.log(2 + 1e-7) + math.log(4 + 1e-7)
    assert contrast_loss(x, 1).item() == pytest.approx(expected, rel=1e-12)
    x = torch.rand(4, 9, dtype=torch.float64)
    torch.testing.assert_close(contrast_loss(x, 50), RefContrastLoss(50)(x)[0], rtol=1e-6, atol=0)


@pytest.mark.parametrize('nce_t,nce_m', [(0.07, 0.5), (0.2, 0.9)])
def test_matches_official_over_steps(nce_t, nce_m):
    """Three steps: equal losses (Z set on step 1 then fixed; memories updated between)."""
    ours, ref = _pair(nce_t, nce_m)
    for step in range(3):
        f_s, f_t, idx, cidx = _batch(step)
        got = ours(f_s, f_t, indices=idx, contrast_idx=cidx)
        expected = ref(f_s, f_t, idx, cidx)[0]
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(ours.memory_v1, ref.contrast.memory_v1, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours.memory_v2, ref.contrast.memory_v2, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours.Z_v1, ref.contrast.params[2], rtol=1e-10, atol=0)
        torch.testing.assert_close(ours.Z_v2, ref.contrast.params[3], rtol=1e-10, atol=0)
        assert got.dim() == 0


def test_sampled_negatives_match_official_with_same_indices(monkeypatch):
    """Without contrast_idx, forward uses sample_contrast_idx: patch it to fixed indices."""
    ours, ref = _pair()
    f_s, f_t, idx, cidx = _batch(0)
    seen = {}

    def fake_sample(indices):
        seen['indices'] = indices.clone()
        return cidx
    monkeypatch.setattr(ours, 'sample_contrast_idx', fake_sample)
    got = ours(f_s, f_t, indices=idx)
    torch.testing.assert_close(got, ref(f_s, f_t, idx, cidx)[0], rtol=1e-6, atol=0)
    assert torch.equal(seen['indices'], idx)


def test_sample_contrast_idx():
    loss = CRDLoss(CS, CT, feat_dim=D, nce_k=50, n_data=N_DATA)
    idx = torch.tensor([3, 7, 39, 0])
    torch.manual_seed(1)
    a = loss.sample_contrast_idx(idx)
    torch.manual_seed(1)
    b = loss.sample_contrast_idx(idx)
    assert a.shape == (4, 51) and a.dtype == torch.long
    assert torch.equal(a[:, 0], idx) and torch.equal(a, b)  # reproducible with manual_seed
    assert a.min() >= 0 and a.max() < N_DATA
    assert len(torch.unique(a[:, 1:])) > 20  # spread over the dataset


def test_memory_update_values():
    ours = CRDLoss(CS, CT, feat_dim=D, nce_k=K, nce_m=0.3, n_data=N_DATA).double()
    f_s, f_t, idx, cidx = _batch(1)
    m1, m2 = ours.memory_v1.clone(), ours.memory_v2.clone()
    with torch.no_grad():
        v1 = ours.embed_s(f_s)
        v2 = ours.embed_t(f_t)
    ours(f_s, f_t, indices=idx, contrast_idx=cidx)
    untouched = torch.ones(N_DATA, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(ours.memory_v1[untouched], m1[untouched])
    assert torch.equal(ours.memory_v2[untouched], m2[untouched])
    for i in range(N):
        j = idx[i]
        want1 = 0.3 * m1[j] + 0.7 * v1[i]
        want2 = 0.3 * m2[j] + 0.7 * v2[i]
        torch.testing.assert_close(ours.memory_v1[j], want1 / want1.norm())
        torch.testing.assert_close(ours.memory_v2[j], want2 / want2.norm())
        assert ours.memory_v1[j].norm().item() == pytest.approx(1.0)


def test_initial_memory_and_z():
    loss = CRDLoss(CS, CT, feat_dim=D, nce_k=K, n_data=N_DATA)
    stdv = 1. / math.sqrt(D / 3)
    for mem in (loss.memory_v1, loss.memory_v2):
        assert mem.shape == (N_DATA, D)
        assert mem.abs().max() <= stdv and mem.std() > stdv / 3
    assert loss.Z_v1.item() == -1 and loss.Z_v2.item() == -1
    assert {'memory_v1', 'memory_v2', 'Z_v1', 'Z_v2'} <= set(loss.state_dict())


def test_z_fixed_after_first_call():
    ours = CRDLoss(CS, CT, feat_dim=D, nce_k=K, n_data=N_DATA).double()
    f_s, f_t, idx, cidx = _batch(0)
    with torch.no_grad():
        v1, v2 = ours.embed_s(f_s), ours.embed_t(f_t)
        w2 = ours.memory_v2[cidx]  # (N, K+1, D)
        w1 = ours.memory_v1[cidx]
        z1 = torch.exp((w2 * v1[:, None]).sum(-1) / 0.07).mean() * N_DATA
        z2 = torch.exp((w1 * v2[:, None]).sum(-1) / 0.07).mean() * N_DATA
    ours(f_s, f_t, indices=idx, contrast_idx=cidx)
    torch.testing.assert_close(ours.Z_v1, z1)
    torch.testing.assert_close(ours.Z_v2, z2)
    # later calls keep the first call's values bit for bit (the test's own z1/z2 above may
    # differ from them in the last bit: another reduction order)
    first_v1, first_v2 = ours.Z_v1.clone(), ours.Z_v2.clone()
    for step in (1, 2):
        ours(*_batch(step)[:2], indices=_batch(step)[2], contrast_idx=_batch(step)[3])
        torch.testing.assert_close(ours.Z_v1, first_v1, rtol=0, atol=0)
        torch.testing.assert_close(ours.Z_v2, first_v2, rtol=0, atol=0)


def test_resume_from_state_dict_is_exact():
    a = CRDLoss(CS, CT, feat_dim=D, nce_k=K, n_data=N_DATA).double()
    for step in range(2):
        f_s, f_t, idx, cidx = _batch(step)
        a(f_s, f_t, indices=idx, contrast_idx=cidx)
    b = CRDLoss(CS, CT, feat_dim=D, nce_k=K, n_data=N_DATA).double()
    b.load_state_dict(a.state_dict())
    f_s, f_t, idx, cidx = _batch(5)
    assert torch.equal(a(f_s, f_t, indices=idx, contrast_idx=cidx),
                       b(f_s, f_t, indices=idx, contrast_idx=cidx))


def test_gradients():
    loss = CRDLoss(CS, CT, feat_dim=D, nce_k=K, n_data=N_DATA)
    f_s = torch.randn(N, CS, 3, 3, requires_grad=True)  # 4D input: average-pooled
    f_t = torch.randn(N, CT, 3, 3, requires_grad=True)
    out = loss(f_s, f_t, indices=torch.arange(N))
    out.backward()
    assert torch.isfinite(out)
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert f_t.grad is None
    for name, p in loss.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not loss.memory_v1.requires_grad and not loss.Z_v1.requires_grad


def test_pooled_4d_equals_2d():
    loss = CRDLoss(CS, CT, feat_dim=D, nce_k=K, n_data=N_DATA).double()
    f_s, f_t, idx, cidx = _batch(0)
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    out2d = loss(f_s, f_t, indices=idx, contrast_idx=cidx)
    loss.load_state_dict(state)
    s4 = f_s[:, :, None, None].expand(-1, -1, 2, 2).contiguous()
    t4 = f_t[:, :, None, None].expand(-1, -1, 2, 2).contiguous()
    torch.testing.assert_close(loss(s4, t4, indices=idx, contrast_idx=cidx), out2d)


def test_low_precision_autocast_finite():
    loss = CRDLoss(CS, CT, feat_dim=D, nce_k=K, n_data=N_DATA)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = loss(torch.randn(N, CS) * 1e3, torch.randn(N, CT) * 1e3, indices=torch.arange(N))
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_build_and_errors():
    loss = DISTILL_LOSSES.build(dict(type='CRDLoss', student_channels=CS, teacher_channels=CT,
                                     n_data=N_DATA))
    assert loss.nce_k == 16384 and loss.feat_dim == 128 and loss.nce_t == 0.07
    assert loss.nce_m == 0.5 and loss.memory_v1.shape == (N_DATA, 128)
    assert CRDLoss.extra_inputs == ('indices',)
    with pytest.raises(ValueError, match='n_data'):
        CRDLoss(CS, CT)
    with pytest.raises(ValueError, match='channels'):
        CRDLoss(n_data=10)
