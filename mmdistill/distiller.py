"""The task-independent distillation core shared by all wrappers.

``BaseDistiller`` builds the student, its teachers (:class:`~mmdistill.teacher.Teacher`: one,
several, or the student's moving average) and the loss entries (:mod:`mmdistill.entries`),
records the taps of the models with forward hooks, and adds the weighted distillation losses to
the student's own. A wrapper subclass says only what differs per task: its registry, the extra
loss inputs it can give (boxes, labels, ...), and dummy data samples for the build-time dry run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub, print_log
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope, Registry
from torch import nn

from .analysis import grad_norm, sum_losses
from .auto_weight import AutoWeight
from .entries import (LossEntry, build_loss_modules, check_entry, check_finite_teacher,
                      parse_entry, resize_pair, resolve_teacher_name, zero_loss)
from .nonfinite import NonFiniteGuard, all_finite, describe
from .recorder import FeatureRecorder, Tap, run_recorded, run_to_scope, scope_of
from .teacher import (Teacher, check_autocast, inherit_weights, is_ema, load_teacher_state,
                      save_teacher_state, teacher_specs)


class BaseDistiller(BaseModel):
    """Train ``student`` with its own losses plus weighted distillation losses from its teachers.

    Args:
        student: config of the student model (any model of the wrapper's library).
        teacher: ``dict(config=<path | 'pkg::path' | dict>, checkpoint=<path>)``: a trained,
            frozen teacher; or ``dict(ema=dict(momentum=0.0002, interval=1,
            update_buffers=False))``: self-distillation from the exponential moving average of
            the student (mmengine's ``ExponentialMovingAverage``: ``avg = (1 - momentum) * avg
            + momentum * student``), updated at the start of every training-mode :meth:`loss`.
        teachers: ``{name: <a teacher spec as above>}``, in place of ``teacher``: several
            teachers, each with its own normalisation, recorder and taps; every loss entry
            names its own with ``teacher_name=<name>`` (may be left out with one teacher).
        distill_losses: ``{name: dict(type=..., student=tap(s), teacher=tap(s),
            teacher_name=None, loss_weight=1.0, resize=None, weight_schedule=None,
            auto_weight=None, **hyperparameters)}``; logged as ``loss_<name>``. A tap that
            yields several tensors (``'neck'``: all FPN levels) or a list of taps gives one loss
            module per level, summed. ``weight_schedule``: see
            :class:`~mmdistill.schedule.WeightSchedule`. ``auto_weight=dict(share=0.25,
            iters=20)``: a multiplier measured on the first training iterations so that the
            entry's gradient is ``share`` times the task's (:mod:`mmdistill.auto_weight`).
        init_student: copy the teacher's parameters under ``init_student_prefixes`` (or the
            given prefixes) into the student where names and shapes match (one trained teacher).
        teacher_autocast: None (full precision), 'auto' (what the device runs natively) or
            'fp16' / 'bf16' for the teachers' forward (see :class:`Teacher`).
        teacher_channels_last: the teachers' weights and input in channels-last memory format;
            None (default): on with a reduced precision (see :class:`Teacher`).
        student_channels_last: the student's weights in channels-last memory format (its
            convolutions then run in NHWC; ``tools/train.py --amp`` sets it with bf16 on CPUs).
        save_teacher: write the trained teachers' weights into training checkpoints (an EMA
            teacher is always written: it is training state).
        skip_teacher: build the student only (testing, export); no distillation loss runs.
        non_finite: what a training step with a NaN or infinite loss does, before backward:
            'stop' (default: an error naming the entry, level and input) or
            ``dict(action='skip', max_in_a_row=5)`` (:mod:`mmdistill.nonfinite`).
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
    #: (H, W) of the build-time dry-run input when the config gives none.
    default_dry_run_shape: tuple[int, int] = (128, 128)

    def __init__(self, student: dict, teacher: dict | None = None, teachers: dict | None = None,
                 distill_losses: dict | None = None, init_student: bool | list[str] = False,
                 teacher_autocast: str | None = None,
                 teacher_channels_last: bool | None = None, student_channels_last: bool = False,
                 save_teacher: bool = False, skip_teacher: bool = False,
                 non_finite: str | dict | None = None,
                 dry_run_shape: tuple[int, int] | None = None,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        student = ConfigDict(student)
        if data_preprocessor is not None:  # the Runner passes a top-level data_preprocessor
            student.setdefault('data_preprocessor', data_preprocessor)
        with DefaultScope.overwrite_default_scope(self.registry.scope):
            self.student = self.registry.build(student)
        self.data_preprocessor = self.student.data_preprocessor
        if student_channels_last:
            self.student.to(memory_format=torch.channels_last)
        check_autocast(teacher_autocast)
        self.teacher_autocast, self.save_teacher = teacher_autocast, save_teacher
        self.skip_teacher, self.init_student = skip_teacher, init_student
        self.non_finite = NonFiniteGuard.build(non_finite)
        #: this step's loss of every level of every entry (before weighting), for the report
        #: of a non-finite step
        self._level_losses: dict[str, list[torch.Tensor]] = {}
        self.entries: list[LossEntry] = []
        self.distill_losses = nn.ModuleDict()
        #: the measured weights of the entries with ``auto_weight`` (buffers: in checkpoints)
        self.auto_weights = nn.ModuleDict()
        #: the teachers by name (``'teacher'`` for ``model.teacher``); not submodules
        self.teachers: dict[str, Teacher] = {}
        #: called in every :meth:`loss` with the student's losses and the weighted distillation
        #: losses, before they are summed (e.g. DistillBalanceHook's measurement)
        self.loss_observers: list[Callable[[dict, dict], None]] = []
        self._register_state_dict_hook(save_teacher_state)
        self._register_load_state_dict_pre_hook(load_teacher_state, with_module=True)
        if skip_teacher:
            return
        specs = teacher_specs(teacher, teachers)
        self.entries = [parse_entry(name, cfg) for name, cfg in (distill_losses or {}).items()]
        for entry in self.entries:
            resolve_teacher_name(entry, list(specs))
            if entry.auto_weight is not None:
                self.auto_weights[entry.name] = AutoWeight(
                    **entry.auto_weight, key=entry.key, base_weight=entry.weight)
        if init_student and (len(specs) > 1 or is_ema(next(iter(specs.values()))[1])):
            raise ValueError('model.init_student copies the weights of one trained teacher '
                             '(model.teacher=dict(config=..., checkpoint=...))')
        # the teachers before the student's hooks: an EMA teacher's copy would take them along
        for name, (key, spec) in specs.items():
            taps = [(t, e.key + '.teacher') for e in self.entries if e.teacher_name == name
                    for t in e.teacher_taps]
            self.teachers[name] = Teacher.build(
                self.registry, spec, taps, self.student, teacher_autocast, teacher_channels_last,
                key)
        needed = {x for e in self.entries for x in e.extra_inputs}
        self._extra_taps = {name: Tap.parse(tap) for name, tap in self.extra_taps
                            if name in needed}
        student_taps = [(t, e.key + '.student') for e in self.entries for t in e.student_taps]
        self._student_rec = FeatureRecorder(
            self.student, student_taps + [(t, f'extra input {name!r}')
                                          for name, t in self._extra_taps.items()], 'student')
        self._student_scope = scope_of(t for t, _ in student_taps)
        self._dry_run(dry_run_shape or self.default_dry_run_shape)

    @property
    def teacher(self) -> Teacher | None:
        """The only teacher (None with ``skip_teacher``); with several, see ``teachers``."""
        if len(self.teachers) > 1:
            raise RuntimeError(f'this distiller has several teachers '
                               f'{list(self.teachers)}: use teachers[name]')
        return next(iter(self.teachers.values()), None)

    def teacher_of(self, entry: LossEntry) -> Teacher:
        """The teacher a loss entry distils from."""
        return self.teachers[entry.teacher_name]

    @contextmanager
    def _recording(self, teachers: Iterable[Teacher]) -> Iterator[None]:
        """Record the student's taps and those of ``teachers`` during the block."""
        with ExitStack() as stack:
            for recorder in [self._student_rec] + [t.recorder for t in teachers]:
                stack.enter_context(recorder.recording())
            yield

    # ------------------------------------------------------------------ build
    @torch.no_grad()
    def _dry_run(self, shape: tuple[int, int]) -> None:
        """Run the models once on a dummy batch; build and check every entry's loss modules
        against its own teacher's taps."""
        inputs = torch.zeros(1, 3, *shape)
        samples = self._dummy_data_samples(inputs)
        was_training = self.student.training
        self.student.eval()
        wrapper = type(self).__name__
        try:
            with self._recording(self.teachers.values()):
                def run() -> None:
                    run_to_scope(self.student, self._student_scope, inputs, samples)
                    for teacher in self.teachers.values():
                        teacher.run(inputs, samples, autocast=False)  # as before: fp32

                copied = run_recorded([self._student_rec] + [
                    t.recorder for t in self.teachers.values()], run)
                if copied:
                    print_log(f'{wrapper}: the models change the outputs of taps {copied} in '
                              'place after they are recorded; recording copies of them',
                              logger='current')
                feats = {entry.name: self._entry_feats(entry) for entry in self.entries}
                for entry in self.entries:
                    models = dict(student=self.student, teacher=self.teacher_of(entry).model)
                    self.distill_losses[entry.name] = build_loss_modules(
                        entry, *feats[entry.name], self.logit_layers, models)
                for entry in self.entries:
                    check_entry(entry, self.distill_losses[entry.name], *feats[entry.name],
                                self.provided_inputs, wrapper)
                for name, teacher in self.teachers.items():
                    teacher.keep_only(t for e in self.entries if e.teacher_name == name
                                      for t in e.teacher_taps)
            self._check_fp16_teachers(shape, samples)
        finally:
            self.student.train(was_training)

    def _check_fp16_teachers(self, shape: tuple[int, int], samples: list | None) -> None:
        """Teachers run in fp16 autocast: their taps stay finite on an image-like random input
        (standard normal, as normalised images; a fixed generator, the global RNG untouched)."""
        fp16 = [t for t in self.teachers.values() if t.autocast == 'fp16']
        if not fp16:
            return
        inputs = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
        with self._recording(fp16):
            for teacher in fp16:
                teacher.run(inputs, samples)
            for entry in self.entries:
                if self.teacher_of(entry) in fp16:
                    check_finite_teacher(entry, self._teacher_feats(entry), 'fp16')

    def _entry_feats(self, entry: LossEntry) -> tuple[list, list]:
        """This step's student and teacher tensors of an entry, one per level."""
        return ([f for t in entry.student_taps
                 for f in self._student_rec.get(t, entry.key + '.student')],
                self._teacher_feats(entry))

    def _teacher_feats(self, entry: LossEntry) -> list:
        """This step's teacher tensors of an entry, one per level."""
        recorder = self.teacher_of(entry).recorder
        return [f for t in entry.teacher_taps for f in recorder.get(t, entry.key + '.teacher')]

    # ------------------------------------------------------------------ run
    def compute_distill_losses(self, data_samples: list | None,
                               factors: list[float] | None = None,
                               task_losses: dict | None = None) -> dict[str, torch.Tensor]:
        """Weighted distillation losses from this step's records, ``{'loss_<name>': value}``.

        ``factors`` (one per entry, default 1) multiply the weights; an entry at 0 is not
        computed (its learnable parts get zero gradients, so DDP sees every parameter used).
        ``task_losses`` (the student's own, in training) let an ``auto_weight`` entry measure.
        """
        extras: dict[str, Any] = {}
        losses = {}
        self._level_losses = {}
        task_norm: list[float] = []  # measured once a step, for the first entry that needs it
        device = next(self.student.parameters()).device
        for entry, factor in zip(self.entries, factors or [1.0] * len(self.entries)):
            modules = self.distill_losses[entry.name]
            if factor == 0:
                losses[f'loss_{entry.name}'] = zero_loss(modules, device)
                continue
            feats_s, feats_t = self._entry_feats(entry)
            for name in entry.extra_inputs:
                if name not in extras:
                    extras[name] = self._extra_inputs(name, data_samples)
            kwargs = {name: extras[name] for name in entry.extra_inputs}
            pairs = ([(feats_s, feats_t[0] if len(feats_t) == 1 else feats_t)]
                     if entry.all_levels else list(zip(feats_s, feats_t)))
            total, levels = 0., []
            for module, (fs, ft) in zip(modules, pairs):
                if not entry.all_levels:
                    fs, ft = resize_pair(fs, ft, entry.resize)
                ft = ft.detach() if isinstance(ft, torch.Tensor) else [f.detach() for f in ft]
                with self.teacher_of(entry).recorder.paused():  # a loss may run teacher modules
                    levels.append(module(fs, ft, **kwargs))
                total = total + levels[-1]
            self._level_losses[entry.name] = levels
            weight = entry.weight * factor
            if entry.name in self.auto_weights:  # measured on the loss as configured
                weight *= self._auto_weight(entry.name, total * entry.weight, task_losses,
                                            task_norm)
            losses[f'loss_{entry.name}'] = total * weight
        return losses

    def _auto_weight(self, name: str, loss: torch.Tensor, task_losses: dict | None,
                     task_norm: list[float]) -> float:
        """The measured weight of entry ``name``, updated first while it measures; logged."""
        auto = self.auto_weights[name]
        if auto.measuring and task_losses is not None and self.training:
            params = [p for p in self.student.parameters() if p.requires_grad]
            if not task_norm:
                task_norm.append(grad_norm(sum_losses(task_losses), params))
            auto.update(task_norm[0], grad_norm(loss, params))
        weight = float(auto.weight)
        if self.training:
            MessageHub.get_current_instance().update_scalar(f'train/auto_weight_{name}', weight)
        return weight

    def loss(self, inputs: torch.Tensor, data_samples: list | None = None) -> dict:
        """The student's losses plus ``loss_<name>`` for every distillation entry.

        In training mode an EMA teacher first takes one update from the student's current
        weights (:meth:`~mmdistill.teacher.Teacher.update_average`): the weights after step k
        enter the average right before step k+1's teacher forward (the first update copies the
        student as initialised). Updating here, not in ``train_step`` or a hook, holds under
        ``MMDistributedDataParallel`` (whose ``train_step`` calls ``forward``, not the module's
        ``train_step``) and with any runner; a run resumed after step k makes the same update
        at step k+1, so it continues exactly. One update per ``loss`` call, as mmengine's
        ``EMAHook`` makes one per iteration; with gradient accumulation over N batches set
        ``ema.interval=N`` for one update per optimizer step.
        """
        if self.skip_teacher:
            return self.student.loss(inputs, data_samples)
        if self.training:
            for teacher in self.teachers.values():
                teacher.update_average(self.student)
        factors = [entry.factor() for entry in self.entries]
        active = {e.teacher_name for e, f in zip(self.entries, factors) if f}
        with self._recording(self.teachers.values()):
            for name, teacher in self.teachers.items():
                if name in active:  # a teacher whose entries all stopped (or none) need not run
                    teacher.run(inputs, data_samples)
            losses = self.student.loss(inputs, data_samples)
            distill = self.compute_distill_losses(data_samples, factors, losses)
            if self.training:
                self.non_finite.check({**losses, **distill},
                                      lambda: self._non_finite_report(losses, distill))
        clash = set(losses) & set(distill)
        if clash:
            raise KeyError(f'distillation loss names {sorted(clash)} clash with the student\'s')
        for observe in self.loss_observers:
            observe(losses, distill)
        losses.update(distill)
        return losses

    def _non_finite_report(self, task_losses: dict, distill: dict) -> list[str]:
        """Where this step's non-finite values are: each non-finite task loss, and per entry
        and level the loss and whether the teacher's or the student's tapped tensor is."""
        lines = [f"the student's own {name} is {describe(value)}"
                 for name, value in task_losses.items() if not all_finite([value])]
        for entry in self.entries:
            levels = self._level_losses.get(entry.name, [])
            feats_s, feats_t = self._entry_feats(entry)
            if entry.all_levels:
                feats_s, feats_t = [feats_s], [feats_t]
            for level, value in enumerate(levels):
                if all_finite([value]):
                    continue
                at = f' level {level} of {len(levels)}' if len(levels) > 1 else ''
                taps = f"student {[str(t) for t in entry.student_taps]}, teacher " \
                       f"{[str(t) for t in entry.teacher_taps]}"
                if not all_finite([feats_t[level]]):
                    cause = f"the teacher's tapped tensor is {describe(feats_t[level])}"
                    if self.teacher_of(entry).autocast == 'fp16':
                        cause += " (the teacher runs in fp16: try teacher_autocast='bf16')"
                elif not all_finite([feats_s[level]]):
                    cause = f"the student's tapped tensor is {describe(feats_s[level])}"
                else:
                    cause = 'its inputs are finite: the loss itself is not'
                lines.append(f'loss_{entry.name} ({entry.key},{at} taps {taps}) is '
                             f'{describe(value)}: {cause}')
            weighted = distill.get(f'loss_{entry.name}')
            if levels and all_finite(levels) and not all_finite([weighted]):
                lines.append(f'loss_{entry.name} ({entry.key}) is {describe(weighted)} only '
                             f'after weighting (loss_weight {entry.weight})')
        return lines or ['(no single loss is non-finite: their sum overflows)']

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

    def __getattr__(self, name: str) -> Any:
        """The student's attribute where the wrapper has none: the hooks of the libraries'
        own configs reach into ``runner.model`` (mmdet's ``YOLOXModeSwitchHook`` sets
        ``model.bbox_head.use_l1``; mmpretrain's ``SetAdaptiveMarginsHook`` calls
        ``model.head.set_margins``), and reach the student's."""
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules
        except AttributeError:
            student = self.__dict__.get('_modules', {}).get('student')
            if student is None or name.startswith('__'):
                raise
            try:
                return getattr(student, name)
            except AttributeError:
                raise AttributeError(f"'{type(self).__name__}' object (and its student "
                                     f"{type(student).__name__}) has no attribute "
                                     f"'{name}'") from None

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
        for teacher in self.teachers.values():
            teacher.model.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for teacher in getattr(self, 'teachers', {}).values():
            teacher.convert_tensors(fn, *args, **kwargs)
        return self

    def init_weights(self) -> None:
        """Initialise the student (and loss modules), then inherit teacher weights if asked."""
        super().init_weights()
        if self.init_student and self.teacher is not None:
            prefixes = (self.init_student if isinstance(self.init_student, (list, tuple))
                        else self.init_student_prefixes)
            self.inherit_from_teacher(prefixes)

    def inherit_from_teacher(self, prefixes: tuple[str, ...] | list[str]) -> list[str]:
        """Copy teacher parameters under ``prefixes`` into the student where shapes match."""
        return inherit_weights(self.teacher.model, self.student, prefixes)


def distiller_of(model: nn.Module) -> BaseDistiller | None:
    """The distiller a runner trains (unwrapping DDP), or None for any other model."""
    model = getattr(model, 'module', model)
    return model if isinstance(model, BaseDistiller) else None


__all__ = ['BaseDistiller', 'LossEntry', 'distiller_of']
