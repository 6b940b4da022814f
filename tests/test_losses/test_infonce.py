"""InfoNCELoss against a loop over the batch written from the definition: each student embedding
against all teacher embeddings, positive the same image; pooling, the align layer, gradients."""
import math

import pytest
import torch

from mmdistill.losses import InfoNCELoss


def reference(s, t, tau):
    n = s.shape[0]
    total = 0.0
    for i in range(n):
        sims = [float(torch.dot(s[i], t[j]) / (s[i].norm() * t[j].norm())) / tau
                for j in range(n)]
        total += -(sims[i] - math.log(sum(math.exp(x) for x in sims)))
    return total / n


def test_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = s.detach() + 0.3 * torch.randn(6, 5, generator=g, dtype=torch.float64)
    loss = 2.0 * InfoNCELoss(temperature=0.2)(s, t)
    assert float(loss) == pytest.approx(2.0 * reference(s.detach(), t, 0.2), rel=1e-10)
    loss.backward()
    assert s.grad.abs().sum() > 0
    far = InfoNCELoss(temperature=0.2)(s, torch.randn(6, 5, generator=g, dtype=torch.float64))
    assert float(far) > float(loss) / 2  # aligned pairs give the lower loss


def test_maps_are_pooled_and_aligned():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    t = torch.randn(4, 6, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    m = InfoNCELoss(student_channels=3, teacher_channels=6).double()
    ref = reference(m.align(s.mean((2, 3))).detach(), t.detach().mean((2, 3)), 0.1)
    out = m(s, t)
    assert float(out) == pytest.approx(ref, rel=1e-9)
    out.backward()
    assert t.grad is None and m.align.weight.grad is not None
    one = m(s[:1], t[:1])  # a batch of one: no negatives, log softmax over one candidate is 0
    assert float(one) == 0.0
    with pytest.raises(ValueError, match='the same batch on both sides'):
        m(s[:2], t[:1])
