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

from collections.abc import Sequence
from typing import Any, ClassVar

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
        teacher_module_args: ``__init__`` arguments that name modules of the teacher, as a list
            of module paths (``['bbox_head.cls_convs.3', 'bbox_head.gfl_cls']``); the wrapper
            resolves them in the frozen teacher at build time and passes
            :class:`TeacherModules` instead (CrossKD runs the teacher's head on student features).
    """

    extra_inputs: tuple[str, ...] = ()
    takes_all_levels: ClassVar[bool] = False
    channel_args: ClassVar[tuple[str, str] | None] = None
    match_channels: ClassVar[bool] = True
    match_spatial: ClassVar[bool] = True
    owns_weight: ClassVar[bool] = False
    dataset_size_arg: ClassVar[str | None] = None
    region_scales: tuple[int, ...] | None = None
    teacher_module_args: ClassVar[tuple[str, ...]] = ()


class TeacherModules:
    """Frozen teacher modules run one after the other, held without being registered.

    Not an ``nn.Module`` (as :class:`~mmdistill.teacher.Teacher`): a loss holding it does not
    own the teacher's parameters, so they stay out of its ``parameters()``, state dict, optimizer
    and DDP's reducer; gradients still flow through the modules to their input. A deep copy
    (mmengine's EMA model) shares them. An ``nn.ModuleList`` in the sequence applies its
    ``level``-th module (per-level layers such as GFL's ``scales``).

    Args:
        modules: the modules, in the order they run.
        paths: their paths in the teacher, for messages.
    """

    def __init__(self, modules: Sequence[nn.Module], paths: Sequence[str] | None = None) -> None:
        self.modules = tuple(modules)
        self.paths = tuple(paths) if paths is not None else tuple(
            type(m).__name__ for m in self.modules)

    def __call__(self, x: Any, level: int | None = None) -> Any:
        for path, module in zip(self.paths, self.modules):
            if isinstance(module, nn.ModuleList):
                if level is None or not -len(module) <= level < len(module):
                    raise IndexError(f'teacher module {path!r} holds {len(module)} per-level '
                                     f'modules; level {level} asked for')
                module = module[level]
            x = module(x)
        return x

    def parameters(self):
        return (p for m in self.modules for p in m.parameters())

    def __deepcopy__(self, memo: dict) -> 'TeacherModules':
        return self

    def __repr__(self) -> str:
        return f'TeacherModules({list(self.paths)})'


def as_teacher_modules(value: Any, name: str) -> TeacherModules:
    """``value`` as :class:`TeacherModules`: one already, or a sequence of modules (tests)."""
    if isinstance(value, TeacherModules):
        return value
    if isinstance(value, nn.Module):
        value = [value]
    if isinstance(value, Sequence) and value and all(isinstance(m, nn.Module) for m in value):
        return TeacherModules(value)
    raise TypeError(f'{name}: expected teacher modules, got {value!r}; in a config it is a list '
                    'of teacher module paths, which the distillation wrapper resolves')


def contract(loss_cls: type) -> type[DistillLoss]:
    """Where the declarations of ``loss_cls`` are read: the class itself when it is a
    :class:`DistillLoss`, else :class:`DistillLoss` (the defaults) for a plain ``nn.Module``."""
    return loss_cls if isinstance(loss_cls, type) and issubclass(loss_cls, DistillLoss) \
        else DistillLoss
