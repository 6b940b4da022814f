"""CWD: Channel-wise Knowledge Distillation for Dense Prediction.

Shu, Liu, Gao, Yan and Shen, "Channel-wise Knowledge Distillation for Dense Prediction",
ICCV 2021. Official code: https://github.com/irfanICMLL/TorchDistiller; the OpenMMLab version
is mmrazor's ``ChannelWiseDivergence``, whose normalisation this loss follows.

Every channel of a feature map (or of the segmentation logits) is turned into a distribution
over the ``H * W`` locations by a softmax with temperature ``tau``, and the student's channel
distribution is pulled towards the teacher's by KL divergence::

    p_T  = softmax(T.view(N*C, H*W) / tau)
    loss = tau^2 * sum(p_T * (log p_T - log_softmax(S.view(N*C, H*W) / tau)))
           / (N * C)

:func:`channel_kl` is the divergence as defined; the fast forms (:mod:`mmdistill.losses.fast.cwd`)
compute it with its gradient in one pass: the CPU kernel (default on the CPU) or compiled.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.fast import cwd_kernel
from mmdistill.losses.fast.cwd import scaled_channel_kl
from mmdistill.losses.utils import HALF
from mmdistill.registry import DISTILL_LOSSES


def channel_kl(logits_S: torch.Tensor, logits_T: torch.Tensor, tau: float) -> torch.Tensor:
    """The paper's divergence, summed over channels: ``sum(p_T * (log p_T - log p_S))``.

    Args:
        logits_S: ``(N*C, H*W)`` student map, one channel per row.
        logits_T: ``(N*C, H*W)`` teacher map.
        tau: Temperature; ``p = softmax(logits / tau)`` over each row's ``H*W`` locations.

    Returns:
        Scalar, the KL divergences of all ``N*C`` rows summed.
    """
    if tau != 1:  # x / 1 == x: skip a pass (and its backward) at the usual tau = 1
        logits_T = logits_T / tau
        logits_S = logits_S / tau
    log_p_T = F.log_softmax(logits_T, dim=1)
    log_p_S = F.log_softmax(logits_S, dim=1)
    return (log_p_T.exp() * (log_p_T - log_p_S)).sum()


@DISTILL_LOSSES.register_module()
class CWDLoss(DistillLoss):
    """Channel-wise distillation loss (Shu et al., ICCV 2021).

    Args:
        tau: Temperature of the spatial softmax. mmrazor: 1 (segmentation logits, FPN levels);
            the paper's segmentation recipe: 4.
        student_channels: Channels of the student map ``Cs``; with ``teacher_channels`` given
            and different, a 1x1 ``align`` conv maps the student to ``Ct`` channels first.
        teacher_channels: Channels of the teacher map ``Ct``.
        compiled: take the fast form (:mod:`mmdistill.losses.fast.cwd`): the divergence and
            its gradient w.r.t. the student in one compiled pass, the same values, compiled once
            on first use (its eager form where compiling is not possible). Default False: the
            definition, :func:`channel_kl`, through autograd, where the CPU kernel does not run.
        cpu_kernel: on the CPU (float32 and float64 maps) the divergence and its gradient are
            one hand-written kernel (:mod:`mmdistill.losses.fast.cwd_kernel`: one read of the
            maps, in float32 an in-line exponential within float32's rounding), compiled for the
            machine on first use. Default True; where no C++ compiler builds it, the form above
            runs, said once in the log.

    Shapes:
        preds_S: ``(N, Cs, H, W)`` student map.
        preds_T: ``(N, Ct, H, W)`` teacher map, same ``H, W`` (the wrapper resizes when asked);
            never back-propagated into.
        Returns: scalar tensor (float32 for half-precision inputs).
    """

    channel_args = ('student_channels', 'teacher_channels')

    def __init__(self,
                 tau: float = 1.0,
                 student_channels: int | None = None,
                 teacher_channels: int | None = None,
                 compiled: bool = False,
                 cpu_kernel: bool = True) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f'CWDLoss: tau must be positive, got {tau}')
        self.tau = tau
        self.compiled = compiled
        self.cpu_kernel = cpu_kernel
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        if (student_channels is not None and teacher_channels is not None
                and student_channels != teacher_channels):
            self.align: nn.Module | None = nn.Conv2d(
                student_channels, teacher_channels, kernel_size=1, stride=1, padding=0)
        else:
            self.align = None

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the channel-wise divergence.

        Args:
            preds_S: ``(N, Cs, H, W)`` student map.
            preds_T: ``(N, Ct, H, W)`` teacher map.

        Returns:
            Scalar loss, ``tau^2 * KL(p_T || p_S)`` summed over all
            ``N * C`` channel distributions and divided by ``N * C``.
        """
        if preds_S.dim() != 4 or preds_T.dim() != 4 or preds_S.shape[-2:] != preds_T.shape[-2:]:
            raise ValueError('CWDLoss needs (N, C, H, W) maps of the same spatial size, got '
                             f'student {tuple(preds_S.shape)} and teacher '
                             f'{tuple(preds_T.shape)}; resize one of them in the loss entry')
        preds_T = preds_T.detach()
        if self.align is not None:
            weight = self.align.weight
            if preds_S.dtype != weight.dtype:
                preds_S = preds_S.to(weight.dtype)
            preds_S = self.align(preds_S)
        if preds_S.shape != preds_T.shape:
            raise ValueError(f'CWDLoss: student {tuple(preds_S.shape)} (after align) and teacher '
                             f'{tuple(preds_T.shape)} differ; set student_channels and '
                             'teacher_channels')
        if preds_S.dtype in HALF:
            preds_S = preds_S.float()
        if preds_T.dtype in HALF:
            preds_T = preds_T.float()

        N, C, H, W = preds_T.shape
        logits_S, logits_T = preds_S.reshape(N * C, H * W), preds_T.reshape(N * C, H * W)
        scale = self.tau**2 / (N * C)
        if self.cpu_kernel and cwd_kernel.available(logits_S):
            return scaled_channel_kl(logits_S, logits_T, self.tau, scale, cpu_kernel=True)
        if self.compiled:
            return scaled_channel_kl(logits_S, logits_T, self.tau, scale)
        loss = channel_kl(logits_S, logits_T, self.tau) * (self.tau**2)
        return loss / (N * C)
