"""The task-independent distillation core shared by all wrappers.

``BaseDistiller`` builds the student and a frozen teacher, records their taps with forward hooks,
and adds the weighted distillation losses to the student's own losses. A wrapper subclass says
only what differs per task: its registry, which extra loss inputs it can give (ground-truth boxes,
labels, ...), and dummy data samples for the build-time dry run.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope, Registry
from torch import nn

from .analysis import loss_balance
from .losses.base import DistillLoss, contract
from .recorder import FeatureRecorder, Tap
from .registry import DISTILL_LOSSES
from .schedule import WeightSchedule
from .teacher import build_teacher

_RESIZE_MODES = (None, 'teacher_to_student', 'student_to_teacher')
_AUTOCAST = {None: None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


@dataclass
class LossEntry:
    """One ``distill_losses`` entry: taps, weight and its loss module per level."""

    name: str
    key: str
    student_taps: list[Tap]
    teacher_taps: list[Tap]
    weight: float
    resize: str | None
    loss_cls: type
    extra_inputs: tuple[str, ...] = ()
    cfg: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    schedule: WeightSchedule | None = None

    def factor(self) -> float:
        """This step's multiplier of the entry's weight (its ``weight_schedule``)."""
        return 1.0 if self.schedule is None else self.schedule.current()

    @property
    def all_levels(self) -> bool:
        """The loss takes all student tensors at once (e.g. OFA's stage features)."""
        return contract(self.loss_cls).takes_all_levels


def _as_list(spec: Any) -> list:
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


class BaseDistiller(BaseModel):
    """Train ``student`` with its own losses plus weighted distillation losses from ``teacher``.

    Args:
        student: config of the student model (any model of the wrapper's library).
        teacher: ``dict(config=<path | 'pkg::path' | dict>, checkpoint=<path>)``.
        distill_losses: ``{name: dict(type=..., student=tap(s), teacher=tap(s),
            loss_weight=1.0, resize=None, weight_schedule=None, **hyperparameters)}``; logged
            as ``loss_<name>``. A tap that yields several tensors (``'neck'``: all FPN levels)
            or a list of taps gives one loss module per level, summed. ``weight_schedule``: see
            :class:`~mmdistill.schedule.WeightSchedule`.
        init_student: copy the teacher's parameters under ``init_student_prefixes`` into the
            student where names and shapes match (FGD/MGD inheriting strategy).
        teacher_autocast: None (full precision), 'fp16' or 'bf16' for the teacher's forward.
        save_teacher: write the teacher's weights into training checkpoints.
        skip_teacher: build the student only (testing, export); no distillation loss runs.
        dry_run_shape: (H, W) of the dummy input used at build time to check the taps.
        data_preprocessor: the config's top-level data preprocessor, which the student takes
            when its own config has none (mmpretrain style); the student's one is used.
    """

    #: the library registry that builds student and teacher (set by the wrapper).
    registry: Registry
    #: the extra loss inputs the wrapper can give (see ``_extra_inputs``).
    provided_inputs: tuple[str, ...] = ()
    #: default parameter prefixes that ``init_student`` copies.
    init_student_prefixes: tuple[str, ...] = ()
    #: names of the models' classifier layers: taps on them must give the same class count.
    logit_layers: tuple[str, ...] = ()
    #: extra loss inputs read from student taps, ``((input name, tap), ...)`` (OFA's logits).
    extra_taps: tuple[tuple[str, str], ...] = ()
    #: whether the wrapper gives per-region logits to losses that declare ``region_scales``.
    gives_region_logits: bool = False
    #: wrapper-specific keys of a loss entry, kept out of the loss's arguments.
    entry_options: tuple[str, ...] = ()
    #: (H, W) of the build-time dry-run input when the config gives none.
    default_dry_run_shape: tuple[int, int] = (128, 128)

    def __init__(self,
                 student: dict,
                 teacher: dict | None = None,
                 distill_losses: dict | None = None,
                 init_student: bool | list[str] = False,
                 teacher_autocast: str | None = None,
                 save_teacher: bool = False,
                 skip_teacher: bool = False,
                 dry_run_shape: tuple[int, int] | None = None,
                 data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        student = ConfigDict(student)
        if data_preprocessor is not None:  # the Runner passes a top-level data_preprocessor
            student.setdefault('data_preprocessor', data_preprocessor)
        with DefaultScope.overwrite_default_scope(self.registry.scope):
            self.student = self.registry.build(student)
        self.data_preprocessor = self.student.data_preprocessor
        if teacher_autocast not in _AUTOCAST:
            raise ValueError(f'model.teacher_autocast must be one of {list(_AUTOCAST)}, '
                             f'got {teacher_autocast!r}')
        self.teacher_autocast = teacher_autocast
        self.save_teacher = save_teacher
        self.skip_teacher = skip_teacher
        self.init_student = init_student
        self._entries: list[LossEntry] = []
        #: set by :class:`~mmdistill.hooks.DistillBalanceHook`: 'ratios' or 'grads' for the
        #: next step, whose statistics land in ``balance_stats``.
        self.balance_request: str | None = None
        self.balance_stats: dict[str, float] | None = None
        self.distill_losses = nn.ModuleDict()
        object.__setattr__(self, 'teacher', None)
        object.__setattr__(self, 'teacher_checkpoint', None)
        self._register_state_dict_hook(_save_teacher_hook)
        self._register_load_state_dict_pre_hook(_load_teacher_hook, with_module=True)
        if skip_teacher:
            return
        if teacher is None:
            raise ValueError('model.teacher is required: dict(config=..., checkpoint=...)')
        with DefaultScope.overwrite_default_scope(self.registry.scope):
            object.__setattr__(self, 'teacher', build_teacher(self.registry, teacher))
        object.__setattr__(self, 'teacher_checkpoint', teacher.get('checkpoint'))
        self._build_entries(distill_losses or {})
        needed = {x for e in self._entries for x in e.extra_inputs}
        self._extra_taps = {name: Tap.parse(tap) for name, tap in self.extra_taps
                            if name in needed}
        self._student_rec = FeatureRecorder(
            self.student,
            [(t, e.key + '.student') for e in self._entries for t in e.student_taps]
            + [(t, f'extra input {name!r}') for name, t in self._extra_taps.items()],
            'student')
        self._teacher_rec = FeatureRecorder(
            self.teacher, [(t, e.key + '.teacher') for e in self._entries for t in e.teacher_taps],
            'teacher')
        self._teacher_scope = self._scope_of(e.teacher_taps for e in self._entries)
        self._student_scope = self._scope_of(e.student_taps for e in self._entries)
        self._renorm = self._renormalisation()
        self._dry_run(dry_run_shape or self.default_dry_run_shape)

    # ------------------------------------------------------------------ build
    def _build_entries(self, distill_losses: dict) -> None:
        for name, cfg in distill_losses.items():
            key = f'model.distill_losses.{name}'
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise ValueError(f'{key}: expected dict(type=..., student=..., teacher=...), '
                                 f'got {cfg!r}')
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
            if resize not in _RESIZE_MODES:
                raise ValueError(f'{key}.resize must be one of {_RESIZE_MODES}, got {resize!r}')
            schedule = cfg.pop('weight_schedule', None)
            if schedule is not None:
                schedule = WeightSchedule.build(schedule, f'{key}.weight_schedule')
            options = {k: cfg.pop(k) for k in self.entry_options if k in cfg}
            declared = contract(loss_cls)
            weight = 1.0 if declared.owns_weight else float(cfg.pop('loss_weight', 1.0))
            self._entries.append(LossEntry(
                name, key, student_taps, teacher_taps, weight, resize, loss_cls,
                tuple(declared.extra_inputs), cfg, options, schedule))

    def _check_extra_inputs(self, entry: LossEntry) -> None:
        missing = [x for x in entry.extra_inputs if x not in self.provided_inputs]
        if missing:
            raise ValueError(
                f'{entry.key}: {entry.cfg["type"]} needs {missing}, which '
                f'{type(self).__name__} cannot give (it gives {list(self.provided_inputs)})')

    def _check_region_logits(self, entry: LossEntry, module: DistillLoss) -> None:
        if module.region_scales is not None and not self.gives_region_logits:
            raise ValueError(
                f'{entry.key}: {entry.cfg["type"]} takes per-region logits (region_scales '
                f'{module.region_scales}), which only DistillClassifier gives, not '
                f'{type(self).__name__}')

    @staticmethod
    def _scope_of(tap_groups) -> str:
        """How far a model must run for its taps: 'backbone', 'neck' or 'full'."""
        roots = {t.path.split('.')[0] for taps in tap_groups for t in taps}
        if roots <= {'backbone'}:
            return 'backbone'
        if roots <= {'backbone', 'neck'}:
            return 'neck'
        return 'full'

    def _renormalisation(self) -> tuple | None:
        """Return how to turn student-normalised inputs into teacher-normalised ones, or None."""
        s_pre, t_pre = self.student.data_preprocessor, self.teacher.data_preprocessor

        def stats(pre):
            mean = getattr(pre, 'mean', None) if getattr(pre, '_enable_normalize', False) else None
            std = getattr(pre, 'std', None) if mean is not None else None
            flip = (getattr(pre, '_channel_conversion', None)  # mmengine, mmdet
                    or getattr(pre, 'to_rgb', None)  # mmpretrain
                    or getattr(pre, 'channel_conversion', False))  # mmseg
            return (mean, std, bool(flip))

        (ms, ss, cs), (mt, st, ct) = stats(s_pre), stats(t_pre)
        same = (cs == ct and (ms is None) == (mt is None)
                and (ms is None or (torch.equal(ms, mt) and torch.equal(ss, st))))
        if same:
            return None
        return (ms, ss, cs != ct, mt, st)

    def _teacher_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._renorm is None:
            return inputs
        ms, ss, flip, mt, st = self._renorm
        x = inputs if ms is None else inputs * ss.to(inputs) + ms.to(inputs)
        if flip:
            x = x.flip(1)
        return x if mt is None else (x - mt.to(x)) / st.to(x)

    @torch.no_grad()
    def _dry_run(self, shape: tuple[int, int]) -> None:
        """Run both models once on a dummy batch to check every tap before any data loads."""
        h, w = shape
        inputs = torch.zeros(1, 3, h, w)
        samples = self._dummy_data_samples(inputs)
        modes = (self.student.training, )
        self.student.eval()
        try:
            with self._student_rec.recording(), self._teacher_rec.recording():
                self._run_model(self.student, self._student_scope, inputs, samples)
                self._run_model(self.teacher, self._teacher_scope, inputs, samples)
                for entry in self._entries:
                    self._build_entry_modules(entry)
                self._teacher_rec.keep_only(t for e in self._entries for t in e.teacher_taps)
        finally:
            self.student.train(modes[0])

    def _build_entry_modules(self, entry: LossEntry) -> None:
        key = entry.key
        self._check_extra_inputs(entry)
        feats_s, feats_t = self._entry_feats(entry)
        loss_cls = entry.loss_cls
        if entry.all_levels:
            self.distill_losses[entry.name] = nn.ModuleList(
                [self._make_loss(entry, {k: v for k, v in entry.cfg.items() if k != 'type'},
                                 key)])
            return
        if len(feats_s) != len(feats_t):
            raise ValueError(f'{key}: the student taps give {len(feats_s)} tensors and the '
                             f'teacher taps {len(feats_t)}; they must pair one to one')
        declared = contract(loss_cls)
        channel_args = declared.channel_args
        logit_taps = [str(t) for t in entry.student_taps + entry.teacher_taps
                      if t.path.split('.')[-1] in self.logit_layers]
        modules = []
        for level, (fs, ft) in enumerate(zip(feats_s, feats_t)):
            where = f'{key} (level {level})' if len(feats_s) > 1 else key
            cfg = {k: v for k, v in entry.cfg.items() if k != 'type'}
            cs, ct = fs.shape[1] if fs.dim() > 1 else None, ft.shape[1] if ft.dim() > 1 else None
            if logit_taps and cs != ct:
                raise ValueError(
                    f'{where}: the logit taps {logit_taps} give {cs} classes (student) and {ct} '
                    '(teacher); distilling logits needs the same classes in both models')
            if channel_args:
                s_arg, t_arg = channel_args
                given_s, given_t = cfg.get(s_arg), cfg.get(t_arg)
                if given_s is None and given_t is None:
                    if cs != ct:
                        raise ValueError(
                            f'{where}: student tap gives {cs} channels, teacher tap {ct}; set '
                            f'{key}.{s_arg}={cs} and {key}.{t_arg}={ct} to add an align layer')
                    cfg[s_arg], cfg[t_arg] = cs, ct
                elif (given_s, given_t) != (cs, ct):
                    raise ValueError(
                        f'{where}: {s_arg}={given_s}, {t_arg}={given_t} in the config, but the '
                        f'taps give {cs} (student) and {ct} (teacher) channels')
            elif declared.match_channels and cs != ct:
                raise ValueError(f'{where}: student tap gives {cs} channels and teacher tap {ct}; '
                                 f'{entry.cfg["type"]} needs them equal')
            if fs.dim() == 4 and declared.match_spatial \
                    and fs.shape[2:] != ft.shape[2:] and entry.resize is None:
                raise ValueError(
                    f'{where}: student map {tuple(fs.shape[2:])} and teacher map '
                    f'{tuple(ft.shape[2:])} differ in size on the dry-run input; set '
                    f"{key}.resize='teacher_to_student' or 'student_to_teacher'")
            modules.append(self._make_loss(entry, cfg, where))
        self.distill_losses[entry.name] = nn.ModuleList(modules)
        if isinstance(modules[0], DistillLoss):  # the instance may need more than its class
            entry.extra_inputs = tuple(modules[0].extra_inputs)
            self._check_region_logits(entry, modules[0])
        self._check_extra_inputs(entry)
        self._check_entry(entry, modules, feats_s, feats_t)

    def _entry_feats(self, entry: LossEntry) -> tuple[list, list]:
        """This step's student and teacher tensors of an entry, one per level."""
        return ([f for t in entry.student_taps
                 for f in self._student_rec.get(t, entry.key + '.student')],
                [f for t in entry.teacher_taps
                 for f in self._teacher_rec.get(t, entry.key + '.teacher')])

    @staticmethod
    def _make_loss(entry: LossEntry, cfg: dict, where: str) -> nn.Module:
        try:
            return entry.loss_cls(**cfg)
        except (TypeError, ValueError) as err:
            raise type(err)(f'{where}: cannot build {entry.cfg["type"]}: {err}') from err

    def _check_entry(self, entry: LossEntry, modules: list, feats_s: list, feats_t: list) -> None:
        """Wrapper-specific build-time checks of an entry's tapped tensors (dry run)."""

    def _prepare(self, entry: LossEntry, module: nn.Module, fs: Any, ft: Any) -> tuple:
        """Turn the recorded tensors into the loss inputs (resize by the entry's option)."""
        if entry.all_levels:
            return fs, ft
        return _resize(fs, ft, entry.resize)

    # ------------------------------------------------------------------ run
    def _run_model(self, model: nn.Module, scope: str, inputs: torch.Tensor,
                   data_samples: list | None) -> Any:
        if scope == 'backbone':
            return model.backbone(inputs)
        if scope == 'neck':
            return model.extract_feat(inputs)
        return model(inputs, data_samples, mode='tensor')

    def _run_teacher(self, inputs: torch.Tensor, data_samples: list | None) -> None:
        dtype = _AUTOCAST[self.teacher_autocast]
        autocast = torch.autocast(inputs.device.type, dtype=dtype, enabled=dtype is not None)
        with torch.no_grad(), autocast:
            self._run_model(self.teacher, self._teacher_scope, self._teacher_inputs(inputs),
                            data_samples)

    def compute_distill_losses(self, data_samples: list | None,
                               factors: list[float] | None = None) -> dict[str, torch.Tensor]:
        """Weighted distillation losses from this step's records, ``{'loss_<name>': value}``.

        ``factors`` (one per entry, default 1) multiply the weights; an entry at 0 is not
        computed (its learnable parts get zero gradients, so DDP sees every parameter used).
        """
        extras: dict[str, Any] = {}
        losses = {}
        for entry, factor in zip(self._entries, factors or [1.0] * len(self._entries)):
            if factor == 0:
                losses[f'loss_{entry.name}'] = _zero_loss(self.distill_losses[entry.name],
                                                          self.student)
                continue
            feats_s, feats_t = self._entry_feats(entry)
            kwargs = {}
            for name in entry.extra_inputs:
                if name not in extras:
                    extras[name] = self._extra_inputs(name, data_samples)
                kwargs[name] = extras[name]
            if entry.all_levels:
                pairs = [(feats_s, feats_t[0] if len(feats_t) == 1 else feats_t)]
            else:
                pairs = list(zip(feats_s, feats_t))
            total = 0.
            for module, (fs, ft) in zip(self.distill_losses[entry.name], pairs):
                fs, ft = self._prepare(entry, module, fs, ft)
                ft = ft.detach() if isinstance(ft, torch.Tensor) else [f.detach() for f in ft]
                total = total + module(fs, ft, **kwargs)
            losses[f'loss_{entry.name}'] = total * (entry.weight * factor)
        return losses

    def loss(self, inputs: torch.Tensor, data_samples: list | None = None) -> dict:
        """The student's losses plus ``loss_<name>`` for every distillation entry."""
        if self.skip_teacher:
            return self.student.loss(inputs, data_samples)
        factors = [entry.factor() for entry in self._entries]
        with self._student_rec.recording(), self._teacher_rec.recording():
            if any(factors):  # every entry stopped (or none): the teacher need not run
                self._run_teacher(inputs, data_samples)
            losses = self.student.loss(inputs, data_samples)
            distill = self.compute_distill_losses(data_samples, factors)
        clash = set(losses) & set(distill)
        if clash:
            raise KeyError(f'distillation loss names {sorted(clash)} clash with the student\'s')
        if self.balance_request is not None:
            self.balance_stats = loss_balance(losses, distill, self.student.parameters(),
                                              grads=self.balance_request == 'grads')
            self.balance_request = None
        losses.update(distill)
        return losses

    def predict(self, inputs: torch.Tensor, data_samples: list | None = None) -> list:
        """Predict with the student alone."""
        return self.student.predict(inputs, data_samples)

    def forward(self, inputs: torch.Tensor, data_samples: list | None = None,
                mode: str = 'tensor') -> Any:
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.student(inputs, data_samples, mode='tensor')
        raise RuntimeError(f'Invalid mode "{mode}"; only supports loss, predict and tensor mode')

    # ------------------------------------------------------------------ task hooks
    def _extra_inputs(self, name: str, data_samples: list | None) -> Any:
        """Give the extra loss input ``name`` (one of ``provided_inputs``) for this batch."""
        if name in self._extra_taps:
            return self._student_rec.get(self._extra_taps[name], f'extra input {name!r}')[0]
        raise KeyError(name)

    def _dummy_data_samples(self, inputs: torch.Tensor) -> list | None:
        """Data samples for the build-time dry run (None when the models need none)."""
        return None

    # ------------------------------------------------------------------ teacher handling
    def train(self, mode: bool = True) -> 'BaseDistiller':
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if getattr(self, 'teacher', None) is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def init_weights(self) -> None:
        """Initialise the student (and loss modules), then inherit teacher weights if asked."""
        super().init_weights()
        if self.init_student and self.teacher is not None:
            prefixes = (self.init_student if isinstance(self.init_student, (list, tuple))
                        else self.init_student_prefixes)
            self.inherit_from_teacher(prefixes)

    @torch.no_grad()
    def inherit_from_teacher(self, prefixes: tuple[str, ...] | list[str]) -> list[str]:
        """Copy teacher parameters under ``prefixes`` into the student where shapes match."""
        s_state = self.student.state_dict()
        copied, skipped = [], []
        for name, value in self.teacher.state_dict().items():
            if not name.startswith(tuple(prefixes)):
                continue
            if name in s_state and s_state[name].shape == value.shape:
                s_state[name].copy_(value)
                copied.append(name)
            else:
                skipped.append(name)
        print_log(f'init_student: copied {len(copied)} teacher tensors under {list(prefixes)} '
                  f'into the student; {len(skipped)} did not match in name or shape'
                  + (f' (e.g. {skipped[:5]})' if skipped else ''), logger='current')
        return copied


def _zero_loss(modules: nn.Module, student: nn.Module) -> torch.Tensor:
    """A zero loss that still touches every trainable parameter of ``modules``."""
    zero = torch.zeros((), device=next(student.parameters()).device)
    for p in modules.parameters():
        if p.requires_grad:
            zero = zero + p.sum() * 0.
    return zero


def _resize(fs: torch.Tensor, ft: torch.Tensor, mode: str | None) -> tuple:
    if mode is None or fs.dim() != 4 or fs.shape[2:] == ft.shape[2:]:
        return fs, ft
    if mode == 'teacher_to_student':
        return fs, F.interpolate(ft, size=fs.shape[2:], mode='bilinear', align_corners=False)
    return F.interpolate(fs, size=ft.shape[2:], mode='bilinear', align_corners=False), ft


def _save_teacher_hook(module: BaseDistiller, state_dict: dict, prefix: str, local_metadata):
    if module.save_teacher and module.teacher is not None:
        for name, value in module.teacher.state_dict().items():
            state_dict[f'{prefix}teacher.{name}'] = value.detach()
    return state_dict


def _load_teacher_hook(module: BaseDistiller, state_dict: dict, prefix: str, *args) -> None:
    """Take ``teacher.*`` keys out of a loaded state dict; load them into the teacher.

    A student-only model (``skip_teacher``) has no loss modules: their keys are dropped too.
    """
    if module.skip_teacher:
        for k in [k for k in state_dict if k.startswith(prefix + 'distill_losses.')]:
            del state_dict[k]
    keys = [k for k in state_dict if k.startswith(prefix + 'teacher.')]
    teacher_state = {k[len(prefix) + len('teacher.'):]: state_dict.pop(k) for k in keys}
    if teacher_state and module.teacher is not None:
        module.teacher.load_state_dict(teacher_state, strict=True)
        print_log('loaded the teacher from the checkpoint (saved with save_teacher=True)',
                  logger='current')


__all__ = ['BaseDistiller', 'LossEntry']
