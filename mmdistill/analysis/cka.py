"""Linear CKA: how similar two sets of features of the same inputs are.

Kornblith, Norouzi, Lee and Hinton, "Similarity of Neural Network Representations Revisited",
ICML 2019. For ``n`` examples with features ``X (n, p)`` and ``Y (n, q)``, with the columns
centred (``Xc = X - mean over rows``)::

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

in [0, 1], 1 for ``Y = X``, invariant to orthogonal transforms and isotropic scaling of either
side (not to arbitrary invertible linear maps). Here it is computed from running sums, so a
dataloader's batches can be accumulated (:class:`LinearCKA`) and every product stays
``p x p``, ``q x q`` or ``q x p``: ``Yc^T Xc = Y^T X - n ybar xbar^T``, in float64.
"""
from __future__ import annotations

import torch
from torch import Tensor


class LinearCKA:
    """Linear CKA accumulated over batches of paired features.

    ``update(x, y)`` takes ``x (b, p)`` and ``y (b, q)`` (the same ``b`` examples; (b, C, H, W)
    maps are flattened to (b, C*H*W)); :meth:`value` is CKA over all examples seen.
    """

    def __init__(self) -> None:
        self.n = 0
        self._sx = self._sy = self._xx = self._yy = self._yx = None

    def update(self, x: Tensor, y: Tensor) -> 'LinearCKA':
        x = x.detach().reshape(x.shape[0], -1).double()
        y = y.detach().reshape(y.shape[0], -1).double()
        if x.shape[0] != y.shape[0]:
            raise ValueError(f'linear CKA needs the same examples on both sides, got {x.shape[0]} '
                             f'and {y.shape[0]} rows')
        if self._sx is None:
            self._sx, self._sy = x.sum(0), y.sum(0)
            self._xx, self._yy, self._yx = x.T @ x, y.T @ y, y.T @ x
        else:
            self._sx += x.sum(0)
            self._sy += y.sum(0)
            self._xx += x.T @ x
            self._yy += y.T @ y
            self._yx += y.T @ x
        self.n += x.shape[0]
        return self

    def value(self) -> float:
        if self.n < 2:
            raise ValueError('linear CKA needs at least 2 examples')
        mx, my = self._sx / self.n, self._sy / self.n
        xx = self._xx - self.n * torch.outer(mx, mx)
        yy = self._yy - self.n * torch.outer(my, my)
        yx = self._yx - self.n * torch.outer(my, mx)
        return float(yx.square().sum() / (torch.linalg.matrix_norm(xx) *
                                          torch.linalg.matrix_norm(yy)))


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of ``x (n, p)`` and ``y (n, q)`` (see :class:`LinearCKA`)."""
    return LinearCKA().update(x, y).value()


__all__ = ['LinearCKA', 'linear_cka']
