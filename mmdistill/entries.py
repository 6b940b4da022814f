"""Loss entries: the parsed ``distill_losses`` of a config, the loss modules built from the
tapped tensors of the dry run, and the build-time checks of both.

:func:`parse_entry` checks what the config alone decides; :func:`build_loss_modules` builds an
entry's modules; :func:`check_entry` checks the built entry against the wrapper and the tapped
tensors. Each check raises with the config key named.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .auto_weight import check_auto_weight
from .losses.base import DistillLoss, ModelModules, contract
from .nonfinite import all_finite, describe
from .recorder import Tap, find_module
from .registry import DISTILL_LOSSES
from .schedule import WeightSchedule

RESIZE_MODES = (None, 'teacher_to_student', 'student_to_teacher')


@dataclass
class LossEntry:
    """One ``distill_losses`` entry: taps, weight, schedule and the loss's own arguments.

    ``teacher_name``: the teacher it distils from (its key in ``model.teachers``; ``'teacher'``
    for ``model.teacher``), set by :func:`resolve_teacher_name` when the config leaves it out.
    ``auto_weight``: ``dict(share, iters)`` when the entry's weight is measured
    (:mod:`mmdistill.auto_weight`), else None.
    """

    name: str
    key: str
    student_taps: list[Tap]
    teacher_taps: list[Tap]
    weight: float
    resize: str | None
    loss_cls: type
    cfg: dict = field(default_factory=dict)
    schedule: WeightSchedule | None = None
    teacher_name: str | None = None
    auto_weight: dict | None = None

    @property
    def all_levels(self) -> bool:
        """The loss takes all student tensors at once (e.g. OFA's stage features)."""
        return contract(self.loss_cls).takes_all_levels

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """The keyword inputs the loss takes beyond the tapped tensors (its class declares them)."""
        return tuple(contract(self.loss_cls).extra_inputs)

    @property
    def loss_kwargs(self) -> dict:
        return {k: v for k, v in self.cfg.items() if k != 'type'}

    def factor(self) -> float:
        """This step's multiplier of the entry's weight (its ``weight_schedule``)."""
        return 1.0 if self.schedule is None else self.schedule.current()


def _as_list(spec: Any) -> list:
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def parse_entry(name: str, cfg: Any) -> LossEntry:
    """Parse ``model.distill_losses.<name>``: the wrapper's keys out, the loss's left in ``cfg``."""
    key = f'model.distill_losses.{name}'
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'{key}: expected dict(type=..., student=..., teacher=...), got {cfg!r}')
    cfg = dict(copy.deepcopy(cfg))
    loss_type = cfg['type']
    loss_cls = DISTILL_LOSSES.get(loss_type) if isinstance(loss_type, str) else loss_type
    if loss_cls is None:
        raise KeyError(f'{key}.type: unknown loss {loss_type!r}; registered losses: '
                       f'{sorted(DISTILL_LOSSES.module_dict)}')
    for side in ('student', 'teacher'):
        if side not in cfg:
            raise ValueError(f'{key}.{side}: missing tap (a module path like "neck[0]")')
    student_taps = [Tap.parse(s, f'{key}.student') for s in _as_list(cfg.pop('student'))]
    teacher_taps = [Tap.parse(s, f'{key}.teacher') for s in _as_list(cfg.pop('teacher'))]
    resize = cfg.pop('resize', None)
    if resize not in RESIZE_MODES:
        raise ValueError(f'{key}.resize must be one of {RESIZE_MODES}, got {resize!r}')
    schedule = cfg.pop('weight_schedule', None)
    if schedule is not None:
        schedule = WeightSchedule.build(schedule, f'{key}.weight_schedule')
    auto_weight = cfg.pop('auto_weight', None)
    if auto_weight is not None:
        auto_weight = check_auto_weight(auto_weight, f'{key}.auto_weight')
    teacher_name = cfg.pop('teacher_name', None)
    if 'loss_weight' in inspect.signature(loss_cls.__init__).parameters:
        raise TypeError(f'{key}.type: {loss_cls.__name__} takes loss_weight, which the wrapper '
                        'applies to every loss: remove it from the loss\'s __init__')
    weight = float(cfg.pop('loss_weight', 1.0))
    return LossEntry(name, key, student_taps, teacher_taps, weight, resize, loss_cls, cfg,
                     schedule, teacher_name, auto_weight)


