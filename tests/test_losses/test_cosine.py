"""CosineLoss against nn.CosineEmbeddingLoss (target 1), written independently: flattened maps,
pooled maps, the align conv, gradients to the student only, clear errors."""
import pytest
import torch
import torch.nn as nn

from mmdistill.losses import CosineLoss
from mmdistill.registry import DISTILL_LOSSES


def reference(s, t, weight=1.0):
    n = s.shape[0]
    return weight * nn.CosineEmbeddingLoss()(s.reshape(n, -1), t.reshape(n, -1), torch.ones(n))


def test_flattened_maps_and_vectors():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 8, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 8, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    loss = 0.25 * CosineLoss()(s, t)
    assert float(loss) == pytest.approx(float(reference(s, t, 0.25)), rel=1e-9)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    v = torch.randn(6, 10, generator=g)
    assert float(CosineLoss()(v, v)) == pytest.approx(0.0, abs=1e-6)
    assert float(CosineLoss()(v, -v)) == pytest.approx(2.0, abs=1e-6)


def test_pool_and_align():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    t = torch.randn(3, 6, 4, 4, generator=g, dtype=torch.float64)
    loss = DISTILL_LOSSES.build(dict(type='CosineLoss', pool=True, student_channels=4,
                                     teacher_channels=6)).double()
    aligned = loss.align(s)
    assert float(loss(s, t)) == pytest.approx(
        float(reference(aligned.mean((2, 3)), t.mean((2, 3)))), rel=1e-9)
    with pytest.raises(ValueError, match='CosineLoss: student'):
        CosineLoss()(s, t)
