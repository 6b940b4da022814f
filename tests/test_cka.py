"""Linear CKA against the HSIC form of Kornblith et al. (Gram matrices, centring matrix), its
invariances, and the minibatch accumulation."""
import pytest
import torch

from mmdistill.analysis import LinearCKA, linear_cka


def reference_cka(x, y):
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T, L = Y Y^T, HSIC = tr(KHLH)."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return torch.trace(a @ h @ b @ h)
    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


def test_matches_the_hsic_form():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 7, generator=g)
    y = x[:, :5] @ torch.randn(5, 9, generator=g) + 0.5 * torch.randn(40, 9, generator=g)
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), rel=1e-10)
    z = torch.randn(40, 9, generator=g)
    assert linear_cka(x, z) == pytest.approx(reference_cka(x, z), rel=1e-10)
    assert linear_cka(x, z) < linear_cka(x, y) < 1


def test_invariances():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 6, generator=g), torch.randn(30, 4, generator=g)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    base = linear_cka(x, y)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x.double() @ q, y) == pytest.approx(base, rel=1e-10)  # orthogonal
    assert linear_cka(3.7 * x.double() + 2.0, y) == pytest.approx(base, rel=1e-9)  # scale, shift
    assert linear_cka(y, x) == pytest.approx(base, rel=1e-10)  # symmetric
    # not invariant to arbitrary invertible maps
    a = torch.diag(torch.tensor([10.0, 1, 1, 1, 1, 0.1]))
    assert linear_cka(x @ a, y) != pytest.approx(base, rel=1e-3)


def test_minibatches_equal_one_batch_and_maps_flatten():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(25, 3, 4, 4, generator=g), torch.randn(25, 2, 4, 4, generator=g) + 5
    acc = LinearCKA()
    for i in range(0, 25, 8):
        acc.update(x[i:i + 8], y[i:i + 8])
    assert acc.n == 25
    assert acc.value() == pytest.approx(reference_cka(x.reshape(25, -1), y.reshape(25, -1)),
                                        rel=1e-9)
    with pytest.raises(ValueError, match='same examples'):
        LinearCKA().update(x[:3], y[:4])