def resolve_teacher_name(entry: LossEntry, names: list[str]) -> None:
    """Check the entry's ``teacher_name`` against the teachers' ``names``; without one, the
    entry distils from the only teacher (several: an error listing them)."""
    if entry.teacher_name is None:
        if len(names) > 1:
            raise ValueError(f'{entry.key}.teacher_name: missing; with several teachers each '
                             f'entry names the one it distils from: one of {names}')
        entry.teacher_name = names[0]
    elif entry.teacher_name not in names:
        raise ValueError(f'{entry.key}.teacher_name: {entry.teacher_name!r} names no teacher; '
                         f'the teachers are {names}')


# ---------------------------------------------------------------------------------- checks
def check_extra_inputs(entry: LossEntry, provided: tuple[str, ...], wrapper: str) -> None:
    missing = [x for x in entry.extra_inputs if x not in provided]
    if missing:
        raise ValueError(f'{entry.key}: {entry.cfg["type"]} needs {missing}, which {wrapper} '
                         f'cannot give (it gives {list(provided)})')


def check_level_pairing(entry: LossEntry, feats_s: list, feats_t: list) -> None:
    if len(feats_s) != len(feats_t):
        raise ValueError(f'{entry.key}: the student taps give {len(feats_s)} tensors and the '
                         f'teacher taps {len(feats_t)}; they must pair one to one')


def check_logit_classes(entry: LossEntry, where: str, cs: int | None, ct: int | None,
                        logit_layers: tuple[str, ...]) -> None:
    taps = [str(t) for t in entry.student_taps + entry.teacher_taps
            if t.path.split('.')[-1] in logit_layers]
    if taps and cs != ct:
        raise ValueError(f'{where}: the logit taps {taps} give {cs} classes (student) and {ct} '
                         '(teacher); distilling logits needs the same classes in both models')


def resolve_channels(entry: LossEntry, where: str, cs: int | None, ct: int | None) -> dict:
    """The loss arguments of one level: the declared channel arguments filled from the taps
    (or checked against them); without them, the channels must match if the loss says so."""
    cfg = entry.loss_kwargs
    declared = contract(entry.loss_cls)
    if declared.channel_args:
        s_arg, t_arg = declared.channel_args
        given_s, given_t = cfg.get(s_arg), cfg.get(t_arg)
        if given_s is None and given_t is None:
            if cs != ct:
                raise ValueError(
                    f'{where}: student tap gives {cs} channels, teacher tap {ct}; set '
                    f'{entry.key}.{s_arg}={cs} and {entry.key}.{t_arg}={ct} to add an align layer')
            cfg[s_arg], cfg[t_arg] = cs, ct
        elif (given_s, given_t) != (cs, ct):
            raise ValueError(f'{where}: {s_arg}={given_s}, {t_arg}={given_t} in the config, but '
                             f'the taps give {cs} (student) and {ct} (teacher) channels')
    elif declared.same_shape and cs != ct:
        raise ValueError(f'{where}: student tap gives {cs} channels and teacher tap {ct}; '
                         f'{entry.cfg["type"]} needs them equal')
    return cfg


def check_spatial_size(entry: LossEntry, where: str, fs: torch.Tensor, ft: torch.Tensor) -> None:
    if fs.dim() == 4 and contract(entry.loss_cls).same_shape \
            and fs.shape[2:] != ft.shape[2:] and entry.resize is None:
        raise ValueError(
            f'{where}: student map {tuple(fs.shape[2:])} and teacher map {tuple(ft.shape[2:])} '
            f"differ in size on the dry-run input; set {entry.key}.resize='teacher_to_student' "
            "or 'student_to_teacher'")


def check_taps(entry: LossEntry, module: nn.Module, feats_s: list, feats_t: list) -> None:
    """The loss's own build-time check of the dry-run tensors (:meth:`DistillLoss.check_taps`),
    its message prefixed with the entry's key."""
    if isinstance(module, DistillLoss):
        try:
            module.check_taps(feats_s, feats_t)
        except ValueError as err:
            raise ValueError(f'{entry.key}.{err}') from err


def check_finite_teacher(entry: LossEntry, feats_t: list, precision: str = 'fp32') -> None:
    """The teacher's tapped tensors of the dry run are finite (a checkpoint with inf or nan
    weights, or a teacher that overflows in ``precision``, fails here, not at step 1)."""
    for level, ft in enumerate(feats_t):
        if not all_finite([ft]):
            at = f' (level {level})' if len(feats_t) > 1 else ''
            hint = ("it overflows in fp16: set model.teacher_autocast='bf16' (same range as "
                    'fp32) or None' if precision == 'fp16' else
                    'its checkpoint holds inf or nan weights, or the model overflows')
            taps = [str(t) for t in entry.teacher_taps]
            raise ValueError(f'{entry.key}.teacher: the teacher\'s taps {taps} give '
                             f'{describe(ft)}{at} on the dry run in {precision}: {hint}')


