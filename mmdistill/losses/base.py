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

from torch import Tensor, nn

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

    ``forward(preds_S, preds_T, **inputs)`` returns the unweighted scalar loss; the wrapper
    multiplies it by the entry's ``loss_weight`` (and its ``weight_schedule``, ``auto_weight``).

    Class attributes (read from the class, before any instance exists):
        extra_inputs: keyword inputs of ``forward`` beyond ``(preds_S, preds_T)``, names from
            :data:`KNOWN_INPUTS`; the build fails when the wrapper cannot give one.
        takes_all_levels: ``forward`` gets the lists of every tapped student and teacher tensor
            at once (one loss module per entry), instead of one pair per level.
        channel_args: names of the ``__init__`` arguments for the student's and the teacher's
            channels; the wrapper fills them from the taps (and checks them when given).
        same_shape: a level's student and teacher tensors must have the same channels (unless
            ``channel_args`` align them) and, for maps, the same H, W (unless the entry sets
            ``resize``); False for a loss that pools, resizes or projects them itself.
        dataset_size_arg: an ``__init__`` argument that the runner fills with the size of the
            training set (CRD's memory banks) when the config leaves it out.
        module_args: ``{argument: 'student' | 'teacher' | ('student', 'teacher')}``: ``__init__``
            arguments that name modules of the models by path (``'head.fc'``, or a list run one
            after the other); the wrapper resolves them at build time into :class:`ModelModules`
            (a tuple of them, one per model, for several owners). CrossKD runs the teacher's
            head on student features; SDD applies each model's classifier to pooled regions.

    :meth:`check_taps` may check the dry-run tensors at build time.
    """

    extra_inputs: ClassVar[tuple[str, ...]] = ()
    takes_all_levels: ClassVar[bool] = False
    channel_args: ClassVar[tuple[str, str] | None] = None
    same_shape: ClassVar[bool] = True
    dataset_size_arg: ClassVar[str | None] = None
    module_args: ClassVar[dict[str, str | tuple[str, ...]]] = {}

    def check_taps(self, preds_S: list[Tensor], preds_T: list[Tensor]) -> None:
        """Build-time check of the tapped tensors of the dry run (one per level); raise
        ``ValueError('student: ...')`` (or ``'teacher: ...'``): the wrapper prefixes the
        entry's key."""


class ModelModules:
    """Modules of the student or a teacher run one after the other, held without being
    registered (a loss's ``module_args``).

    Not an ``nn.Module``: a loss holding it does not own the model's parameters, so they stay
    out of its ``parameters()``, state dict, optimizer and DDP's reducer (a student's module is
    trained as part of the student); gradients still flow through the modules. A deep copy
    (mmengine's EMA model) shares them. An ``nn.ModuleList`` in the sequence applies its
    ``level``-th module (per-level layers such as GFL's ``scales``).

    Args:
        modules: the modules, in the order they run.
        paths: their paths in the model, for messages.
    """

    def __init__(self, modules: Sequence[nn.Module], paths: Sequence[str] | None = None) -> None:
        self.modules = tuple(modules)
        self.paths = tuple(paths) if paths is not None else tuple(
            type(m).__name__ for m in self.modules)

    def __call__(self, x: Any, level: int | None = None) -> Any:
        for path, module in zip(self.paths, self.modules):
            if isinstance(module, nn.ModuleList):
                if level is None or not -len(module) <= level < len(module):
                    raise IndexError(f'module {path!r} holds {len(module)} per-level '
                                     f'modules; level {level} asked for')
                module = module[level]
            x = module(x)
        return x

    def parameters(self):
        return (p for m in self.modules for p in m.parameters())

    def __deepcopy__(self, memo: dict) -> 'ModelModules':
        return self

    def __repr__(self) -> str:
        return f'ModelModules({list(self.paths)})'


def as_model_modules(value: Any, name: str) -> ModelModules:
    """``value`` as :class:`ModelModules`: one already, or a sequence of modules (tests)."""
    if isinstance(value, ModelModules):
        return value
    if isinstance(value, nn.Module):
        value = [value]
    if isinstance(value, Sequence) and value and all(isinstance(m, nn.Module) for m in value):
        return ModelModules(value)
    raise TypeError(f'{name}: expected model modules, got {value!r}; in a config it is a list '
                    'of module paths, which the distillation wrapper resolves')


def contract(loss_cls: type) -> type[DistillLoss]:
    """Where the declarations of ``loss_cls`` are read: the class itself when it is a
    :class:`DistillLoss`, else :class:`DistillLoss` (the defaults) for a plain ``nn.Module``."""
    return loss_cls if isinstance(loss_cls, type) and issubclass(loss_cls, DistillLoss) \
        else DistillLoss
