"""The runtime teacher: a frozen model (or the student's moving average) fed its own input
normalisation, run under no_grad (and autocast) only as far as its taps need, its taps
recorded."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.model import ExponentialMovingAverage
from mmengine.registry import DefaultScope, Registry
from torch import nn

from ..engine.precision import Precision, check_autocast, resolve_precision
from ..recorder import FeatureRecorder, Tap, run_to_scope, scope_of
from .ema import build_ema
from .loading import build_teacher
from .renorm import Renormalisation
from .spec import TEACHER_KEY, is_ema


class Teacher:
    """A teacher model with what running it takes.

    It is not an ``nn.Module``: a wrapper holding it does not register its parameters, so they
    stay out of the optimiser and DDP's reducer; the distiller's state-dict hooks
    (:func:`~mmdistill.teacher.save_teacher_state`) put them into training checkpoints when they
    are training state (an EMA teacher) or when asked (``save_teacher``).

    Args:
        model: the loaded, frozen teacher (:func:`build_teacher`), or ``ema.module``.
        checkpoint: the file it was loaded from (None for an EMA teacher).
        taps: ``(tap, config key)`` pairs to record.
        student_preprocessor: the student's data preprocessor, whose output the teacher gets.
        autocast: the forward's precision setting: None (fp32), ``'auto'`` (bf16 or fp16 where
            the device runs it natively, else fp32) or ``'fp16'`` / ``'bf16'`` (honoured, with a
            warning where the device emulates it). Resolved per device type
            (:func:`~mmdistill.engine.precision.resolve_precision`): at build for the device of
            the weights, again when a forward's input is on another kind of device (the model
            moved to CUDA); each choice of ``'auto'`` is logged once.
        channels_last: keep the teacher's weights and its input in channels-last memory format
            (convolutions in NHWC: oneDNN on CPUs, cuDNN tensor cores). None: on with a
            reduced precision, where it pays most (measure with
            ``tools/analysis/benchmark_step.py``).
        key: its config key, ``'model.teacher'`` or ``'model.teachers.<name>'``; its keys in
            the distiller's state dict start with that path less ``'model.'``.
        ema: the :class:`~mmengine.model.ExponentialMovingAverage` whose ``module`` is ``model``
            (:func:`build_ema`), updated by :meth:`update_average`.
    """

    def __init__(self, model: nn.Module, checkpoint: str | None, taps: list[tuple[Tap, str]],
                 student_preprocessor: nn.Module, autocast: str | None = None,
                 channels_last: bool | None = None, key: str = TEACHER_KEY,
                 ema: ExponentialMovingAverage | None = None) -> None:
        self.model = model
        self.checkpoint = checkpoint
        self.key, self.prefix = key, key[len('model.'):] + '.'
        self.ema = ema
        #: the precision of the forward on the device it last ran on (or was built on)
        self.precision: Precision | None = None
        self._said: set[str] = set()
        self.configure(autocast, channels_last)
        self.recorder = FeatureRecorder(model, taps, 'teacher')
        self.scope = scope_of(t for t, _ in taps)
        self.renorm = Renormalisation.between(student_preprocessor, model.data_preprocessor)

    @classmethod
    def build(cls, registry: Registry, cfg: dict, taps: list[tuple[Tap, str]],
              student: nn.Module, autocast: str | None = None,
              channels_last: bool | None = None, key: str = TEACHER_KEY) -> Teacher:
        """Build from ``dict(config=..., checkpoint=...)`` in ``registry``'s scope, or from
        ``dict(ema=dict(...))`` as the moving average of ``student`` (:func:`build_ema`)."""
        ema = None
        if is_ema(cfg):
            ema = build_ema(student, cfg, key)
            model = ema.module
        else:
            with DefaultScope.overwrite_default_scope(registry.scope):
                model = build_teacher(registry, cfg, key)
        return cls(model, None if ema else cfg.get('checkpoint'), taps,
                   student.data_preprocessor, autocast, channels_last, key, ema)

    def configure(self, autocast: str | None, channels_last: bool | None = None) -> None:
        """Set the forward's precision and memory format (see the class arguments) and resolve
        them for the device the weights are on."""
        check_autocast(autocast)
        self.autocast_setting, self.channels_last_setting = autocast, channels_last
        param = next(self.model.parameters(), None)
        self.resolve(param.device.type if param is not None else 'cpu')

    def resolve(self, device_type: str) -> Precision:
        """The forward's precision on ``device_type`` (kept in :attr:`precision`, with the
        weights' memory format to match); logs what ``'auto'`` chose, warns of an emulated
        explicit setting, once per teacher and message."""
        precision = resolve_precision(self.autocast_setting, device_type,
                                      self.channels_last_setting)
        self.precision, self.device_type = precision, device_type
        fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
        self.convert_tensors(lambda t: t.to(memory_format=fmt) if t.dim() in (4, 5) else t)
        message = None
        if self.autocast_setting == 'auto':
            message = (f"{self.key}: teacher_autocast='auto' on {device_type}: "
                       f'{precision.describe()} ({precision.reason})')
            level = logging.INFO
        elif precision.emulated:
            message = (f'{self.key}: teacher_autocast={self.autocast_setting!r} on '
                       f'{device_type}: {precision.reason}, likely slower than fp32 '
                       "('auto' picks what runs natively)")
            level = logging.WARNING
        if message is not None and message not in self._said:
            self._said.add(message)
            print_log(message, logger='current', level=level)
        return precision

    @property
    def autocast(self) -> str | None:
        """The reduced precision the forward runs in now (None: fp32)."""
        return self.precision.autocast

    @property
    def channels_last(self) -> bool:
        """Whether the weights and input are channels-last now."""
        return self.precision.channels_last

    @property
    def module(self) -> nn.Module:
        """The module that holds the teacher's state: the model, or the EMA around it."""
        return self.model if self.ema is None else self.ema

    def convert_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor], *args: Any,
                        **kwargs: Any) -> None:
        """Convert the teacher's tensors (and its EMA step count) with ``fn`` as
        ``nn.Module._apply`` does (device, dtype, memory format); the distiller's ``_apply``
        forwards its conversions here."""
        self.module._apply(fn, *args, **kwargs)
        if self.ema is not None:  # it averages into the tensors it listed: list the new ones
            self.ema.avg_parameters = (self.model.state_dict() if self.ema.update_buffers
                                       else dict(self.model.named_parameters()))

    @torch.no_grad()
    def update_average(self, student: nn.Module) -> None:
        """An EMA teacher: one update from ``student``'s current weights; a trained one: none."""
        if self.ema is not None:
            self.ema.update_parameters(student)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds of the teacher: its weights, or the EMA's (``steps``,
        ``module.*``)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`state_dict` gave, strictly."""
        self.module.load_state_dict(state, strict=True)

    def inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's view of the student's preprocessed ``inputs``."""
        return inputs if self.renorm is None else self.renorm(inputs)

    def __deepcopy__(self, memo: dict) -> Teacher:
        """The teacher is shared, not copied (mmengine's EMAHook deep-copies the model)."""
        return self

    def run(self, inputs: torch.Tensor, data_samples: list | None, autocast: bool = True) -> None:
        """Forward (no grad, autocast unless ``autocast=False``) as far as the taps need; the
        recorder keeps the taps. The precision follows the input's device type (resolved again
        when it changes)."""
        if inputs.device.type != self.device_type:
            self.resolve(inputs.device.type)
        dtype = self.precision.dtype if autocast else None
        context = torch.autocast(inputs.device.type, dtype=dtype, enabled=dtype is not None)
        inputs = self.inputs(inputs)
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), context:
            run_to_scope(self.model, self.scope, inputs, data_samples)

    def keep_only(self, taps: Iterable[Tap]) -> None:
        """Record only ``taps`` from now on (those the built loss entries read)."""
        self.recorder.keep_only(taps)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the teacher's parameters and buffers."""
        return sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