def check_entry(entry: LossEntry, modules: nn.ModuleList, feats_s: list, feats_t: list,
                provided: tuple[str, ...], wrapper: str) -> None:
    """Every build-time check of a built entry: the inputs the wrapper gives, the teacher's
    tensors finite, the tensors' shapes (per level) and the loss's own check."""
    check_extra_inputs(entry, provided, wrapper)
    check_finite_teacher(entry, feats_t)
    if not entry.all_levels:
        for level, (fs, ft) in enumerate(zip(feats_s, feats_t)):
            where = f'{entry.key} (level {level})' if len(feats_s) > 1 else entry.key
            check_spatial_size(entry, where, fs, ft)
    check_taps(entry, modules[0], feats_s, feats_t)


# ---------------------------------------------------------------------------------- build
def _resolved(value: Any) -> bool:
    return isinstance(value, ModelModules) or isinstance(value, tuple) and bool(value) and all(
        isinstance(v, ModelModules) for v in value)


def resolve_module_args(entry: LossEntry, cfg: dict, models: dict[str, nn.Module]) -> dict:
    """Replace the module paths of the loss's ``module_args`` in ``cfg`` (or their default in
    the loss's signature) by :class:`ModelModules` of the models they name (``models``:
    ``{'student': ..., 'teacher': ...}``); a missing path raises with the candidates."""
    params = inspect.signature(entry.loss_cls.__init__).parameters
    for arg, owners in contract(entry.loss_cls).module_args.items():
        default = params[arg].default if arg in params else None
        value = cfg.get(arg, None if default is inspect.Parameter.empty else default)
        if value is None or _resolved(value):
            continue
        paths = [value] if isinstance(value, str) else list(value)
        if not all(isinstance(p, str) for p in paths):
            raise ValueError(f'{entry.key}.{arg}: expected a list of module paths, got {value!r}')
        resolved = tuple(
            ModelModules([find_module(models[owner], p, f'{entry.key}.{arg}', owner)
                          for p in paths], paths)
            for owner in ((owners, ) if isinstance(owners, str) else owners))
        cfg[arg] = resolved[0] if isinstance(owners, str) else resolved
    return cfg


def make_loss(entry: LossEntry, cfg: dict, where: str) -> nn.Module:
    try:
        return entry.loss_cls(**cfg)
    except (TypeError, ValueError) as err:
        raise type(err)(f'{where}: cannot build {entry.cfg["type"]}: {err}') from err


def build_loss_modules(entry: LossEntry, feats_s: list, feats_t: list,
                       logit_layers: tuple[str, ...],
                       models: dict[str, nn.Module]) -> nn.ModuleList:
    """One loss module per level (one for an all-levels loss) from the dry-run tensors: the
    channel arguments filled, the modules a loss names (``module_args``) resolved in
    ``models`` (``{'student': ..., 'teacher': ...}``)."""
    if entry.all_levels:
        cfg = resolve_module_args(entry, entry.loss_kwargs, models)
        return nn.ModuleList([make_loss(entry, cfg, entry.key)])
    check_level_pairing(entry, feats_s, feats_t)
    modules = []
    for level, (fs, ft) in enumerate(zip(feats_s, feats_t)):
        where = f'{entry.key} (level {level})' if len(feats_s) > 1 else entry.key
        cs = fs.shape[1] if fs.dim() > 1 else None
        ct = ft.shape[1] if ft.dim() > 1 else None
        check_logit_classes(entry, where, cs, ct, logit_layers)
        cfg = resolve_module_args(entry, resolve_channels(entry, where, cs, ct), models)
        modules.append(make_loss(entry, cfg, where))
    return nn.ModuleList(modules)


# ---------------------------------------------------------------------------------- step
def resize_pair(fs: torch.Tensor, ft: torch.Tensor, mode: str | None) -> tuple:
    """Resize one map of a pair to the other's size (bilinear), as the entry's ``resize`` says."""
    if mode is None or fs.dim() != 4 or fs.shape[2:] == ft.shape[2:]:
        return fs, ft
    if mode == 'teacher_to_student':
        return fs, F.interpolate(ft, size=fs.shape[2:], mode='bilinear', align_corners=False)
    return F.interpolate(fs, size=ft.shape[2:], mode='bilinear', align_corners=False), ft


def zero_loss(modules: nn.Module, device: torch.device) -> torch.Tensor:
    """A zero loss that still touches every trainable parameter of ``modules`` (a stopped entry:
    DDP sees all parameters used)."""
    zero = torch.zeros((), device=device)
    for p in modules.parameters():
        if p.requires_grad:
            zero = zero + p.sum() * 0.
    return zero
