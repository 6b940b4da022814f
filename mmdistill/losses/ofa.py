"""OFA: One-for-All knowledge distillation.

Hao, Guo, Han, Tang, Wang, Xu and Wang, "One-for-All: Bridge the Gap Between Heterogeneous
Architectures in Knowledge Distillation", NeurIPS 2023. Official code: github.com/Hao840/OFAKD
(``distillers/ofa.py``, ``distillers/utils.py``).

Intermediate student stages get their own small classifier ("exit branch"): a projector that
down-samples the stage feature to the last stage's resolution, global-average pools it and maps
it to class logits. Every branch and the student's own logits are pulled to the teacher's logits
with the OFA loss, a cross entropy whose target is the teacher distribution with the target-class
probability enhanced by the exponent ``eps``.

Only the CNN-student projector of the official code is provided (the ViT/MLP-student projector
with patch merging and transformer blocks is not).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdistill.losses.base import DistillLoss
from mmdistill.losses.utils import compute_dtype
from mmdistill.registry import DISTILL_LOSSES


def ofa_loss(logits_S: torch.Tensor,
             logits_T: torch.Tensor,
             target_onehot: torch.Tensor,
             eps: float,
             temperature: float = 1.0) -> torch.Tensor:
    """The OFA loss of one pair of logits.

    ``mean_batch(sum_classes -((softmax(t/T) + onehot) ** eps - onehot) * log_softmax(s/T))``.
    As in the official ``ofa_loss`` there is no ``T**2`` factor.

    Args:
        logits_S (Tensor): student logits, shape (N, K).
        logits_T (Tensor): teacher logits, shape (N, K). Used as a constant target.
        target_onehot (Tensor): one-hot target mask, shape (N, K) (any dtype).
        eps (float): the target-enhancement exponent; 1 gives plain soft-label cross entropy.
        temperature (float): softmax temperature. Default: 1.0.

    Returns:
        Tensor: scalar loss.
    """
    dtype = compute_dtype(logits_S)
    log_p_s = F.log_softmax(logits_S.to(dtype) / temperature, dim=1)
    p_t = F.softmax(logits_T.detach().to(dtype) / temperature, dim=1)
    mask = target_onehot.to(dtype)
    target = (p_t + mask).pow(eps) - mask
    return (-target * log_p_s).sum(dim=-1).mean()


class SepConv(nn.Module):
    """Depthwise-separable down-sampling block of the official code (``distillers/utils.py``).

    depthwise 3x3 (stride 2) -> pointwise 1x1 -> BN -> ReLU -> depthwise 3x3 (stride 1) ->
    pointwise 1x1 (to ``channel_out``) -> BN -> ReLU; convs without bias. The layers live in
    ``self.op`` as in the official module, so OFAKD projector weights load unchanged.

    Args:
        channel_in (int): input channels.
        channel_out (int): output channels.
        kernel_size (int), stride (int), padding (int): of the two depthwise convs (the second
            one has stride 1).
        affine (bool): learnable BN affine parameters.

    Shapes: (N, channel_in, H, W) -> (N, channel_out, ceil(H/2), ceil(W/2)) for stride 2.
    """

    def __init__(self, channel_in: int, channel_out: int, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(channel_in, channel_in, kernel_size, stride=stride, padding=padding,
                      groups=channel_in, bias=False),
            nn.Conv2d(channel_in, channel_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(channel_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(channel_in, channel_in, kernel_size, stride=1, padding=padding,
                      groups=channel_in, bias=False),
            nn.Conv2d(channel_in, channel_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(channel_out, affine=affine),
            nn.ReLU(inplace=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def build_cnn_projector(stage: int, in_channels: int, out_channels: int,
                        num_classes: int) -> nn.Sequential:
    """The official CNN-student exit branch for ``stage`` (1..4).

    Stage < 4: ``4 - stage`` stride-2 :class:`SepConv` blocks, channels doubling, the last one
    giving ``out_channels`` (= max(Ds, Dt)); stage 4: one 1x1 conv (with bias) to
    ``out_channels``. Then AdaptiveAvgPool2d(1) -> Flatten -> Linear(out_channels, num_classes).

    Shapes: (N, in_channels, H, W) -> (N, num_classes).
    """
    if stage not in (1, 2, 3, 4):
        raise ValueError(f'OFA stage must be one of 1, 2, 3, 4 (CNN student), got {stage}')
    if stage != 4:
        blocks: list[nn.Module] = []
        num_blocks = 4 - stage
        chans = in_channels
        for i in range(num_blocks):
            out = out_channels if i == num_blocks - 1 else chans * 2
            blocks.append(SepConv(chans, out))
            chans *= 2
    else:
        blocks = [nn.Conv2d(in_channels, out_channels, 1, 1, 0)]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(out_channels, num_classes))


def init_projector_weights(module: nn.Module) -> None:
    """The official ``init_weights``: kaiming-normal (fan_out, relu) conv weights, BN 1/0,
    Linear trunc-normal(std .02) weights and zero bias. Conv biases keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        elif isinstance(m, nn.BatchNorm2d):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@DISTILL_LOSSES.register_module()
