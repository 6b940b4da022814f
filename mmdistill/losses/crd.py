"""CRD: Contrastive Representation Distillation.

Tian, Krishnan and Isola, "Contrastive Representation Distillation", ICLR 2020. Official code:
github.com/HobbitLong/RepDistiller (``crd/criterion.py``, ``crd/memory.py``).

Student and teacher penultimate features are embedded (Linear + L2 normalisation) into a
``feat_dim`` space. Two memory banks hold one embedding per training sample (``memory_v1`` the
student's, ``memory_v2`` the teacher's). For every sample, ``nce_k`` negatives plus the sample
itself (the positive, column 0) are read from the other network's bank and scored with
``exp(<v, m> / nce_t) / Z``; an NCE loss separates the positive from the negatives, once with the
student as anchor and once with the teacher as anchor. After the scores, the banks at the batch
indices are moved towards the batch embeddings with momentum ``nce_m`` and renormalised.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.utils import compute_dtype, global_pool
from mmdistill.registry import DISTILL_LOSSES

NCE_EPS = 1e-7  # the official ``eps`` in crd/criterion.py


def contrast_loss(x: torch.Tensor, n_data: int) -> torch.Tensor:
    """The official ``ContrastLoss`` (Eq. 18 of the paper), vectorised.

    Args:
        x (Tensor): normalised scores, shape (N, K + 1); column 0 is the positive.
        n_data (int): number of training samples (noise distribution Pn = 1 / n_data).

    Returns:
        Tensor: scalar ``-(sum log D1 + sum log D0) / N`` with
        ``D1 = P_pos / (P_pos + K*Pn + eps)`` and ``D0 = K*Pn / (P_neg + K*Pn + eps)``.
    """
    bsz = x.shape[0]
    m = x.size(1) - 1
    pn = 1.0 / float(n_data)
    p_pos = x[:, 0]
    log_d1 = torch.log(p_pos / (p_pos + (m * pn + NCE_EPS)))
    p_neg = x[:, 1:]
    log_d0 = torch.log((m * pn) / (p_neg + (m * pn + NCE_EPS)))
    return -(log_d1.sum() + log_d0.sum()) / bsz


class Embed(nn.Module):
    """Linear projection followed by L2 normalisation (the official ``Embed``).

    Shapes: (N, dim_in) -> (N, dim_out), unit rows.
    """

    def __init__(self, dim_in: int = 1024, dim_out: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.reshape(x.shape[0], -1))
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        return F.normalize(x, p=2, dim=1)


@DISTILL_LOSSES.register_module()
class CRDLoss(DistillLoss):
    """CRD loss (symmetric NCE over memory banks of student and teacher embeddings).

    ``loss = NCE(student anchor vs teacher memory) + NCE(teacher anchor vs student memory)``.

    Args:
        student_channels (int): student feature dimension (``s_dim``).
        teacher_channels (int): teacher feature dimension (``t_dim``).
        feat_dim (int): embedding dimension. Default: 128.
        nce_k (int): negatives per sample. Default: 16384.
        nce_t (float): temperature. Default: 0.07.
        nce_m (float): memory momentum. Default: 0.5.
        n_data (int): number of training samples (rows of each memory bank). Required; the
            wrapper sizes it from the training dataset.

    State (buffers, saved in checkpoints so that resuming is exact): ``memory_v1`` /
    ``memory_v2`` (n_data, feat_dim), the student / teacher banks, initialised uniform in
    [-stdv, stdv] with ``stdv = 1 / sqrt(feat_dim / 3)`` as official; ``Z_v1`` / ``Z_v2``
    (scalars), the normalisation constants, -1 until the first forward sets them to
    ``mean(exp scores) * n_data`` of that batch, then fixed.

    Differences from the official code:
      * Negatives are drawn uniformly with ``torch.randint`` on the input's device from the
        global RNG. The official ``ContrastMemory`` draws through ``AliasMethod`` with uniform
        weights, i.e. the same distribution (the sample itself may be drawn as a negative in both).
        The official CIFAR/ImageNet loaders can instead supply ``contrast_idx`` with negatives
        from other classes only (``mode='exact'``); pass ``contrast_idx`` to forward to do that.
      * The Z constants are set without a host sync (``torch.where`` on the buffer), so the
        official ``print`` of their values is gone.
      * Scores and the NCE loss are computed in float32 (float64 stays float64) with autocast
        off: ``exp(1 / 0.07)`` overflows fp16.
      * Under DDP each rank updates its own memory copy with its own batch; with
        ``broadcast_buffers=True`` (the default) rank 0's copy is broadcast every step.
    """

    extra_inputs: tuple[str, ...] = ('indices',)
    channel_args = ('student_channels', 'teacher_channels')
    dataset_size_arg = 'n_data'  # tools/train.py fills it from the training set when left out

    def __init__(self,
                 student_channels: int | None = None,
                 teacher_channels: int | None = None,
                 feat_dim: int = 128,
                 nce_k: int = 16384,
                 nce_t: float = 0.07,
                 nce_m: float = 0.5,
                 n_data: int | None = None) -> None:
        super().__init__()
        if student_channels is None or teacher_channels is None:
            raise ValueError('CRDLoss needs student_channels and teacher_channels (the '
                             'dimensions of the pooled penultimate features)')
        if n_data is None or n_data <= 0:
            raise ValueError('CRDLoss needs n_data, the number of training samples (size of '
                             'the memory banks); tools/train.py fills it from the training set')
        self.feat_dim = int(feat_dim)
        self.nce_k = int(nce_k)
        self.nce_t = float(nce_t)
        self.nce_m = float(nce_m)
        self.n_data = int(n_data)
        self.embed_s = Embed(student_channels, feat_dim)
        self.embed_t = Embed(teacher_channels, feat_dim)
        stdv = 1. / math.sqrt(feat_dim / 3)
        self.register_buffer('memory_v1', torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer('memory_v2', torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer('Z_v1', torch.tensor(-1.0))
        self.register_buffer('Z_v2', torch.tensor(-1.0))

    def sample_contrast_idx(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices into the banks, shape (N, nce_k + 1): column 0 the sample's own index,
        the rest uniform over [0, n_data) from the global RNG on ``indices``' device."""
        idx = torch.randint(0, self.n_data, (indices.numel(), self.nce_k + 1),
                            device=indices.device)
        idx[:, 0] = indices.view(-1)
        return idx

    def _scores(self, memory: torch.Tensor, anchor: torch.Tensor,
                idx: torch.Tensor) -> torch.Tensor:
        """exp(<memory[idx], anchor> / T): (N, K + 1)."""
        weight = memory.index_select(0, idx.view(-1)).view(idx.shape[0], idx.shape[1], -1)
        out = torch.bmm(weight, anchor.unsqueeze(2)).squeeze(2)
        return torch.exp(out / self.nce_t)

    @torch.no_grad()
    def _update_memory(self, memory: torch.Tensor, v: torch.Tensor,
                       indices: torch.Tensor) -> None:
        pos = memory.index_select(0, indices) * self.nce_m + v.to(memory.dtype) * (1 - self.nce_m)
        pos = pos / pos.pow(2).sum(1, keepdim=True).pow(0.5)
        memory.index_copy_(0, indices, pos)

    def forward(self,
                preds_S: torch.Tensor,
                preds_T: torch.Tensor,
                indices: torch.Tensor,
                contrast_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Compute the CRD loss and update the memory banks.

        Args:
            preds_S (Tensor): student features, (N, Cs) or (N, Cs, H, W) (average-pooled).
            preds_T (Tensor): teacher features, (N, Ct) or (N, Ct, H, W). Not back-propagated.
            indices (Tensor): LongTensor (N,), dataset index of each sample.
            contrast_idx (Tensor | None): LongTensor (N, nce_k + 1) of bank rows, column 0 the
                positive; drawn by :meth:`sample_contrast_idx` when None.

        Returns:
            Tensor: scalar loss.
        """
        indices = indices.view(-1).long()
        f_s = self.embed_s(global_pool(preds_S))
        f_t = self.embed_t(global_pool(preds_T.detach()))
        if contrast_idx is None:
            contrast_idx = self.sample_contrast_idx(indices)
        dtype = compute_dtype(f_s)
        with torch.autocast(device_type=f_s.device.type, enabled=False):
            v1, v2 = f_s.to(dtype), f_t.to(dtype)
            mem1 = self.memory_v1.to(dtype)
            mem2 = self.memory_v2.to(dtype)
            out_v2 = self._scores(mem1.detach(), v2, contrast_idx)  # teacher anchor
            out_v1 = self._scores(mem2.detach(), v1, contrast_idx)  # student anchor
            with torch.no_grad():
                self.Z_v1.copy_(torch.where(self.Z_v1 < 0,
                                            out_v1.mean() * self.n_data, self.Z_v1))
                self.Z_v2.copy_(torch.where(self.Z_v2 < 0,
                                            out_v2.mean() * self.n_data, self.Z_v2))
            out_v1 = out_v1 / self.Z_v1.to(dtype)
            out_v2 = out_v2 / self.Z_v2.to(dtype)
            s_loss = contrast_loss(out_v1, self.n_data)
            t_loss = contrast_loss(out_v2, self.n_data)
            self._update_memory(self.memory_v1, v1.detach(), indices)
            self._update_memory(self.memory_v2, v2.detach(), indices)
        return s_loss + t_loss
