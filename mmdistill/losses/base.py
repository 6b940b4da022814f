"""The contract between a distillation loss and the wrappers that run it.

A loss is an ``nn.Module`` whose ``forward(preds_S, preds_T, **inputs)`` returns a scalar. What
the wrappers need to know about it beyond that, it declares as class attributes of
:class:`DistillLoss`; the defaults are the common case (one student/teacher tensor pair per
tapped level, same channels and size, weighted by the wrapper, no extra input)::

    @DISTILL_LOSSES.register_module()
    class L1FeatureLoss(DistillLoss):
        def forward(self, preds_S, preds_T):          # (N, C, H, W) each
            return (preds_S - preds_T).abs().mean()

A loss that needs the boxes says ``extra_inputs = ('gt_bboxes', 'img_shape')`` and takes them as
keyword arguments; one with an align layer says ``channel_args = ('student_channels',
'teacher_channels')`` and the wrapper fills both from the taps. The wrappers read nothing else.
"""
from __future__ import annotations

from typing import ClassVar

from torch import nn

#: the extra inputs the wrappers can give, and what they are
KNOWN_INPUTS = {
    'gt_bboxes': 'detection: list of (n_i, 4) xyxy boxes in input pixels, one per image',
    'gt_labels': 'detection: list of (n_i,) box labels; classification: (N,) labels or (N, K) '
                 'soft labels (Mixup/CutMix)',
    'img_shape': 'detection, segmentation: (H, W) of the padded batch input',
    'gt_sem_seg': 'segmentation: (N, H, W) label maps of the padded batch',
    'indices': 'classification: (N,) dataset index of each sample',
    'logits_S': "classification: (N, K) output of the student's head",
}


class DistillLoss(nn.Module):
    """Base class of the distillation losses: declares how the wrappers call a loss.

    Attributes (class level; a loss whose needs depend on its arguments may set
    ``extra_inputs`` or ``region_scales`` on the instance in ``__init__``):
        extra_inputs: keyword inputs of ``forward`` beyond ``(preds_S, preds_T)``, names from
            :data:`KNOWN_INPUTS`; the build fails when the wrapper cannot give one.
        takes_all_levels: ``forward`` gets the lists of every tapped student and teacher tensor
            at once (one loss module per entry), instead of one pair per level.
        channel_args: names of the ``__init__`` arguments for the student's and the teacher's
            channels; the wrapper fills them from the taps (and checks them when given).
        match_channels: without ``channel_args``, the two taps must have the same channels.
        match_spatial: the maps must have the same H, W unless the entry sets ``resize``;
            False for a loss that pools or resizes itself.
        owns_weight: ``loss_weight`` is an ``__init__`` argument that the loss applies itself;
            otherwise the wrapper multiplies the loss by the entry's ``loss_weight``.
        dataset_size_arg: an ``__init__`` argument that the tools fill with the size of the
            training set (CRD's memory banks) when the config leaves it out.
        region_scales: ``(1, 2, 4)``-like grids when ``forward`` takes per-region logits
            ``(N, K, M)`` instead of the tapped feature maps: the classification wrapper pools
            the last feature map to these grids and applies each model's classifier (SDD).
    """

    extra_inputs: tuple[str, ...] = ()
    takes_all_levels: ClassVar[bool] = False
    channel_args: ClassVar[tuple[str, str] | None] = None
    match_channels: ClassVar[bool] = True
    match_spatial: ClassVar[bool] = True
    owns_weight: ClassVar[bool] = False
    dataset_size_arg: ClassVar[str | None] = None
    region_scales: tuple[int, ...] | None = None


def contract(loss_cls: type) -> type[DistillLoss]:
    """Where the declarations of ``loss_cls`` are read: the class itself when it is a
    :class:`DistillLoss`, else :class:`DistillLoss` (the defaults) for a plain ``nn.Module``."""
    return loss_cls if isinstance(loss_cls, type) and issubclass(loss_cls, DistillLoss) \
        else DistillLoss