class OFALoss(DistillLoss):
    """OFA loss: exit-branch projectors on student stages + the OFA logit loss.

    ``loss = kd_loss_weight * ofa(logits_S, logits_T, eps[-1])
    + ofa_loss_weight * sum_stage ofa(projector_stage(feat_stage), logits_T, eps[i])``

    (the official ``loss_kd + loss_ofa``; the student's own CE is the student's business). The
    target mask is the one-hot of the hard label, or of the argmax of soft (Mixup/CutMix/label
    smoothing) labels, as in the official code.

    Args:
        student_channels (int | Sequence[int]): channels of the student feature of each chosen
            stage, in the order of ``ofa_stage``.
        num_classes (int): number of classes (output of every projector).
        ofa_eps (float | Sequence[float]): the exponent; one value for all, or
            ``len(ofa_stage) + 1`` values (one per stage, the last for the student logits),
            as the official ``--ofa-eps``. Default: 1.0.
        ofa_stage (Sequence[int]): student stages (1..4) that get an exit branch.
            Default: (1, 2, 3, 4).
        ofa_temperature (float): softmax temperature. Default: 1.0.
        ofa_loss_weight (float): weight of the summed exit-branch losses. Default: 1.0.
        kd_loss_weight (float): weight of the OFA loss on the student's own logits. Default: 1.0.
        teacher_channels (int | Sequence[int] | None): the teacher's final (pre-logits) feature
            dimension Dt; for a sequence (the teacher's stage channels) the last entry is used.
        student_dim (int | None): the student's final feature dimension Ds. Default: the
            channels of stage 4 when stage 4 is in ``ofa_stage``; otherwise required.
        teacher_dim (int | None): Dt given directly (takes precedence over teacher_channels).

    The projectors end in ``max(Ds, Dt)`` channels, as the official code.
    """

    extra_inputs: tuple[str, ...] = ('gt_labels', 'logits_S')
    # The teacher tap is the logits, so teacher channels cannot be read from it: the config
    # gives student_channels / teacher_channels explicitly.
    takes_all_levels = True  # all tapped stage features go to one module
    same_shape = False

    def __init__(self,
                 student_channels: int | Sequence[int],
                 num_classes: int,
                 ofa_eps: float | Sequence[float] = 1.0,
                 ofa_stage: Sequence[int] = (1, 2, 3, 4),
                 ofa_temperature: float = 1.0,
                 ofa_loss_weight: float = 1.0,
                 kd_loss_weight: float = 1.0,
                 teacher_channels: int | Sequence[int] | None = None,
                 student_dim: int | None = None,
                 teacher_dim: int | None = None) -> None:
        super().__init__()
        stages = [int(s) for s in ofa_stage]
        if isinstance(student_channels, int):
            student_channels = [student_channels]
        student_channels = [int(c) for c in student_channels]
        if len(student_channels) != len(stages):
            raise ValueError(f'OFALoss: student_channels {student_channels} must give one value '
                             f'per stage of ofa_stage {stages}')
        eps = [float(ofa_eps)] if isinstance(ofa_eps, (int, float)) else \
            [float(e) for e in ofa_eps]
        if len(eps) == 1:
            eps = eps * (len(stages) + 1)
        if len(eps) != len(stages) + 1:
            raise ValueError(f'OFALoss: ofa_eps needs 1 or len(ofa_stage) + 1 = '
                             f'{len(stages) + 1} values (last for the logits), got {eps}')
        if teacher_dim is None:
            if teacher_channels is None:
                raise ValueError('OFALoss: give teacher_channels (or teacher_dim), the '
                                 "teacher's final feature dimension")
            teacher_dim = teacher_channels if isinstance(teacher_channels, int) \
                else list(teacher_channels)[-1]
        if student_dim is None:
            if 4 not in stages:
                raise ValueError('OFALoss: stage 4 is not in ofa_stage, so give student_dim, '
                                 "the student's final feature dimension")
            student_dim = student_channels[stages.index(4)]

        self.ofa_stage = tuple(stages)
        self.ofa_eps = tuple(eps)
        self.ofa_temperature = float(ofa_temperature)
        self.ofa_loss_weight = float(ofa_loss_weight)
        self.kd_loss_weight = float(kd_loss_weight)
        self.num_classes = int(num_classes)
        out_channels = max(int(student_dim), int(teacher_dim))
        self.projector = nn.ModuleDict({
            str(stage): build_cnn_projector(stage, chans, out_channels, self.num_classes)
            for stage, chans in zip(stages, student_channels)
        })
        self.projector.apply(init_projector_weights)

    def _target_mask(self, gt_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        if gt_labels.dim() != 1:  # soft / mixed labels: one-hot of the argmax
            gt_labels = gt_labels.argmax(dim=-1)
        return F.one_hot(gt_labels.long(), num_classes)

    def forward(self,
                preds_S: Sequence[torch.Tensor],
                preds_T: torch.Tensor,
                gt_labels: torch.Tensor,
                logits_S: torch.Tensor | None = None) -> torch.Tensor:
        """Compute the OFA loss.

        Args:
            preds_S (Sequence[Tensor]): student stage features, each (N, C_i, H_i, W_i): either
                one per stage of ``ofa_stage`` in that order, or all four stages (1..4) from
                which the chosen ones are picked.
            preds_T (Tensor): teacher logits, shape (N, K). Not back-propagated into.
            gt_labels (Tensor): hard labels (N,) or soft labels (N, K).
            logits_S (Tensor | None): the student's own logits, shape (N, K). May be None only
                when ``kd_loss_weight == 0``.

        Returns:
            Tensor: scalar loss.
        """
        if isinstance(preds_S, torch.Tensor):
            preds_S = [preds_S]
        preds_S = list(preds_S)
        if len(preds_S) == len(self.ofa_stage):
            feats = preds_S
        elif len(preds_S) == 4:
            feats = [preds_S[stage - 1] for stage in self.ofa_stage]
        else:
            raise ValueError(f'OFALoss: got {len(preds_S)} student features; expected one per '
                             f'stage of ofa_stage {self.ofa_stage} or all 4 stages')
        logits_T = preds_T.detach()
        target_mask = self._target_mask(gt_labels, logits_T.size(-1))

        branch_losses = []
        for stage, eps, feat in zip(self.ofa_stage, self.ofa_eps, feats):
            logits_head = self.projector[str(stage)](feat)
            branch_losses.append(
                ofa_loss(logits_head, logits_T, target_mask, eps, self.ofa_temperature))
        loss = self.ofa_loss_weight * torch.stack(branch_losses).sum()

        if self.kd_loss_weight != 0:
            if logits_S is None:
                raise ValueError('OFALoss: logits_S (the student logits) is needed when '
                                 'kd_loss_weight != 0')
            loss = loss + self.kd_loss_weight * ofa_loss(
                logits_S, logits_T, target_mask, self.ofa_eps[-1], self.ofa_temperature)
        return loss
